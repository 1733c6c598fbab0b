//! The program and the files it needs at run time (interpreter, shared
//! libraries; src/elfdeps.rs), read once, hashed, and staged at their own
//! absolute paths in the staging tree, plus the placeholder ops is given.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::elfdeps::{self, DepsError, Needed};
use crate::inputs::InputHasher;
use crate::opsconfig;

/// The program as read (once), with everything it needs.
pub struct ProgramFiles {
    pub program: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
    pub deps: Vec<Needed>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("program {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error("staging {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{what} {path} collides with a file a volume staged at the same guest path")]
    Collision { what: &'static str, path: PathBuf },
}

/// Read the program; with `with_deps`, resolve what it needs in the guest.
pub fn load(program: &Path, with_deps: bool) -> Result<ProgramFiles, ProgramError> {
    let read = |source| ProgramError::Read {
        path: program.to_owned(),
        source,
    };
    let f = File::open(program).map_err(read)?;
    let meta = f.metadata().map_err(read)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(1 << 31).read_to_end(&mut bytes).map_err(read)?;
    let deps = if with_deps {
        elfdeps::resolve(program, &bytes)?
    } else {
        Vec::new()
    };
    Ok(ProgramFiles {
        program: program.to_owned(),
        bytes,
        mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        deps,
    })
}

impl ProgramFiles {
    /// Program bytes and each dependency (path, mode, bytes) into the hash.
    pub fn hash_into(&self, h: &mut InputHasher) {
        h.field("program", self.bytes.as_slice());
        h.field("program-path", self.program.as_os_str().as_encoded_bytes());
        for d in &self.deps {
            h.field("dep-path", d.guest.as_os_str().as_encoded_bytes());
            h.field("dep-mode", &d.mode.to_le_bytes());
            h.field("dep", &d.bytes);
        }
    }

    /// Stage program, dependencies and the placeholder under `root`
    /// (a scratch dir of ours), group-readable by `gid`.
    pub fn stage(&self, root: &Path, gid: Option<u32>) -> Result<(), ProgramError> {
        let placeholder = opsconfig::placeholder_elf();
        let files = std::iter::once((
            "program",
            self.program.as_path(),
            self.bytes.as_slice(),
            self.mode,
        ))
        .chain(
            self.deps
                .iter()
                .map(|d| ("library", d.guest.as_path(), d.bytes.as_slice(), d.mode)),
        )
        .chain(std::iter::once((
            "placeholder",
            Path::new(opsconfig::RESERVED_GUEST_DIR),
            placeholder.as_slice(),
            0o755,
        )));
        for (what, guest, bytes, mode) in files {
            let rel = if what == "placeholder" {
                PathBuf::from(opsconfig::PLACEHOLDER)
            } else {
                guest.strip_prefix("/").unwrap_or(guest).to_owned()
            };
            write_file(root, &rel, bytes, mode, gid).map_err(|e| match e {
                WriteError::Exists => ProgramError::Collision {
                    what,
                    path: guest.to_owned(),
                },
                WriteError::Io(source) => ProgramError::Write {
                    path: root.join(&rel),
                    source,
                },
            })?;
        }
        Ok(())
    }
}

enum WriteError {
    Exists,
    Io(io::Error),
}

fn write_file(
    root: &Path,
    rel: &Path,
    bytes: &[u8],
    mode: u32,
    gid: Option<u32>,
) -> Result<(), WriteError> {
    let dest = root.join(rel);
    let mut dir = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            dir.push(c);
            match fs::DirBuilder::new().mode(0o750).create(&dir) {
                Ok(()) => {
                    // Our new dir: the exact mode, whatever the umask (0077 in the units).
                    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
                        .map_err(WriteError::Io)?;
                    set_group(&dir, gid).map_err(WriteError::Io)?
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(WriteError::Io(e)),
            }
        }
    }
    let staged_mode = if mode & 0o111 != 0 { 0o750 } else { 0o640 };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(staged_mode)
        .open(&dest)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                WriteError::Exists
            } else {
                WriteError::Io(e)
            }
        })?;
    io::Write::write_all(&mut f, bytes).map_err(WriteError::Io)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(staged_mode))
        .map_err(WriteError::Io)?;
    set_group(&dest, gid).map_err(WriteError::Io)
}

fn set_group(p: &Path, gid: Option<u32>) -> io::Result<()> {
    match gid {
        Some(g) => std::os::unix::fs::lchown(p, None, Some(g)),
        None => Ok(()),
    }
}
