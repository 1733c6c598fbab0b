//! The VM's image: skipped when the content hash of every input equals the
//! last good build's; otherwise the volumes, the program and the libraries it
//! needs are staged into a scratch tree, swapped in whole, and a new image is
//! built into a scratch dir that replaces the last good one only when
//! complete (atomic directory exchange). The image dir and file are
//! root-owned and readable by the VM's group: QEMU opens the disk read-only
//! with a throwaway overlay (`snapshot=on`), so nothing the guest writes
//! survives a restart.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::Validated;
use crate::credentials::{self, CredError, Credentials};
use crate::digests::DigestCache;
use crate::inputs::InputHasher;
use crate::opsbuild::{self, OpsSandbox};
use crate::opsconfig;
use crate::paths::VmPaths;
use crate::privs::RunAs;
use crate::progstage::{self, ProgramError, ProgramFiles};
use crate::qemu::Boot;
use crate::staging::{self, StageError};
use crate::standin;

pub const HASH_FILE: &str = "inputs.hash";
pub const DISK_FILE: &str = "disk.img";
pub const INITRD_FILE: &str = "initrd.img";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Program(#[from] ProgramError),
    #[error(transparent)]
    Credentials(#[from] CredError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot run ops ({ops}): {source}")]
    OpsSpawn { ops: String, source: io::Error },
    #[error(
        "field `ops` = {ops:?}: ops reports version {found}; this helper drives ops {supported}"
    )]
    OpsVersion {
        ops: String,
        found: String,
        supported: &'static str,
    },
    #[error("`ops build` failed ({status}); last output:\n{tail}")]
    OpsFailed { status: String, tail: String },
    #[error("`ops build` succeeded but left no usable image at {path}: {reason}")]
    OpsNoImage { path: PathBuf, reason: String },
    #[error("no image built yet at {0} (run `mcp-unikernel build` first)")]
    NoImage(PathBuf),
}

pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BuildError + 'a {
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

/// Where a command name resolves on PATH.
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

