//! Where a VM's files live: its state dir (staging tree, ops home, last good
//! image, start lock) and its runtime dir (QMP socket, pidfile, launch record).

use std::io;
use std::path::{Path, PathBuf};

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
    pub fn absolute(config_dir: &Path, state_dir: &Path, runtime_dir: &Path) -> io::Result<Roots> {
        Ok(Roots {
            config_dir: std::path::absolute(config_dir)?,
            state_dir: std::path::absolute(state_dir)?,
            runtime_dir: std::path::absolute(runtime_dir)?,
        })
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
    pub fn ops_home(&self) -> PathBuf {
        self.state.join("ops-home")
    }
    /// The last good image dir: `disk.img` (or `initrd.img` for the Linux
    /// stand-in) plus `inputs.hash`, swapped in as a whole.
    pub fn image_dir(&self) -> PathBuf {
        self.state.join("image")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.runtime.join("qmp.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.runtime.join("qemu.pid")
    }
    pub fn launch_record(&self) -> PathBuf {
        self.runtime.join("launch.json")
    }
}
