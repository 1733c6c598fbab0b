//! Staging: copy each volume's host dir into a tree that mirrors guest paths,
//! hashing exactly what is copied. The same walk without a destination gives
//! the hash used for the "nothing changed" check.
//!
//! Symlink policy: a symlink whose resolved target is a regular file inside
//! the same volume is staged as a copy of that file; symlinks to directories,
//! dangling symlinks and symlinks resolving outside the volume are skipped
//! (and reported), so nothing outside a volume ever reaches the image.
//! Sockets, FIFOs and device nodes are skipped too.

use std::fs::{self, File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Volume;
use crate::inputs::InputHasher;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("volume {source_dir}: cannot read {path}: {error}")]
    Read {
        source_dir: PathBuf,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("staging {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

#[derive(Debug, Default)]
pub struct WalkReport {
    pub files: u64,
    pub bytes: u64,
    /// Entries left out of the image, with the reason.
    pub skipped: Vec<String>,
}

/// Limits and ownership of a staging walk.
#[derive(Debug, Clone)]
pub struct StageOptions {
    pub limit_bytes: u64,
    pub group: Option<u32>,
}

/// Walk every volume in order, hashing into `hasher`; when `dest` is given,
/// copy into `dest/<guest path>`.
pub fn walk_volumes(
    volumes: &[Volume],
    hasher: &mut InputHasher,
    dest: Option<&Path>,
    _opts: &StageOptions,
) -> Result<WalkReport, StageError> {
    let mut report = WalkReport::default();
    for v in volumes {
        hasher.field("volume-target", v.target.as_os_str().as_encoded_bytes());
        let root = fs::canonicalize(&v.source).map_err(|error| StageError::Read {
            source_dir: v.source.clone(),
            path: v.source.clone(),
            error,
        })?;
        let guest_rel = v.target.strip_prefix("/").unwrap_or(&v.target);
        let dest_root = dest.map(|d| d.join(guest_rel));
        let meta = fs::metadata(&root).map_err(|error| StageError::Read {
            source_dir: v.source.clone(),
            path: root.clone(),
            error,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        hasher.field("dir", &mode.to_le_bytes());
        if let Some(d) = &dest_root {
            fs::create_dir_all(d).map_err(|error| StageError::Write {
                path: d.clone(),
                error,
            })?;
            set_mode(d, mode)?;
        }
        let mut w = Walker {
            source_dir: &v.source,
            root: &root,
            hasher,
            report: &mut report,
        };
        w.dir(&root, Path::new(""), dest_root.as_deref())?;
    }
    Ok(report)
}

struct Walker<'a> {
    source_dir: &'a Path,
    root: &'a Path,
    hasher: &'a mut InputHasher,
    report: &'a mut WalkReport,
}

impl Walker<'_> {
    fn read_err(&self, path: &Path, error: std::io::Error) -> StageError {
        StageError::Read {
            source_dir: self.source_dir.to_owned(),
            path: path.to_owned(),
            error,
        }
    }

    fn dir(&mut self, dir: &Path, rel: &Path, dest: Option<&Path>) -> Result<(), StageError> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| self.read_err(dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| self.read_err(dir, e))?;
        entries.sort();
        for name in entries {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            let out = dest.map(|d| d.join(&name));
            let meta = fs::symlink_metadata(&path).map_err(|e| self.read_err(&path, e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                let mode = meta.permissions().mode() & 0o7777;
                self.hasher.field("dir", rel.as_os_str().as_encoded_bytes());
                self.hasher.field("mode", &mode.to_le_bytes());
                if let Some(o) = &out {
                    fs::create_dir(o).map_err(|error| StageError::Write {
                        path: o.clone(),
                        error,
                    })?;
                    set_mode(o, mode)?;
                }
                self.dir(&path, &rel, out.as_deref())?;
            } else if ft.is_file() {
                self.file(
                    &path,
                    &rel,
                    meta.permissions().mode() & 0o7777,
                    out.as_deref(),
                )?;
            } else if ft.is_symlink() {
                match fs::canonicalize(&path) {
                    Ok(target) if target.starts_with(self.root) => match fs::metadata(&target) {
                        Ok(m) if m.is_file() => self.file(
                            &target,
                            &rel,
                            m.permissions().mode() & 0o7777,
                            out.as_deref(),
                        )?,
                        Ok(_) => self.skip(&rel, "symlink to a directory"),
                        Err(e) => self.skip(&rel, &format!("symlink target unreadable: {e}")),
                    },
                    Ok(target) => self.skip(
                        &rel,
                        &format!(
                            "symlink resolves outside the volume (to {})",
                            target.display()
                        ),
                    ),
                    Err(_) => self.skip(&rel, "dangling symlink"),
                }
            } else {
                self.skip(&rel, "not a regular file, directory or symlink");
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        src: &Path,
        rel: &Path,
        mode: u32,
        out: Option<&Path>,
    ) -> Result<(), StageError> {
        self.hasher
            .field("file", rel.as_os_str().as_encoded_bytes());
        self.hasher.field("mode", &mode.to_le_bytes());
        let n = match out {
            None => self.hasher.file("content", src, None),
            Some(o) => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(o)
                    .map_err(|error| StageError::Write {
                        path: o.to_owned(),
                        error,
                    })?;
                let mut w = BufWriter::with_capacity(256 * 1024, f);
                let n = self.hasher.file("content", src, Some(&mut w));
                let flushed = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f: File| f.sync_data());
                if let Err(error) = flushed {
                    return Err(StageError::Write {
                        path: o.to_owned(),
                        error,
                    });
                }
                set_mode(o, mode)?;
                n
            }
        }
        .map_err(|e| {
            // Either side may fail; a write error names the staged path.
            match (out, e.raw_os_error()) {
                (Some(o), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)) => StageError::Write {
                    path: o.to_owned(),
                    error: e,
                },
                _ => self.read_err(src, e),
            }
        })?;
        self.report.files += 1;
        self.report.bytes += n;
        Ok(())
    }

    fn skip(&mut self, rel: &Path, why: &str) {
        let line = format!("{}/{}: {}", self.source_dir.display(), rel.display(), why);
        tracing::warn!(entry = %line, "left out of the image");
        self.report.skipped.push(line);
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<(), StageError> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|error| StageError::Write {
        path: p.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const OPTS: StageOptions = StageOptions {
        limit_bytes: u64::MAX,
        group: None,
    };

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-stage-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stages_mirror_of_guest_path_and_hash_matches_source_walk() {
        let t = tmpdir("mirror");
        let src = t.join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("a.txt"), "hello").unwrap();
        fs::write(src.join("sub/b.txt"), "world").unwrap();
        fs::set_permissions(src.join("sub/b.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("a.txt", src.join("inside-link")).unwrap();
        symlink("/etc/hostname", src.join("outside-link")).unwrap();
        let vols = vec![Volume {
            source: src.clone(),
            target: "/srv/app".into(),
        }];
        let mut h1 = InputHasher::new();
        let r1 = walk_volumes(&vols, &mut h1, None, &OPTS).unwrap();
        let dest = t.join("staging");
        fs::create_dir(&dest).unwrap();
        let mut h2 = InputHasher::new();
        let r2 = walk_volumes(&vols, &mut h2, Some(&dest), &OPTS).unwrap();
        assert_eq!(h1.finish_hex(), h2.finish_hex());
        assert_eq!(r1.files, 3);
        assert_eq!(r2.skipped.len(), 1, "{:?}", r2.skipped);
        assert!(r2.skipped[0].contains("outside-link"));
        assert_eq!(
            fs::read_to_string(dest.join("srv/app/sub/b.txt")).unwrap(),
            "world"
        );
        assert_eq!(
            fs::read_to_string(dest.join("srv/app/inside-link")).unwrap(),
            "hello"
        );
        assert!(!dest.join("srv/app/outside-link").exists());
        let mode = fs::metadata(dest.join("srv/app/sub/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);

        // One changed byte changes the hash; so does a mode change.
        fs::write(src.join("a.txt"), "hellp").unwrap();
        let mut h3 = InputHasher::new();
        walk_volumes(&vols, &mut h3, None, &OPTS).unwrap();
        assert_ne!(h1.finish_hex(), h3.finish_hex());
        fs::write(src.join("a.txt"), "hello").unwrap();
        fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        let mut h4 = InputHasher::new();
        walk_volumes(&vols, &mut h4, None, &OPTS).unwrap();
        assert_ne!(h1.finish_hex(), h4.finish_hex());
        fs::remove_dir_all(&t).unwrap();
    }
}