/// Everything but the volumes: the program and what it needs, the
/// generated config, kernel files, the ops binary's identity. The large
/// read-only Nanos/kernel files go through the digest cache.
fn base_inputs(
    v: &Validated,
    program: Option<&ProgramFiles>,
    cache: &mut DigestCache,
) -> Result<InputHasher, BuildError> {
    let c = &v.config;
    let mut h = InputHasher::new();
    let mut file = |h: &mut InputHasher, tag: &str, p: &Path, what: &'static str| {
        let (len, digest, _) = cache.digest(p).map_err(io_err(what, p))?;
        h.file_digest(tag, len, &digest);
        Ok::<(), BuildError>(())
    };
    if let Some(p) = program {
        p.hash_into(&mut h);
    }
    crate::guestfiles::hash_into(v, &mut h);
    h.field("volume-limit", &c.volume_limit_mib.to_le_bytes());
    match &c.direct_boot {
        Some(db) => {
            h.field("mode", b"direct-boot (Linux stand-in)");
            for (name, content) in standin::files(v) {
                h.field(name, content.as_bytes());
            }
            file(&mut h, "kernel", &db.kernel, "reading kernel")?;
            file(&mut h, "initrd", &db.initrd, "reading initrd")?;
        }
        None => {
            h.field("mode", b"nanos (ops build, placeholder program)");
            let ops_cfg = opsconfig::render(v, &[]);
            h.field("ops-config", ops_cfg.to_string().as_bytes());
            match resolve_command(&c.ops)
                .map(|p| fs::canonicalize(&p).and_then(|c| fs::metadata(&c).map(|m| (c, m))))
            {
                Some(Ok((canon, m))) => {
                    h.field("ops-path", canon.as_os_str().as_bytes());
                    h.field("ops-size", &m.len().to_le_bytes());
                    h.field("ops-mtime", &m.mtime().to_le_bytes());
                }
                _ => h.field("ops-path", c.ops.as_bytes()),
            }
            match &c.nanos_dir {
                Some(dir) => {
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
                None => h.field("nanos", b"downloaded by ops (unpinned)"),
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

/// The last good image as it is, without looking at the inputs (the unit's
/// build instance has just made sure it is current).
pub fn last_good(v: &Validated, paths: &VmPaths) -> Result<Image, BuildError> {
    let hash = current_hash(v, paths).ok_or_else(|| BuildError::NoImage(paths.image_dir()))?;
    Ok(Image {
        boot: boot_for(v, &paths.image_dir()),
        hash,
        rebuilt: false,
    })
}

/// Give the image to the VM's group: dir 0750, artifact 0640, both root-owned.
pub fn share_with(v: &Validated, paths: &VmPaths, who: &RunAs) -> Result<(), BuildError> {
    let dir = paths.image_dir();
    let art = artifact(v, &dir);
    for (p, mode) in [(&dir, 0o750), (&art, 0o640)] {
        if who.switch {
            std::os::unix::fs::lchown(p, Some(0), Some(who.gid)).map_err(io_err("chown", p))?;
        }
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", p))?;
    }
    Ok(())
}

/// Remove scratch dirs left by a start that died (we hold the start lock).
fn remove_scratch(paths: &VmPaths) -> Result<(), BuildError> {
    let Ok(entries) = fs::read_dir(&paths.state) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("staging.tmp-")
            || name.starts_with("image.tmp-")
            || name.starts_with("build.tmp-")
        {
            tracing::info!(path = %e.path().display(), "removing scratch dir left by an interrupted start");
            fs::remove_dir_all(e.path()).map_err(io_err("removing", &e.path()))?;
        }
    }
    Ok(())
}

/// Put `new` in place of `current` atomically; the old content ends up at
/// `new` (removed afterwards). When `current` does not exist it is a rename.
fn swap_in(new: &Path, current: &Path) -> Result<(), BuildError> {
    if current.exists() {
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            new,
            nix::fcntl::AT_FDCWD,
            current,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| BuildError::Io {
            what: "exchanging",
            path: current.to_owned(),
            source: e.into(),
        })?;
        fs::remove_dir_all(new).map_err(io_err("removing old", new))?;
    } else {
        fs::rename(new, current).map_err(io_err("renaming into", current))?;
    }
    Ok(())
}

fn fresh_dir(p: &Path, mode: u32) -> Result<(), BuildError> {
    if p.exists() {
        fs::remove_dir_all(p).map_err(io_err("removing", p))?;
    }
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .map_err(io_err("creating", p))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err("setting mode of", p))
}

fn stage_options(v: &Validated, who: &RunAs) -> staging::StageOptions {
    staging::StageOptions {
        limit_bytes: v.volume_limit_bytes(),
        group: who.switch.then_some(who.gid),
    }
}

/// Make sure a good image for the current inputs exists; build it if not.
pub fn ensure(v: &Validated, paths: &VmPaths, who: &RunAs) -> Result<Image, BuildError> {
    let t0 = Instant::now();
    remove_scratch(paths)?;
    let nanos = v.config.direct_boot.is_none();
    let program = match &v.config.program {
        Some(p) => Some(progstage::load(p, nanos)?),
        None => None,
    };
    // Credentials first: a missing one fails the build even when the image
    // is current (its keyed digests are inputs; src/credentials.rs).
    let creds = credentials::for_build(v, paths, who)?;
    let mut cache = DigestCache::load(&paths.input_digests());
    let mut base = base_inputs(v, program.as_ref(), &mut cache)?;
    credentials::hash_into(creds.as_ref(), &mut base);
    if let Err(e) = cache.save() {
        // Only a cache: the next start reads the files again.
        tracing::warn!(error = %e, "cannot save the input digest cache");
    }
    let opts = stage_options(v, who);
    let mut check = base.clone();
    staging::walk_volumes(&v.config.volumes, &mut check, None, &opts)?;
    let hash = check.finish_hex();
    if current_hash(v, paths).as_deref() == Some(hash.as_str()) {
        credentials::record(creds.as_ref(), paths)?;
        tracing::info!(hash = %&hash[..16], elapsed_ms = t0.elapsed().as_millis() as u64, "inputs unchanged; reusing the last good image");
        return Ok(Image {
            boot: boot_for(v, &paths.image_dir()),
            hash,
            rebuilt: false,
        });
    }

    let ops = match nanos {
        true => Some(prepare_ops(v, paths, who)?),
        false => None,
    };
    let files = (program.as_ref(), creds.as_ref());
    let result = stage_and_build(v, paths, who, files, base, &opts, ops.as_ref());
    if let Some(run) = &ops {
        let _ = fs::remove_dir_all(&run.scratch);
    }
    let hash = result?;
    credentials::record(creds.as_ref(), paths)?;
    tracing::info!(hash = %&hash[..16], elapsed_ms = t0.elapsed().as_millis() as u64, "image built");
    Ok(Image {
        boot: boot_for(v, &paths.image_dir()),
        hash,
        rebuilt: true,
    })
}

fn stage_and_build(
    v: &Validated,
    paths: &VmPaths,
    who: &RunAs,
    (program, creds): (Option<&ProgramFiles>, Option<&Credentials>),
    base: InputHasher,
    opts: &staging::StageOptions,
    ops: Option<&OpsRun>,
) -> Result<String, BuildError> {
    let nanos = ops.is_some();
    // Stage into scratch, hashing exactly what is copied.
    let scratch = paths.scratch("staging");
    fresh_dir(&scratch, 0o750)?;
    if who.switch {
        std::os::unix::fs::lchown(&scratch, Some(0), Some(who.gid))
            .map_err(io_err("chown", &scratch))?;
    }
    let mut staged = base;
    let staged_ok = staging::walk_volumes(&v.config.volumes, &mut staged, Some(&scratch), opts)
        .map_err(BuildError::from)
        .and_then(|report| {
            if let (true, Some(p)) = (nanos, program) {
                p.stage(&scratch, opts.group)?;
            }
            crate::guestfiles::stage(v, &scratch, opts.group)
                .map_err(io_err("staging /etc/resolv.conf into", &scratch))?;
            if let (true, Some(c)) = (nanos, creds) {
                c.stage(&scratch, opts.group)?;
            }
            Ok(report)
        });
    let report = match staged_ok {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    tracing::info!(
        files = report.files,
        bytes = report.bytes,
        skipped = report.skipped.len(),
        "volumes staged"
    );
    swap_in(&scratch, &paths.staging())?;
    let hash = staged.finish_hex();

    let out = paths.scratch("image");
    fresh_dir(&out, 0o700)?;
    let dest = artifact(v, &out);
    let built = match (&v.config.direct_boot, ops) {
        (None, Some(run)) => build_with_ops(v, paths, who, run, &dest),
        (None, None) => unreachable!("ops is prepared for every Nanos build"),
        (Some(db), _) => standin::build_initrd(
            v,
            program.map(|p| p.bytes.as_slice()),
            &paths.staging(),
            &db.initrd,
            &dest,
            creds,
        ),
    };
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&out);
        return Err(e);
    }
    let hf = out.join(HASH_FILE);
    fs::write(&hf, format!("{hash}\n")).map_err(io_err("writing", &hf))?;
    swap_in(&out, &paths.image_dir())?;
    share_with(v, paths, who)?;
    Ok(hash)
}

