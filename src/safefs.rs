//! File operations for a root process next to directories other users own.
//!
//! - `ensure_dir`: create a directory only when it is missing; an existing
//!   one is used as it is (systemd's StateDirectory/RuntimeDirectory made it
//!   with the unit's mode; under ProtectSystem=strict its parent is read-only)
//!   after checking it is a real directory, owned by us, not writable by others.
//! - `fresh_owned_dir`: a directory handed to an unprivileged uid, recreated
//!   empty (whatever that uid left there is removed without following links).
//! - `write_private`: a root-owned file written in a root-owned dir with
//!   O_CREAT|O_EXCL|O_NOFOLLOW on a temporary name, then renamed.
//! - `read_untrusted`: a bounded read of a file in a directory another uid
//!   controls: never follows a symlink, never blocks on a FIFO, regular
//!   files only.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum SafeFsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {reason}; refusing to use it")]
    Unsafe { path: PathBuf, reason: String },
}

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SafeFsError + 'a {
    move |source| SafeFsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn errno_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> SafeFsError + 'a {
    move |e| SafeFsError::Io {
        op,
        path: path.to_owned(),
        source: io::Error::from(e),
    }
}

/// Create `p` (and missing parents) with `mode` when it does not exist; an
/// existing `p` is never chmod-ed, only checked: a directory (not a
/// symlink), owned by the effective uid, not writable by group or others.
pub fn ensure_dir(p: &Path, mode: u32) -> Result<(), SafeFsError> {
    match fs::symlink_metadata(p) {
        Ok(_) => check_own_dir(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = p.parent() {
                if !parent.as_os_str().is_empty() && !parent.exists() {
                    ensure_dir(parent, 0o755)?;
                }
            }
            match fs::DirBuilder::new().mode(mode).create(p) {
                Ok(()) => {}
                // Made by a concurrent start in the meantime.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_at("creating", p)(e)),
            }
            // The umask may have narrowed it; this is our own new dir.
            fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(io_at("setting the mode of", p))?;
            check_own_dir(p)
        }
        Err(e) => Err(io_at("inspecting", p)(e)),
    }
}

fn check_own_dir(p: &Path) -> Result<(), SafeFsError> {
    let m = fs::symlink_metadata(p).map_err(io_at("inspecting", p))?;
    let unsafe_because = |reason: String| SafeFsError::Unsafe {
        path: p.to_owned(),
        reason,
    };
    if !m.file_type().is_dir() {
        return Err(unsafe_because("not a directory (or a symlink)".into()));
    }
    let me = Uid::effective().as_raw();
    if m.uid() != me {
        return Err(unsafe_because(format!(
            "owned by uid {}, not by uid {me}",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_because(format!(
            "writable by group or others (mode {:o})",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Open a directory without following a symlink at its last component.
pub fn open_dir(p: &Path) -> Result<OwnedFd, SafeFsError> {
    nix::fcntl::open(
        p,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(errno_at("opening", p))
}

/// `parent/name` recreated empty, mode 0700, owned by uid:gid. `parent` must
/// be one of our own root-owned dirs.
pub fn fresh_owned_dir(
    parent: &Path,
    name: &str,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, SafeFsError> {
    let p = parent.join(name);
    match fs::remove_dir_all(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // A file or symlink of that name: remove_dir_all does not follow it.
        Err(_) => fs::remove_file(&p).map_err(io_at("removing", &p))?,
    }
    let dir = open_dir(parent)?;
    nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o700))
        .map_err(errno_at("creating", &p))?;
    let fd = openat(
        &dir,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(errno_at("opening", &p))?;
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(errno_at("chown", &p))?;
    Ok(p)
}

/// Write a root-owned file `dir/name` (mode `mode`) without following any
/// symlink and without ever writing through an existing file.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), SafeFsError> {
    let target = dir.join(name);
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let dfd = open_dir(dir)?;
    let _ = nix::unistd::unlinkat(&dfd, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = openat(
        &dfd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(errno_at("creating", &target))?;
    // The exact mode, whatever the umask (0077 in the units).
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
        .map_err(errno_at("chmod", &target))?;
    // No fsync: what is written here (the launch record in /run, a build's
    // ops config in its scratch dir) does not outlive a crash of the host.
    File::from(fd)
        .write_all(bytes)
        .map_err(io_at("writing", &target))?;
    nix::fcntl::renameat(&dfd, tmp.as_str(), &dfd, name).map_err(errno_at("renaming into", &target))
}

/// Read at most `max` bytes of `dir/name`, where another uid may control
/// `dir`. Returns None when the file does not exist.
pub fn read_untrusted(dir: &Path, name: &str, max: usize) -> Result<Option<Vec<u8>>, SafeFsError> {
    let path = dir.join(name);
    let dfd = match open_dir(dir) {
        Ok(fd) => fd,
        Err(SafeFsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let fd = match openat(
        &dfd,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ELOOP) => {
            return Err(SafeFsError::Unsafe {
                path,
                reason: "is a symlink".into(),
            })
        }
        Err(e) => return Err(errno_at("opening", &path)(e)),
    };
    let st = fstat(fd.as_fd()).map_err(errno_at("inspecting", &path))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(SafeFsError::Unsafe {
            path,
            reason: "is not a regular file".into(),
        });
    }
    let mut buf = Vec::new();
    File::from(fd)
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_at("reading", &path))?;
    if buf.len() > max {
        return Err(SafeFsError::Unsafe {
            path,
            reason: format!("is larger than {max} bytes"),
        });
    }
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-safefs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn untrusted_reads_refuse_symlinks_and_fifos() {
        let d = tmp("read");
        fs::write(d.join("pid"), "123\n").unwrap();
        assert_eq!(read_untrusted(&d, "pid", 32).unwrap().unwrap(), b"123\n");
        assert!(read_untrusted(&d, "missing", 32).unwrap().is_none());
        symlink(d.join("pid"), d.join("link")).unwrap();
        assert!(read_untrusted(&d, "link", 32)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_untrusted(&d, "fifo", 32).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        fs::write(d.join("big"), vec![b'1'; 100]).unwrap();
        assert!(read_untrusted(&d, "big", 32).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn private_writes_never_follow_a_planted_symlink() {
        let d = tmp("write");
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        symlink(&victim, d.join("launch.json")).unwrap();
        write_private(&d, "launch.json", b"{}", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(d.join("launch.json")).unwrap(), "{}");
        assert!(!fs::symlink_metadata(d.join("launch.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ensure_dir_never_changes_an_existing_dir() {
        let d = tmp("ensure");
        let existing = d.join("state");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o711)).unwrap();
        ensure_dir(&existing, 0o755).unwrap();
        assert_eq!(fs::metadata(&existing).unwrap().mode() & 0o7777, 0o711);
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ensure_dir(&existing, 0o755)
            .unwrap_err()
            .to_string()
            .contains("writable"));
        let new = d.join("a/b");
        ensure_dir(&new, 0o711).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o7777, 0o711);
        symlink(&new, d.join("ln")).unwrap();
        assert!(ensure_dir(&d.join("ln"), 0o711).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
