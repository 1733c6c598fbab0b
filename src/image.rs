//! The VM's image: skipped when the content hash of every input equals the
//! last good build's; otherwise the volumes are staged into a scratch tree,
//! swapped in whole, and a new image is built into a scratch dir that replaces
//! the last good one only when complete (atomic directory exchange).

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::config::{ResolvedNet, Validated};
use crate::cpio::CpioWriter;
use crate::digests::DigestCache;
use crate::inputs::InputHasher;
use crate::opsconfig;
use crate::paths::VmPaths;
use crate::qemu::Boot;
use crate::staging::{self, StageError};

pub const HASH_FILE: &str = "inputs.hash";
pub const DISK_FILE: &str = "disk.img";
pub const INITRD_FILE: &str = "initrd.img";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot run ops ({ops}): {source}")]
    OpsSpawn { ops: String, source: io::Error },
    #[error("`ops build` failed ({status}); last output:\n{tail}")]
    OpsFailed { status: String, tail: String },
    #[error("`ops build` succeeded but left no image at {0}")]
    OpsNoImage(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug)]
pub struct Image {
    pub boot: Boot,
    pub hash: String,
    pub rebuilt: bool,
}

/// Path of the bootable artifact inside an image dir.
fn artifact(v: &Validated, dir: &Path) -> PathBuf {
    if v.config.direct_boot.is_some() {
        dir.join(INITRD_FILE)
    } else {
        dir.join(DISK_FILE)
    }
}

fn boot_for(v: &Validated, dir: &Path) -> Boot {
    match &v.config.direct_boot {
        Some(db) => Boot::Direct {
            kernel: db.kernel.clone(),
            initrd: dir.join(INITRD_FILE),
            append: db.append.clone(),
        },
        None => Boot::Disk(dir.join(DISK_FILE)),
    }
}

/// The files handed to the Linux stand-in guest besides the volumes.
fn standin_files(v: &Validated) -> Vec<(&'static str, String)> {
    let c = &v.config;
    let args: String = c.args.iter().map(|a| format!("{a}\n")).collect();
    let env: String = c
        .env
        .iter()
        .map(|(k, val)| format!("{k}={val}\n"))
        .collect();
    let net = match &v.net {
        ResolvedNet::Bridge(b) => format!(
            "ip={} prefix={} gateway={} mac={}\n",
            b.ip, b.prefix_length, b.gateway, b.mac
        ),
        ResolvedNet::User { .. } => "dhcp\n".into(),
    };
    vec![("mcp/args", args), ("mcp/env", env), ("mcp/net", net)]
}

/// Where a command name resolves on PATH (for hashing the ops binary's identity).
pub fn resolve_command(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// Everything but the volumes: program bytes, generated config, kernel files,
/// the ops binary's identity. The large read-only files go through the
/// digest cache.
fn base_inputs(v: &Validated, cache: &mut DigestCache) -> Result<InputHasher, BuildError> {
    let c = &v.config;
    let mut h = InputHasher::new();
    let mut file = |h: &mut InputHasher, tag: &str, p: &Path, what: &'static str| {
        let (len, digest, _) = cache.digest(p).map_err(io_err(what, p))?;
        h.file_digest(tag, len, &digest);
        Ok::<(), BuildError>(())
    };
    if let Some(p) = &c.program {
        file(&mut h, "program", p, "reading program")?;
    }
    match &c.direct_boot {
        Some(db) => {
            h.field("mode", b"direct-boot (Linux stand-in)");
            for (name, content) in standin_files(v) {
                h.field(name, content.as_bytes());
            }
            file(&mut h, "kernel", &db.kernel, "reading kernel")?;
            file(&mut h, "initrd", &db.initrd, "reading initrd")?;
        }
        None => {
            h.field("mode", b"nanos (ops build)");
            let ops_cfg = opsconfig::render(v);
            h.field("ops-config", ops_cfg.to_string().as_bytes());
            let ops = resolve_command(&c.ops);
            match ops.as_deref().map(|p| {
                (
                    p,
                    fs::canonicalize(p).and_then(|c| fs::metadata(&c).map(|m| (c, m))),
                )
            }) {
                Some((_, Ok((canon, m)))) => {
                    h.field("ops-path", canon.as_os_str().as_bytes());
                    h.field("ops-size", &m.len().to_le_bytes());
                    h.field("ops-mtime", &m.mtime().to_le_bytes());
                }
                _ => h.field("ops-path", c.ops.as_bytes()),
            }
            if let Some(dir) = &c.nanos_dir {
                for f in ["kernel.img", "boot.img"] {
                    let p = dir.join(f);
                    file(&mut h, f, &p, "reading Nanos file")?;
                }
                let klibs = dir.join("klibs");
                if klibs.is_dir() {
                    let mut names: Vec<_> = fs::read_dir(&klibs)
                        .map_err(io_err("reading", &klibs))?
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .collect();
                    names.sort();
                    for n in names {
                        let p = klibs.join(&n);
                        if p.is_file() {
                            h.field("klib", n.as_bytes());
                            file(&mut h, "klib-content", &p, "reading klib")?;
                        }
                    }
                }
            }
        }
    }
    Ok(h)
}

