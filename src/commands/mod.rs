pub mod build;
pub mod cleanup;
pub mod purge;
pub mod credcheck;
pub mod ready;
pub mod start;
pub mod status;
pub mod stop;
