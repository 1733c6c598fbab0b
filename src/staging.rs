//! Staging: copy each volume's host dir into a tree that mirrors guest paths,
//! hashing exactly what is copied. The same walk without a destination gives
//! the hash used for the "nothing changed" check.
//!
//! A volume dir usually belongs to an unprivileged account, and its owner
//! may change the tree while root walks it (swap an entry for a symlink, a
//! FIFO or a device with rename(2), in a loop). So nothing is ever opened by
//! a path that could lead somewhere else:
//! - the volume root is opened with openat2(RESOLVE_NO_SYMLINKS): a source
//!   path with a symlink in any component is refused (`volumes[i].source`);
//! - every entry is examined relative to its parent dir's fd (fstatat with
//!   AT_SYMLINK_NOFOLLOW) and opened relative to it with O_NOFOLLOW: dirs
//!   with O_DIRECTORY, files with O_NONBLOCK|O_NOCTTY, so a FIFO or device
//!   swapped in after the check opens without blocking or taking a terminal.
//!   fstat on the opened fd decides: a directory is walked through that fd,
//!   a regular file is copied and hashed from that fd, anything else is
//!   skipped and reported. An entry that changed between the check and the
//!   open is skipped and reported too.
//!
//! Symlink policy: a symlink whose target is a regular file inside the same
//! volume is staged as a copy of that file. The target is resolved by the
//! kernel with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to
//! the volume root's fd, so it cannot leave the volume whatever is swapped
//! in meanwhile; an absolute target is accepted when it starts with the
//! volume's source path (and resolved the same way, below the root fd).
//! Symlinks to directories, dangling symlinks, symlinks leaving the volume
//! (e.g. to /etc/shadow), sockets, FIFOs and device nodes are left out and
//! reported.
//!
//! Holes are kept (see `InputHasher::content`), and the sum of the apparent
//! sizes of all staged files is capped (`StageOptions::limit_bytes`, the
//! config's `volume_limit_mib`); over it the walk fails, in the check walk
//! too, before anything is staged. Staged dirs are 0750, files 0640 (0750
//! when the source had any execute bit), owned by root and by the group in
//! `StageOptions::group`; the hash covers the source modes.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, readlinkat, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, Gid};

use crate::config::Volume;
use crate::inputs::{CopyError, InputHasher};

/// Deepest directory nesting staged (each level holds an open fd).
pub const MAX_DEPTH: usize = 128;
/// Skipped entries listed in the report (and logged) one by one; the rest
/// are only counted.
pub const MAX_REPORTED: usize = 256;

const DIR_MODE: u32 = 0o750;
const FILE_MODE: u32 = 0o640;
const EXEC_MODE: u32 = 0o750;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("field `volumes[{index}].source` = {source_dir}: {reason}; a volume source must be named by a path without symlinks")]
    SourceSymlink {
        index: usize,
        source_dir: PathBuf,
        reason: String,
    },
    #[error(
        "field `volumes[{index}].source` = {source_dir}: cannot open it as a directory: {error}"
    )]
    SourceOpen {
        index: usize,
        source_dir: PathBuf,
        error: std::io::Error,
    },
    #[error("volume {source_dir}: cannot read {path}: {error}")]
    Read {
        source_dir: PathBuf,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("volume {source_dir}: {path} is nested deeper than {MAX_DEPTH} directories")]
    TooDeep { source_dir: PathBuf, path: PathBuf },
    #[error("volume {source_dir} (volumes[{index}]) holds {} of files, bringing the VM's volume data to {}, over its limit of {} MiB (volume_limit_mib)", size(*.volume_bytes), size(*.total_bytes), .limit_bytes >> 20)]
    OverLimit {
        index: usize,
        source_dir: PathBuf,
        volume_bytes: u64,
        total_bytes: u64,
        limit_bytes: u64,
    },
    #[error("staging {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn size(bytes: u64) -> String {
    format!(
        "{bytes} bytes ({:.1} MiB)",
        bytes as f64 / (1u64 << 20) as f64
    )
}

/// How to stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageOptions {
    /// Most bytes (sum of apparent file sizes, all volumes) a VM may stage.
    pub limit_bytes: u64,
    /// Group of the staged tree (the VM's group); None keeps the group of
    /// the creating process.
    pub group: Option<u32>,
}

