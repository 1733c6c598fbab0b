//! mcp-unikernel: run Nanos unikernels as systemd services.
//!
//! One module per job: `config` (schema and validation), `derive` (TAP name,
//! MAC), `paths`, `staging` + `inputs` (volume staging and input hashing),
//! `digests` (remembered digests of large read-only inputs), `opsconfig` +
//! `image` (image builds), `cpio` (Linux stand-in initramfs),
//! `tap` (TAP devices; bridge ports over rtnetlink), `qemu` (command line), `qmp` (peer-checked QMP),
//! `procinfo` + `launch` (PID validation), `lock`, `privs`, and `commands`.

pub mod commands;
pub mod config;
pub mod cpio;
pub mod derive;
pub mod digests;
pub mod image;
pub mod inputs;
pub mod launch;
pub mod lock;
pub mod opsconfig;
pub mod paths;
pub mod privs;
pub mod procinfo;
pub mod qemu;
pub mod qmp;
pub mod staging;
pub mod tap;
