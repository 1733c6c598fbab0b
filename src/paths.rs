//! Where a VM's files live: its state dir (staging tree, ops home, last good
//! image, start lock) and its runtime dir (QMP socket, pidfile, launch record).

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Roots {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
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
