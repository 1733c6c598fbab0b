//! The per-VM start lock: an exclusive flock on `<state>/<name>/lock`, taken
//! by `start` and inherited by QEMU across exec, so it is held exactly as long
//! as the VM's QEMU lives. A second `start` cannot take it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("another start of this VM holds {path} (starting, or its QEMU is running)")]
    Busy { path: PathBuf },
}

pub struct StartLock {
    file: File,
}

impl StartLock {
    pub fn acquire(path: &Path) -> Result<StartLock, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_owned(),
                source,
            })?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Busy {
                    path: path.to_owned(),
                });
            }
            return Err(LockError::Open {
                path: path.to_owned(),
                source: e,
            });
        }
        Ok(StartLock { file })
    }

    /// Let the lock's fd survive exec, so QEMU holds it.
    pub fn inherit_across_exec(&self) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: valid fd; clearing FD_CLOEXEC only.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Whether some process holds the lock (without taking it for long).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // SAFETY: valid fd; a shared, non-blocking probe released on close.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}