impl StageOptions {
    /// From the config's `volume_limit_mib`.
    pub fn new(limit_mib: u64, group: Option<u32>) -> StageOptions {
        StageOptions {
            limit_bytes: limit_mib.saturating_mul(1 << 20),
            group,
        }
    }
}

#[derive(Debug, Default)]
pub struct WalkReport {
    pub files: u64,
    /// Sum of the staged files' apparent sizes.
    pub bytes: u64,
    /// Bytes actually read (holes are not).
    pub read: u64,
    /// Entries left out of the image, with the reason (the first
    /// MAX_REPORTED; `skipped_count` has them all).
    pub skipped: Vec<String>,
    pub skipped_count: u64,
}

/// Walk every volume in order, hashing into `hasher`; when `dest` is given
/// (an empty dir of ours), copy into `dest/<guest path>`.
pub fn walk_volumes(
    volumes: &[Volume],
    hasher: &mut InputHasher,
    dest: Option<&Path>,
    opts: &StageOptions,
) -> Result<WalkReport, StageError> {
    let mut report = WalkReport::default();
    let dest_fd = match dest {
        Some(d) => Some(open_dir(AT_FDCWD, d).map_err(|e| write_err(d, e))?),
        None => None,
    };
    let mut budget = Budget {
        total: 0,
        over: None,
    };
    for (index, v) in volumes.iter().enumerate() {
        hasher.field("volume-target", v.target.as_os_str().as_bytes());
        let root = open_source(index, &v.source)?;
        let st = fstat(root.as_fd()).map_err(|e| StageError::Read {
            source_dir: v.source.clone(),
            path: v.source.clone(),
            error: e.into(),
        })?;
        hasher.field("dir", &(st.st_mode & 0o7777).to_le_bytes());
        let guest_rel = v.target.strip_prefix("/").unwrap_or(&v.target);
        let out = match (&dest_fd, dest) {
            (Some(fd), Some(d)) if budget.over.is_none() => {
                Some(guest_dirs(fd, d, guest_rel, opts.group)?)
            }
            _ => None,
        };
        let mut w = Walker {
            index,
            source: &v.source,
            root: &root,
            hasher: &mut *hasher,
            report: &mut report,
            opts,
            budget: &mut budget,
            volume_bytes: 0,
            staged_root: dest.map(|d| d.join(guest_rel)),
        };
        w.dir(&root, Path::new(""), out.as_ref(), 0)?;
        let volume_bytes = w.volume_bytes;
        if let Some(over) = &mut budget.over {
            if over.index == index {
                over.volume_bytes = volume_bytes;
            }
        }
    }
    if let Some(o) = budget.over {
        return Err(StageError::OverLimit {
            index: o.index,
            source_dir: volumes[o.index].source.clone(),
            volume_bytes: o.volume_bytes,
            total_bytes: budget.total,
            limit_bytes: opts.limit_bytes,
        });
    }
    Ok(report)
}

/// The apparent sizes counted so far, and the volume that crossed the limit
/// (from then on the walk only counts, to report the whole size).
struct Budget {
    total: u64,
    over: Option<Over>,
}

struct Over {
    index: usize,
    volume_bytes: u64,
}

fn write_err(path: &Path, e: impl Into<std::io::Error>) -> StageError {
    StageError::Write {
        path: path.to_owned(),
        error: e.into(),
    }
}

fn cstr(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).expect("a path component has no NUL")
}

/// A directory of ours (the staging dir), not following a final symlink.
fn open_dir<Fd: AsFd>(at: Fd, path: &Path) -> nix::Result<OwnedFd> {
    openat(
        at,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Whether `volumes[index].source` can be staged: a directory named by a
/// path without symlinks (for config validation; the walk checks it again
/// when it opens the dir).
pub fn check_source(index: usize, source: &Path) -> Result<(), StageError> {
    open_source(index, source).map(drop)
}

/// The volume root, with no symlink in any component of its path.
fn open_source(index: usize, source: &Path) -> Result<OwnedFd, StageError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(AT_FDCWD, source, how) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) => {
            // Name the component for the operator.
            let link = source
                .ancestors()
                .filter(|a| a.parent().is_some())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .find(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()));
            let reason = match link {
                Some(l) if l == source => "it is a symlink".to_owned(),
                Some(l) => format!("its component {} is a symlink", l.display()),
                None => "it contains a symlink".to_owned(),
            };
            Err(StageError::SourceSymlink {
                index,
                source_dir: source.to_owned(),
                reason,
            })
        }
        Err(e) => Err(StageError::SourceOpen {
            index,
            source_dir: source.to_owned(),
            error: e.into(),
        }),
    }
}

