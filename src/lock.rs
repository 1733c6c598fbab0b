//! The per-VM start lock: an exclusive flock on `<state>/<name>/lock`, taken
//! by `start` and inherited by QEMU across exec, so it is held exactly as long
//! as the VM's QEMU lives. A second `start` cannot take it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("another start of this VM holds {path} (starting, or its QEMU is running)")]
    Busy { path: PathBuf },
}

/// Held until dropped (nix's `Flock` unlocks on drop) or, after
/// `inherit_across_exec` and exec, for as long as the exec'd program lives.
pub struct StartLock {
    file: Flock<File>,
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
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(StartLock { file }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Busy {
                path: path.to_owned(),
            }),
            Err((_, e)) => Err(LockError::Open {
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }

    /// Let the lock's fd survive exec, so QEMU holds it.
    pub fn inherit_across_exec(&self) -> io::Result<()> {
        let fd: &File = &self.file;
        let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
        fcntl(fd, FcntlArg::F_SETFD(flags - FdFlag::FD_CLOEXEC))?;
        Ok(())
    }
}

/// Whether some process holds the lock (without taking it for long).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    // A shared, non-blocking probe, released when the Flock drops.
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(l: &StartLock) -> bool {
        let fd: &File = &l.file;
        FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD).unwrap()).contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn exclusive_then_busy_then_free_again() {
        let dir = std::env::temp_dir().join(format!("mcp-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lock");
        assert!(!is_held(&p));
        let l = StartLock::acquire(&p).unwrap();
        assert!(is_held(&p));
        assert!(matches!(
            StartLock::acquire(&p),
            Err(LockError::Busy { .. })
        ));
        assert!(cloexec(&l), "std opens with O_CLOEXEC");
        l.inherit_across_exec().unwrap();
        assert!(!cloexec(&l), "FD_CLOEXEC still set");
        drop(l);
        assert!(!is_held(&p));
        StartLock::acquire(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn fd_in_exec_child(l: &StartLock) -> String {
        use std::os::fd::AsRawFd;
        let fd = l.file.as_raw_fd();
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("readlink /proc/self/fd/{fd} || true")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn lock_fd_reaches_an_exec_d_program_only_when_inherited() {
        // flock belongs to the open file description, so the exec'd program
        // (QEMU) holds the lock through the inherited fd.
        let dir = std::env::temp_dir().join(format!("mcp-lock-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("lock");
        let l = StartLock::acquire(&p).unwrap();
        assert_eq!(fd_in_exec_child(&l), "");
        l.inherit_across_exec().unwrap();
        assert_eq!(fd_in_exec_child(&l), p.display().to_string());
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
