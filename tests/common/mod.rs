//! Shared test harness: network namespaces and child guards (`netns`),
//! driving the helper with real guests (`vm`), and a real systemd in a
//! systemd-nspawn container (`container`, used by tests/systemd_units.rs;
//! `tier` sets one up for tests/systemd_ready.rs).
#![allow(dead_code)]

pub mod container;
pub mod netns;
pub mod nix;
pub mod opsimage;
pub mod tier;
pub mod vm;
