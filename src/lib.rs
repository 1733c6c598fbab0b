//! mcp-unikernel: run Nanos unikernels as systemd services.
//!
//! One module per job: `config` (schema and validation), `derive` (TAP name,
//! MAC), `paths`, `safefs` (root next to other users' dirs), `staging` +
//! `inputs` (volume staging and input hashing), `digests` (remembered
//! digests of large read-only inputs), `elfdeps` + `progstage` (the program
//! and its libraries, found without executing it), `opsconfig` + `opsbuild`
//! (the unprivileged `ops build`), `image` (cached builds), `standin` + `cpio`
//! (Linux stand-in initramfs), `tap` (TAP devices; bridge ports over
//! rtnetlink), `qemu` (command line), `qmp` (peer-checked QMP),
//! `procinfo` + `launch` (PID validation), `lock`, `privs`, `probe` +
//! `health` (readiness and health probes, their records), `credentials`
//! (systemd credentials baked into the image), and `commands`.

pub mod commands;
pub mod config;
pub mod cpio;
pub mod credentials;
pub mod derive;
pub mod digests;
pub mod elfdeps;
pub mod guestfiles;
pub mod health;
pub mod image;
pub mod inputs;
pub mod launch;
pub mod lock;
pub mod opsbuild;
pub mod opsconfig;
pub mod paths;
pub mod privs;
pub mod probe;
pub mod procinfo;
pub mod progstage;
pub mod qemu;
pub mod qmp;
pub mod safefs;
pub mod staging;
pub mod standin;
pub mod tap;
