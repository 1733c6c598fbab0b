pub mod build;
pub mod cleanup;
pub mod start;
pub mod status;
pub mod stop;