/// The top-level entries of the staging tree ops is told to copy (the
/// placeholder's dir is added by ops itself as the program).
fn staged_dirs(staging: &Path) -> Result<Vec<String>, BuildError> {
    let reserved = opsconfig::RESERVED_GUEST_DIR.trim_start_matches('/');
    let mut dirs: Vec<String> = fs::read_dir(staging)
        .map_err(io_err("reading", staging))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != reserved)
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// ops, checked and given its home, before anything is staged: an ops the
/// helper cannot drive is refused with no side effects.
struct OpsRun<'a> {
    ops: PathBuf,
    scratch: PathBuf,
    home: PathBuf,
    sb: OpsSandbox<'a>,
}

fn prepare_ops<'a>(
    v: &Validated,
    paths: &VmPaths,
    who: &'a RunAs,
) -> Result<OpsRun<'a>, BuildError> {
    let c = &v.config;
    let ops = resolve_command(&c.ops).ok_or_else(|| BuildError::OpsSpawn {
        ops: c.ops.clone(),
        source: io::Error::new(io::ErrorKind::NotFound, "not found on PATH"),
    })?;
    let local_nanos = c.nanos_dir.is_some();
    // ops only needs the network to download a Nanos kernel.
    let sb = OpsSandbox {
        who,
        unshare_net: local_nanos && !opsbuild::netns_is_private(),
    };
    let scratch = paths.scratch("build");
    fresh_dir(&scratch, 0o711)?;
    let prepared = (|| {
        let home = if local_nanos {
            opsbuild::fresh_home(&scratch, who, true)?
        } else {
            // Downloads are kept between builds in the VM's own ops home.
            let cache = paths.ops_cache();
            if !cache.exists() {
                opsbuild::fresh_home(&paths.state, who, false)?;
            }
            cache
        };
        let version = opsbuild::check_version(&ops, &home, &scratch, &sb)?;
        tracing::info!(ops = %ops.display(), %version, "ops version supported");
        Ok(home)
    })();
    match prepared {
        Ok(home) => Ok(OpsRun {
            ops,
            scratch,
            home,
            sb,
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            Err(e)
        }
    }
}

fn build_with_ops(
    v: &Validated,
    paths: &VmPaths,
    who: &RunAs,
    run: &OpsRun,
    dest: &Path,
) -> Result<(), BuildError> {
    // Readable by the VM's group only: it holds the program's env.
    let cfg_path = run.scratch.join("ops-config.json");
    let cfg = serde_json::to_vec_pretty(&opsconfig::render(v, &staged_dirs(&paths.staging())?))
        .expect("JSON value");
    crate::safefs::write_private(&run.scratch, "ops-config.json", &cfg, 0o640).map_err(|e| {
        BuildError::Io {
            what: "writing",
            path: cfg_path.clone(),
            source: io::Error::other(e.to_string()),
        }
    })?;
    if who.switch {
        std::os::unix::fs::lchown(&cfg_path, None, Some(who.gid))
            .map_err(io_err("chown", &cfg_path))?;
    }
    opsbuild::build(v, paths, &run.ops, &run.home, &cfg_path, &run.sb, dest)
}
