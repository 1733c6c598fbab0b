pub mod build;
pub mod cleanup;
pub mod credcheck;
pub mod purge;
pub mod ready;
pub mod start;
pub mod status;
pub mod stop;
