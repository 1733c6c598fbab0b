//! Where a VM's files live. Root-owned: the state dir (start lock, staging
//! tree, last good image, digest cache) and the runtime dir (launch record).
//! Owned by the VM's QEMU uid: only `<runtime>/<name>/vm/` (QMP socket,
//! pidfile, QEMU's temporary snapshot overlay). Root trusts nothing it reads
//! from `vm/` (see docs/security.md).

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("making --config-dir/--state-dir/--runtime-dir absolute: {0}")]
    Absolute(io::Error),
    #[error("{flag} {path}: {reason}")]
    Bad {
        flag: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct Roots {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Roots {
    /// Roots made absolute against the current directory: `ops` runs with
    /// its cwd in the staging tree and QEMU's argv is matched against these
    /// dirs when a PID is validated, so a relative root would point elsewhere.
    /// The state and runtime dirs end up in QEMU's argv, so control
    /// characters are refused (commas are escaped where QEMU parses options).
    pub fn absolute(
        config_dir: &Path,
        state_dir: &Path,
        runtime_dir: &Path,
    ) -> Result<Roots, RootsError> {
        let abs = |p: &Path| std::path::absolute(p).map_err(RootsError::Absolute);
        let roots = Roots {
            config_dir: abs(config_dir)?,
            state_dir: abs(state_dir)?,
            runtime_dir: abs(runtime_dir)?,
        };
        for (flag, p) in [
            ("--state-dir", &roots.state_dir),
            ("--runtime-dir", &roots.runtime_dir),
        ] {
            if p.to_string_lossy().chars().any(|c| c.is_control()) || p.to_str().is_none() {
                return Err(RootsError::Bad {
                    flag,
                    path: p.clone(),
                    reason: "must be valid UTF-8 without control characters",
                });
            }
        }
        Ok(roots)
    }
}

#[derive(Debug, Clone)]
pub struct VmPaths {
    pub state: PathBuf,
    pub runtime: PathBuf,
}

impl VmPaths {
    pub fn new(roots: &Roots, name: &str) -> Self {
        VmPaths {
            state: roots.state_dir.join(name),
            runtime: roots.runtime_dir.join(name),
        }
    }
    /// Held (flock) by `start` and inherited by QEMU for its whole life.
    pub fn lock(&self) -> PathBuf {
        self.state.join("lock")
    }
    /// The staged tree of the last good build (mirrors guest paths).
    pub fn staging(&self) -> PathBuf {
        self.state.join("staging")
    }
    /// Scratch prefix for a staging or image build in progress.
    pub fn scratch(&self, what: &str) -> PathBuf {
        self.state
            .join(format!("{what}.tmp-{}", std::process::id()))
    }
    /// Remembered digests of the large read-only inputs (src/digests.rs).
    pub fn input_digests(&self) -> PathBuf {
        self.state.join("input-digests.json")
    }
    /// ops's home for builds that download the Nanos kernel (no `nanos_dir`):
    /// kept between builds, owned by the VM's uid.
    pub fn ops_cache(&self) -> PathBuf {
        self.state.join("ops-home")
    }
    /// The last good image dir: `disk.img` (or `initrd.img` for the Linux
    /// stand-in) plus `inputs.hash`, swapped in as a whole.
    pub fn image_dir(&self) -> PathBuf {
        self.state.join("image")
    }
    /// Root-owned record of the running QEMU (PID, start time, uid, TAP).
    pub fn launch_record(&self) -> PathBuf {
        self.runtime.join("launch.json")
    }
    /// The only runtime dir QEMU (the VM's uid) can write.
    pub fn vm_dir(&self) -> PathBuf {
        self.runtime.join("vm")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.vm_dir().join("qmp.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.vm_dir().join("qemu.pid")
    }
}
