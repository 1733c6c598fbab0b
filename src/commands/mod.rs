pub mod build;
pub mod cleanup;
pub mod purge;
pub mod start;
pub mod status;
pub mod stop;