/// The hash of the last good image, if its artifact is present.
pub fn current_hash(v: &Validated, paths: &VmPaths) -> Option<String> {
    let dir = paths.image_dir();
    let hash = fs::read_to_string(dir.join(HASH_FILE)).ok()?;
    artifact(v, &dir).is_file().then(|| hash.trim().to_owned())
}

/// Remove scratch dirs left by a start that died (we hold the start lock).
fn remove_scratch(paths: &VmPaths) -> Result<(), BuildError> {
    let Ok(entries) = fs::read_dir(&paths.state) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("staging.tmp-") || name.starts_with("image.tmp-") {
            tracing::info!(path = %e.path().display(), "removing scratch dir left by an interrupted start");
            fs::remove_dir_all(e.path()).map_err(io_err("removing", &e.path()))?;
        }
    }
    Ok(())
}

/// Put `new` in place of `current` atomically; the old content ends up at
/// `new` (removed afterwards). When `current` does not exist it is a rename.
fn swap_in(new: &Path, current: &Path) -> Result<(), BuildError> {
    let a = CString::new(new.as_os_str().as_bytes()).expect("path without NUL");
    let b = CString::new(current.as_os_str().as_bytes()).expect("path without NUL");
    if current.exists() {
        // SAFETY: two valid C strings, AT_FDCWD.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r != 0 {
            return Err(BuildError::Io {
                what: "exchanging",
                path: current.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        fs::remove_dir_all(new).map_err(io_err("removing old", new))?;
    } else {
        fs::rename(new, current).map_err(io_err("renaming into", current))?;
    }
    Ok(())
}

fn fresh_dir(p: &Path) -> Result<(), BuildError> {
    if p.exists() {
        fs::remove_dir_all(p).map_err(io_err("removing", p))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(io_err("creating", p))
}

/// Make sure a good image for the current inputs exists; build it if not.
pub fn ensure(v: &Validated, paths: &VmPaths) -> Result<Image, BuildError> {
    let t0 = Instant::now();
    remove_scratch(paths)?;
    let mut cache = DigestCache::load(&paths.input_digests());
    let base = base_inputs(v, &mut cache)?;
    if let Err(e) = cache.save() {
        // Only a cache: the next start reads the files again.
        tracing::warn!(error = %e, "cannot save the input digest cache");
    }
    // TODO(lead): pass the VM's gid once it is resolved here (PLAN: staging root:vmgid).
    let stage_opts = staging::StageOptions::new(v.config.volume_limit_mib, None);
    let mut check = base.clone();
    staging::walk_volumes(&v.config.volumes, &mut check, None, &stage_opts)?;
    let hash = check.finish_hex();
    if current_hash(v, paths).as_deref() == Some(hash.as_str()) {
        tracing::info!(hash = %&hash[..16], elapsed_ms = t0.elapsed().as_millis() as u64, "inputs unchanged; reusing the last good image");
        return Ok(Image {
            boot: boot_for(v, &paths.image_dir()),
            hash,
            rebuilt: false,
        });
    }

    // Stage into scratch, hashing exactly what is copied.
    let scratch = paths.scratch("staging");
    fresh_dir(&scratch)?;
    let mut staged = base;
    let walked = staging::walk_volumes(&v.config.volumes, &mut staged, Some(&scratch), &stage_opts);
    let report = match walked {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            return Err(e.into());
        }
    };
    tracing::info!(
        files = report.files,
        bytes = report.bytes,
        read = report.read,
        skipped = report.skipped_count,
        "volumes staged"
    );
    swap_in(&scratch, &paths.staging())?;
    let hash = staged.finish_hex();

    let out = paths.scratch("image");
    fresh_dir(&out)?;
    let built = match &v.config.direct_boot {
        None => build_with_ops(v, paths, &out),
        Some(db) => build_standin_initrd(v, paths, &db.initrd, &out),
    };
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&out);
        return Err(e);
    }
    let hf = out.join(HASH_FILE);
    fs::write(&hf, format!("{hash}\n")).map_err(io_err("writing", &hf))?;
    swap_in(&out, &paths.image_dir())?;
    tracing::info!(hash = %&hash[..16], elapsed_ms = t0.elapsed().as_millis() as u64, "image built");
    Ok(Image {
        boot: boot_for(v, &paths.image_dir()),
        hash,
        rebuilt: true,
    })
}