/// Create (or reuse, for prefixes two volumes share) the dirs of a volume's
/// guest path under the staging dir; returns the volume dir's fd.
fn guest_dirs(
    dest: &OwnedFd,
    dest_path: &Path,
    guest_rel: &Path,
    group: Option<u32>,
) -> Result<OwnedFd, StageError> {
    let mut fd = dest.try_clone().map_err(|e| write_err(dest_path, e))?;
    let mut shown = dest_path.to_owned();
    for c in guest_rel.components() {
        shown.push(c);
        fd = make_dir(&fd, &cstr(c.as_os_str()), &shown, group, true)?;
    }
    Ok(fd)
}

/// mkdirat + open (never following a symlink) + owner group + mode 0750.
fn make_dir(
    parent: &OwnedFd,
    name: &CStr,
    shown: &Path,
    group: Option<u32>,
    may_exist: bool,
) -> Result<OwnedFd, StageError> {
    match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) if may_exist => {}
        Err(e) => return Err(write_err(shown, e)),
    }
    let fd = open_dir(
        parent.as_fd(),
        Path::new(OsStr::from_bytes(name.to_bytes())),
    )
    .map_err(|e| write_err(shown, e))?;
    set_owner_mode(&fd, group, DIR_MODE).map_err(|e| write_err(shown, e))?;
    Ok(fd)
}

fn set_owner_mode<Fd: AsFd>(fd: Fd, group: Option<u32>, mode: u32) -> nix::Result<()> {
    if let Some(g) = group {
        fchown(fd.as_fd(), None, Some(Gid::from_raw(g)))?;
    }
    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
}

fn kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFREG => "a regular file",
        _ => "an unknown file type",
    }
}

fn is(st: &FileStat, t: SFlag) -> bool {
    st.st_mode & libc::S_IFMT == t.bits()
}

struct Walker<'a> {
    index: usize,
    source: &'a Path,
    root: &'a OwnedFd,
    hasher: &'a mut InputHasher,
    report: &'a mut WalkReport,
    opts: &'a StageOptions,
    budget: &'a mut Budget,
    volume_bytes: u64,
    /// Where this volume is staged (for messages).
    staged_root: Option<PathBuf>,
}

