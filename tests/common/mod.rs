//! Shared test harness: network namespaces and child guards (`netns`), and
//! driving the helper with real guests (`vm`).
#![allow(dead_code)]

pub mod netns;
pub mod opsimage;
pub mod vm;