fn build_with_ops(v: &Validated, paths: &VmPaths, out: &Path) -> Result<(), BuildError> {
    let c = &v.config;
    let program = c
        .program
        .as_ref()
        .expect("validated: program set without direct_boot");
    let home = paths.ops_home();
    let dot_ops = home.join(".ops");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dot_ops)
        .map_err(io_err("creating", &dot_ops))?;
    if c.nanos_dir.is_some() {
        // With a local kernel, ops still reads latest.txt when it cannot reach
        // the network; point it at our local version name.
        let latest = dot_ops.join("latest.txt");
        fs::write(&latest, opsconfig::LOCAL_NANOS_VERSION).map_err(io_err("writing", &latest))?;
    }
    let images = dot_ops.join("images");
    let produced = images.join(opsconfig::IMAGE_NAME);
    let _ = fs::remove_file(&produced);
    // The config holds the program's env (maybe secrets): owner-only.
    let cfg_path = paths.state.join("ops-config.json");
    let cfg = serde_json::to_vec_pretty(&opsconfig::render(v)).expect("JSON value");
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&cfg_path)
        .and_then(|mut f| f.write_all(&cfg))
        .map_err(io_err("writing", &cfg_path))?;

    let t0 = Instant::now();
    let mut cmd = Command::new(&c.ops);
    die_with_parent(&mut cmd);
    let output = cmd
        .arg("build")
        .arg(program)
        .arg("-c")
        .arg(&cfg_path)
        .current_dir(paths.staging())
        .env("OPS_HOME", &home)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::OpsSpawn {
            ops: c.ops.clone(),
            source,
        })?;
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::debug!(target: "ops", "{line}");
    }
    if !output.status.success() {
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(BuildError::OpsFailed {
            status: output.status.to_string(),
            tail,
        });
    }
    if !produced.is_file() {
        return Err(BuildError::OpsNoImage(produced));
    }
    let dest = out.join(DISK_FILE);
    fs::rename(&produced, &dest).map_err(io_err("moving image to", &dest))?;
    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "ops build done"
    );
    Ok(())
}

/// A helper killed while `ops build` runs takes ops with it, so no orphaned
/// ops keeps writing into the VM's ops home while the next start builds there.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid before fork; in the child only async-signal-safe calls.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Linux stand-in: base initrd followed by an uncompressed cpio with the
/// program, its args/env/network files and the staged volume tree.
fn build_standin_initrd(
    v: &Validated,
    paths: &VmPaths,
    base: &Path,
    out: &Path,
) -> Result<(), BuildError> {
    let dest = out.join(INITRD_FILE);
    let mut data = fs::read(base).map_err(io_err("reading initrd", base))?;
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let mut w = CpioWriter::new(data);
    let wr = |e: io::Error| BuildError::Io {
        what: "writing initrd",
        path: dest.clone(),
        source: e,
    };
    w.dir("mcp", 0o755).map_err(wr)?;
    if let Some(p) = &v.config.program {
        let prog = fs::read(p).map_err(io_err("reading program", p))?;
        w.file("mcp/program", 0o755, &prog).map_err(wr)?;
    }
    for (name, content) in standin_files(v) {
        w.file(name, 0o644, content.as_bytes()).map_err(wr)?;
    }
    w.tree(&paths.staging(), "").map_err(wr)?;
    let bytes = w.finish().map_err(wr)?;
    fs::write(&dest, bytes).map_err(io_err("writing", &dest))?;
    Ok(())
}

/// ops colours its output even when it is not a terminal; the journal wants
/// plain text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            super::strip_ansi("\x1b[1;33mversion lookup failed\x1b[0m ok"),
            "version lookup failed ok"
        );
    }
}