impl Walker<'_> {
    fn host(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.source.to_owned()
        } else {
            self.source.join(rel)
        }
    }

    fn staged(&self, rel: &Path) -> PathBuf {
        self.staged_root
            .as_deref()
            .map(|r| r.join(rel))
            .unwrap_or_default()
    }

    fn read_err(&self, rel: &Path, e: impl Into<std::io::Error>) -> StageError {
        StageError::Read {
            source_dir: self.source.to_owned(),
            path: self.host(rel),
            error: e.into(),
        }
    }

    fn skip(&mut self, rel: &Path, why: &str) {
        self.report.skipped_count += 1;
        if self.report.skipped.len() < MAX_REPORTED {
            let line = format!("{}: {}", self.host(rel).display(), why);
            tracing::warn!(entry = %line, "left out of the image");
            self.report.skipped.push(line);
        } else if self.report.skipped_count == MAX_REPORTED as u64 + 1 {
            tracing::warn!("more entries left out of the image; only counted from here on");
        }
    }

    /// Walk the open dir `dir` (at `rel` in the volume), copying into `out`.
    fn dir(
        &mut self,
        dir: &OwnedFd,
        rel: &Path,
        out: Option<&OwnedFd>,
        depth: usize,
    ) -> Result<(), StageError> {
        if depth > MAX_DEPTH {
            return Err(StageError::TooDeep {
                source_dir: self.source.to_owned(),
                path: self.host(rel),
            });
        }
        let listing = dir.try_clone().map_err(|e| self.read_err(rel, e))?;
        let mut d = Dir::from_fd(listing).map_err(|e| self.read_err(rel, e))?;
        let mut names: Vec<OsString> = Vec::new();
        for e in d.iter() {
            let e = e.map_err(|e| self.read_err(rel, e))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        drop(d);
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            self.entry(dir, &cstr(&name), &rel, out, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
        out: Option<&OwnedFd>,
        depth: usize,
    ) -> Result<(), StageError> {
        let st = match fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                self.skip(rel, "vanished while being staged");
                return Ok(());
            }
            Err(e) => return Err(self.read_err(rel, e)),
        };
        if is(&st, SFlag::S_IFDIR) {
            let fd = match open_dir(dir.as_fd(), Path::new(OsStr::from_bytes(name.to_bytes()))) {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                    self.skip(rel, "changed while being staged (no longer a directory)");
                    return Ok(());
                }
                Err(e) => return Err(self.read_err(rel, e)),
            };
            let st = fstat(fd.as_fd()).map_err(|e| self.read_err(rel, e))?;
            let mode = st.st_mode & 0o7777;
            self.hasher.field("dir", rel.as_os_str().as_bytes());
            self.hasher.field("mode", &mode.to_le_bytes());
            let sub = match out {
                Some(o) if self.budget.over.is_none() => Some(make_dir(
                    o,
                    name,
                    &self.staged(rel),
                    self.opts.group,
                    false,
                )?),
                _ => None,
            };
            self.dir(&fd, rel, sub.as_ref(), depth + 1)
        } else if is(&st, SFlag::S_IFREG) {
            let flags = OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC;
            let fd = match openat(dir.as_fd(), name, flags, Mode::empty()) {
                Ok(fd) => fd,
                // ELOOP: now a symlink; ENXIO: now a socket.
                Err(Errno::ELOOP | Errno::ENOENT | Errno::ENXIO) => {
                    self.skip(rel, "changed while being staged (no longer a regular file)");
                    return Ok(());
                }
                Err(e) => return Err(self.read_err(rel, e)),
            };
            let st = fstat(fd.as_fd()).map_err(|e| self.read_err(rel, e))?;
            if !is(&st, SFlag::S_IFREG) {
                self.skip(
                    rel,
                    &format!("changed while being staged (now {})", kind(st.st_mode)),
                );
                return Ok(());
            }
            self.file(File::from(fd), &st, rel, name, out)
        } else if is(&st, SFlag::S_IFLNK) {
            self.symlink(dir, name, rel, out)
        } else {
            self.skip(
                rel,
                &format!(
                    "{}, not a regular file, directory or symlink",
                    kind(st.st_mode)
                ),
            );
            Ok(())
        }
    }

    /// Stage a symlink as a copy of its target when that is a regular file
    /// inside the volume (resolved by the kernel beneath the root fd).
    fn symlink(
        &mut self,
        dir: &OwnedFd,
        name: &CStr,
        rel: &Path,
        out: Option<&OwnedFd>,
    ) -> Result<(), StageError> {
        let target = match readlinkat(dir.as_fd(), name) {
            Ok(t) => PathBuf::from(t),
            Err(Errno::ENOENT | Errno::EINVAL) => {
                self.skip(rel, "changed while being staged (no longer a symlink)");
                return Ok(());
            }
            Err(e) => return Err(self.read_err(rel, e)),
        };
        let shown = target.display().to_string();
        let within = if target.is_absolute() {
            match target.strip_prefix(self.source) {
                Ok(r) if !r.as_os_str().is_empty() => r.to_owned(),
                Ok(_) => {
                    self.skip(rel, "symlink to a directory (the volume itself)");
                    return Ok(());
                }
                Err(_) => {
                    self.skip(
                        rel,
                        &format!("symlink resolves outside the volume (to {shown})"),
                    );
                    return Ok(());
                }
            }
        } else {
            rel.parent().unwrap_or(Path::new("")).join(&target)
        };
        let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        let root = self.root;
        let open = |flags: OFlag| {
            let how = OpenHow::new()
                .flags(flags | OFlag::O_CLOEXEC)
                .resolve(resolve);
            // EAGAIN: a concurrent rename during `..` resolution; retry.
            let mut tries = 0;
            loop {
                match openat2(root.as_fd(), &within, how) {
                    Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                    r => return r,
                }
            }
        };
        // Look without opening (O_PATH), so a FIFO or device the link points
        // at is never opened.
        let looked = match open(OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(e) => {
                let why = match e {
                    Errno::EXDEV => format!("symlink resolves outside the volume (to {shown})"),
                    Errno::ENOENT | Errno::ENOTDIR => format!("dangling symlink (to {shown})"),
                    Errno::ELOOP => format!("symlink loop (to {shown})"),
                    Errno::EAGAIN => "changed while being staged".to_owned(),
                    e => return Err(self.read_err(rel, e)),
                };
                self.skip(rel, &why);
                return Ok(());
            }
        };
        let st = fstat(looked.as_fd()).map_err(|e| self.read_err(rel, e))?;
        if is(&st, SFlag::S_IFDIR) {
            self.skip(rel, &format!("symlink to a directory ({shown})"));
            return Ok(());
        }
        if !is(&st, SFlag::S_IFREG) {
            self.skip(rel, &format!("symlink to {} ({shown})", kind(st.st_mode)));
            return Ok(());
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match open(flags) {
            Ok(fd) => fd,
            Err(
                Errno::EXDEV
                | Errno::ENOENT
                | Errno::ENOTDIR
                | Errno::ELOOP
                | Errno::ENXIO
                | Errno::EAGAIN,
            ) => {
                self.skip(rel, "changed while being staged");
                return Ok(());
            }
            Err(e) => return Err(self.read_err(rel, e)),
        };
        let st2 = fstat(fd.as_fd()).map_err(|e| self.read_err(rel, e))?;
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) || !is(&st2, SFlag::S_IFREG) {
            self.skip(rel, "changed while being staged");
            return Ok(());
        }
        self.file(File::from(fd), &st2, rel, name, out)
    }

    /// Hash (and copy into `out`) the open regular file `src`.
    fn file(
        &mut self,
        src: File,
        st: &FileStat,
        rel: &Path,
        name: &CStr,
        out: Option<&OwnedFd>,
    ) -> Result<(), StageError> {
        let len = st.st_size.max(0) as u64;
        self.volume_bytes += len;
        self.budget.total = self.budget.total.saturating_add(len);
        if self.budget.over.is_none() && self.budget.total > self.opts.limit_bytes {
            self.budget.over = Some(Over {
                index: self.index,
                volume_bytes: 0,
            });
        }
        if self.budget.over.is_some() {
            // Over the limit: only count from here on.
            return Ok(());
        }
        let mode = st.st_mode & 0o7777;
        self.hasher.field("file", rel.as_os_str().as_bytes());
        self.hasher.field("mode", &mode.to_le_bytes());
        let staged = self.staged(rel);
        let copy = match out {
            None => None,
            Some(o) => {
                let f = openat(
                    o.as_fd(),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| write_err(&staged, e))?;
                Some(File::from(f))
            }
        };
        let copied = self
            .hasher
            .content("content", &src, len, copy.as_ref())
            .map_err(|e| match e {
                CopyError::Read(e) => self.read_err(rel, e),
                CopyError::Write(e) => write_err(&staged, e),
            })?;
        if copied.changed {
            tracing::warn!(file = %self.host(rel).display(), "changed while being staged");
        }
        if let Some(c) = &copy {
            let staged_mode = if mode & 0o111 != 0 {
                EXEC_MODE
            } else {
                FILE_MODE
            };
            c.sync_data().map_err(|e| write_err(&staged, e))?;
            set_owner_mode(c, self.opts.group, staged_mode).map_err(|e| write_err(&staged, e))?;
        }
        self.report.files += 1;
        self.report.bytes += len;
        self.report.read += copied.read;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-stage-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const NO_LIMIT: StageOptions = StageOptions {
        limit_bytes: u64::MAX,
        group: None,
    };

    fn vol(src: &Path) -> Vec<Volume> {
        vec![Volume {
            source: src.to_owned(),
            target: "/srv/app".into(),
        }]
    }

    fn check(vols: &[Volume]) -> (String, WalkReport) {
        let mut h = InputHasher::new();
        let r = walk_volumes(vols, &mut h, None, &NO_LIMIT).unwrap();
        (h.finish_hex(), r)
    }

    fn stage(vols: &[Volume], dest: &Path, opts: &StageOptions) -> (String, WalkReport) {
        let _ = fs::remove_dir_all(dest);
        fs::create_dir(dest).unwrap();
        let mut h = InputHasher::new();
        let r = walk_volumes(vols, &mut h, Some(dest), opts).unwrap();
        (h.finish_hex(), r)
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn stages_mirror_of_guest_path_and_hash_matches_source_walk() {
        let t = tmpdir("mirror");
        let src = t.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "hello").unwrap();
        fs::write(src.join("sub/b.txt"), "world").unwrap();
        fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("sub/b.txt"), fs::Permissions::from_mode(0o604)).unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o701)).unwrap();
        let vols = vol(&src);
        let (h1, r1) = check(&vols);
        let dest = t.join("staging");
        let (h2, r2) = stage(&vols, &dest, &NO_LIMIT);
        assert_eq!(h1, h2);
        assert_eq!((r1.files, r2.files), (3, 3));
        assert_eq!(r2.bytes, 5 + 5 + 10);
        assert!(r2.skipped.is_empty(), "{:?}", r2.skipped);
        assert_eq!(
            fs::read_to_string(dest.join("srv/app/sub/b.txt")).unwrap(),
            "world"
        );
        // Staged modes: dirs 0750, files 0640, 0750 with an execute bit.
        assert_eq!(mode_of(&dest.join("srv")), 0o750);
        assert_eq!(mode_of(&dest.join("srv/app")), 0o750);
        assert_eq!(mode_of(&dest.join("srv/app/sub")), 0o750);
        assert_eq!(mode_of(&dest.join("srv/app/sub/b.txt")), 0o640);
        assert_eq!(mode_of(&dest.join("srv/app/a.txt")), 0o640);
        assert_eq!(mode_of(&dest.join("srv/app/run.sh")), 0o750);

        // One changed byte changes the hash; so does a source mode change.
        fs::write(src.join("a.txt"), "hellp").unwrap();
        assert_ne!(check(&vols).0, h1);
        fs::write(src.join("a.txt"), "hello").unwrap();
        assert_eq!(check(&vols).0, h1);
        fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(check(&vols).0, h1);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn staged_tree_gets_the_given_group() {
        let t = tmpdir("group");
        let src = t.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "x").unwrap();
        let gid = 4242;
        let dest = t.join("staging");
        let opts = StageOptions {
            limit_bytes: u64::MAX,
            group: Some(gid),
        };
        // fchown to an arbitrary group needs root (CAP_CHOWN).
        if nix::unistd::geteuid().is_root() {
            stage(&vol(&src), &dest, &opts);
            for p in ["srv", "srv/app", "srv/app/sub", "srv/app/sub/f"] {
                let m = fs::metadata(dest.join(p)).unwrap();
                assert_eq!((m.uid(), m.gid()), (0, gid), "{p}");
            }
        }
        // Without a group the creating process's group stays.
        stage(&vol(&src), &dest, &NO_LIMIT);
        let m = fs::metadata(dest.join("srv/app/sub/f")).unwrap();
        assert_eq!(m.gid(), nix::unistd::getegid().as_raw());
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn symlink_policy() {
        let t = tmpdir("links");
        let src = t.join("src");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::write(src.join("a.txt"), "hello").unwrap();
        fs::write(src.join("sub/deeper/c.txt"), "deep").unwrap();
        fs::write(t.join("outside.txt"), "outside").unwrap();
        symlink("a.txt", src.join("inside-link")).unwrap();
        symlink("../a.txt", src.join("sub/up-link")).unwrap();
        symlink("deeper/c.txt", src.join("sub/down-link")).unwrap();
        symlink("inside-link", src.join("chain-link")).unwrap();
        symlink(src.join("a.txt"), src.join("absolute-inside")).unwrap();
        symlink("/etc/hostname", src.join("outside-link")).unwrap();
        symlink("../outside.txt", src.join("dotdot-out")).unwrap();
        symlink(t.join("outside.txt"), src.join("absolute-out")).unwrap();
        symlink("sub", src.join("dir-link")).unwrap();
        symlink(&src, src.join("self-link")).unwrap();
        symlink("missing", src.join("dangling")).unwrap();
        symlink("loop-b", src.join("loop-a")).unwrap();
        symlink("loop-a", src.join("loop-b")).unwrap();
        let vols = vol(&src);
        let dest = t.join("staging");
        let (h, r) = stage(&vols, &dest, &NO_LIMIT);
        assert_eq!(check(&vols).0, h);
        let app = dest.join("srv/app");
        for (link, want) in [
            ("inside-link", "hello"),
            ("sub/up-link", "hello"),
            ("sub/down-link", "deep"),
            ("chain-link", "hello"),
            ("absolute-inside", "hello"),
        ] {
            assert_eq!(fs::read_to_string(app.join(link)).unwrap(), want, "{link}");
            assert!(fs::symlink_metadata(app.join(link)).unwrap().is_file());
        }
        let expect_skipped = [
            ("outside-link", "outside the volume"),
            ("dotdot-out", "outside the volume"),
            ("absolute-out", "outside the volume"),
            ("dir-link", "directory"),
            ("self-link", "directory"),
            ("dangling", "dangling"),
            ("loop-a", "loop"),
            ("loop-b", "loop"),
        ];
        assert_eq!(r.skipped.len(), expect_skipped.len(), "{:?}", r.skipped);
        for (name, why) in expect_skipped {
            assert!(
                r.skipped
                    .iter()
                    .any(|l| l.contains(&format!("/{name}:")) && l.contains(why)),
                "{name}: {why} not in {:?}",
                r.skipped
            );
            assert!(
                fs::symlink_metadata(app.join(name)).is_err(),
                "{name} staged"
            );
        }
        fs::remove_dir_all(&t).unwrap();
    }

    fn mknod(p: &Path, kind: libc::mode_t) -> bool {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; dev 1:3 (/dev/null) for device nodes.
        unsafe { libc::mknod(c.as_ptr(), kind | 0o644, libc::makedev(1, 3)) == 0 }
    }

    #[test]
    fn fifos_sockets_and_devices_are_skipped_without_blocking() {
        let t = tmpdir("special");
        let src = t.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("ok.txt"), "ok").unwrap();
        assert!(mknod(&src.join("fifo"), libc::S_IFIFO));
        let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        let mut expect = vec![("fifo", "FIFO"), ("sock", "socket")];
        // Device nodes need CAP_MKNOD.
        if mknod(&src.join("chr"), libc::S_IFCHR) {
            expect.push(("chr", "character device"));
        }
        symlink("fifo", src.join("fifo-link")).unwrap();
        expect.push(("fifo-link", "symlink to a FIFO"));
        let vols = vol(&src);
        let dest = t.join("staging");
        let (h, r) = stage(&vols, &dest, &NO_LIMIT);
        assert_eq!(check(&vols).0, h);
        assert_eq!(r.files, 1);
        assert_eq!(r.skipped.len(), expect.len(), "{:?}", r.skipped);
        for (name, why) in expect {
            assert!(
                r.skipped
                    .iter()
                    .any(|l| l.contains(&format!("/{name}:")) && l.contains(why)),
                "{name}: {why} not in {:?}",
                r.skipped
            );
            assert!(fs::symlink_metadata(dest.join("srv/app").join(name)).is_err());
        }
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_source_path_through_a_symlink_is_refused() {
        let t = tmpdir("srclink");
        fs::create_dir_all(t.join("real/vol")).unwrap();
        symlink(t.join("real"), t.join("link")).unwrap();
        symlink(t.join("real/vol"), t.join("vol-link")).unwrap();
        for (source, component) in [
            (t.join("link/vol"), t.join("link")),
            (t.join("vol-link"), t.join("vol-link")),
        ] {
            let vols = vec![
                Volume {
                    source: t.join("real/vol"),
                    target: "/a".into(),
                },
                Volume {
                    source: source.clone(),
                    target: "/b".into(),
                },
            ];
            let mut h = InputHasher::new();
            let e = walk_volumes(&vols, &mut h, None, &NO_LIMIT)
                .unwrap_err()
                .to_string();
            let names = if component == source {
                "it is a symlink".to_owned()
            } else {
                format!("its component {} is a symlink", component.display())
            };
            assert!(
                e.contains(&format!("`volumes[1].source` = {}:", source.display()))
                    && e.contains(&names),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
            assert_eq!(check_source(1, &source).unwrap_err().to_string(), e);
        }
        check_source(0, &t.join("real/vol")).unwrap();
        let e = check_source(2, &t.join("missing")).unwrap_err().to_string();
        assert!(
            e.contains("`volumes[2].source`") && e.contains("No such file"),
            "{e}"
        );
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn sparse_files_stay_sparse_and_hash_without_reading_holes() {
        let t = tmpdir("sparse");
        let src = t.join("src");
        fs::create_dir_all(&src).unwrap();
        let f = fs::File::create(src.join("sparse.img")).unwrap();
        f.set_len(1 << 30).unwrap();
        use std::os::unix::fs::FileExt;
        let offsets = [0u64, 12345 * 4096 + 17, (1 << 30) - 4];
        for off in offsets {
            f.write_all_at(b"data", off).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        let vols = vol(&src);
        let dest = t.join("staging");
        let t0 = std::time::Instant::now();
        let (h, r) = stage(&vols, &dest, &NO_LIMIT);
        let took = t0.elapsed();
        let t1 = std::time::Instant::now();
        assert_eq!(check(&vols).0, h);
        let took_check = t1.elapsed();
        let m = fs::metadata(dest.join("srv/app/sparse.img")).unwrap();
        eprintln!(
            "1 GiB sparse file: staged in {took:?}, checked in {took_check:?}, \
             {} bytes read, staged copy uses {} blocks of 512 bytes",
            r.read,
            m.blocks()
        );
        assert_eq!(m.len(), 1 << 30);
        assert_eq!(r.bytes, 1 << 30);
        assert!(r.read <= 4 * 4096, "read {} bytes", r.read);
        assert!(m.blocks() <= 64, "staged copy uses {} blocks", m.blocks());
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        // The copy has the same bytes where the data is.
        let staged = fs::File::open(dest.join("srv/app/sparse.img")).unwrap();
        let mut b = [0u8; 4];
        for off in offsets {
            staged.read_exact_at(&mut b, off).unwrap();
            assert_eq!(&b, b"data", "at {off}");
        }
        staged.read_exact_at(&mut b, 4096 * 1000).unwrap();
        assert_eq!(b, [0; 4]);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn zeros_written_out_are_staged_as_holes_and_hash_like_a_hole() {
        let t = tmpdir("zeros");
        let src = t.join("src");
        fs::create_dir_all(&src).unwrap();
        let mut dense = vec![0u8; 8 << 20];
        dense[..5].copy_from_slice(b"start");
        fs::write(src.join("f"), &dense).unwrap();
        let vols = vol(&src);
        let dest = t.join("staging");
        let (h_dense, _) = stage(&vols, &dest, &NO_LIMIT);
        let m = fs::metadata(dest.join("srv/app/f")).unwrap();
        assert_eq!(m.len(), 8 << 20);
        assert!(m.blocks() <= 64, "{} blocks", m.blocks());
        assert_eq!(fs::read(dest.join("srv/app/f")).unwrap(), dense);
        // The same bytes as a sparse file hash the same.
        fs::remove_file(src.join("f")).unwrap();
        let f = fs::File::create(src.join("f")).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 0).unwrap();
        drop(f);
        assert_eq!(check(&vols).0, h_dense);
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn volume_data_over_the_limit_fails_in_the_check_walk() {
        let t = tmpdir("limit");
        let a = t.join("a");
        let b = t.join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(b.join("sub")).unwrap();
        fs::File::create(a.join("one"))
            .unwrap()
            .set_len(600 << 10)
            .unwrap();
        fs::File::create(b.join("sub/two"))
            .unwrap()
            .set_len(600 << 10)
            .unwrap();
        fs::File::create(b.join("three"))
            .unwrap()
            .set_len(100 << 10)
            .unwrap();
        let vols = vec![
            Volume {
                source: a.clone(),
                target: "/a".into(),
            },
            Volume {
                source: b.clone(),
                target: "/b".into(),
            },
        ];
        let one_mib = StageOptions::new(1, None);
        let mut h = InputHasher::new();
        let e = walk_volumes(&vols, &mut h, None, &one_mib).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                StageError::OverLimit {
                    index: 1,
                    volume_bytes: 716800,
                    total_bytes: 1331200,
                    limit_bytes: 1048576,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains(&*b.to_string_lossy())
                && msg.contains("716800 bytes")
                && msg.contains("1331200 bytes")
                && msg.contains("1 MiB (volume_limit_mib)"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
        // Exactly at the limit is fine; one byte over is not.
        let exact = StageOptions {
            limit_bytes: 1331200,
            group: None,
        };
        walk_volumes(&vols, &mut InputHasher::new(), None, &exact).unwrap();
        let under = StageOptions {
            limit_bytes: 1331199,
            group: None,
        };
        assert!(walk_volumes(&vols, &mut InputHasher::new(), None, &under).is_err());
        // Staging over the limit fails too, and stages nothing of the
        // volumes after the crossing.
        let dest = t.join("staging");
        fs::create_dir(&dest).unwrap();
        assert!(walk_volumes(&vols, &mut InputHasher::new(), Some(&dest), &one_mib).is_err());
        assert!(!dest.join("b/three").exists() && !dest.join("b/sub/two").exists());
        fs::remove_dir_all(&t).unwrap();
    }
}
