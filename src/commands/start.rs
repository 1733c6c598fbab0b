//! `start NAME` (ExecStart): validate → lock → image (cached or built) → TAP
//! → launch record → drop privileges → exec QEMU. On success it never returns.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::config::{self, ResolvedNet};
use crate::image;
use crate::launch::{self, LaunchRecord, PidState};
use crate::lock::{LockError, StartLock};
use crate::paths::{Roots, VmPaths};
use crate::privs;
use crate::procinfo;
use crate::qemu;
use crate::tap;

pub(crate) fn ensure_dir(p: &Path, mode: u32) -> Result<()> {
    if !p.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(p)
            .with_context(|| format!("creating {}", p.display()))?;
    }
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", p.display()))
}

fn chown(p: &Path, who: &privs::RunAs) -> Result<()> {
    if who.switch {
        std::os::unix::fs::chown(p, Some(who.uid), Some(who.gid))
            .with_context(|| format!("chown {} to {}", p.display(), who.user))?;
    }
    Ok(())
}

pub fn run(roots: &Roots, name: &str) -> Result<std::convert::Infallible> {
    let t0 = Instant::now();
    // Everything that can be checked without side effects comes first.
    let v = config::load_by_name(&roots.config_dir, name)?;
    config::check_conflicts(&roots.config_dir, &v)?;
    let paths = VmPaths::new(roots, name);
    let who = privs::resolve(&v.config.qemu_user, &v.config.qemu_group)?;
    if let ResolvedNet::Bridge(b) = &v.net {
        tap::check_bridge(&b.bridge)?;
    }
    let sock = paths.qmp_socket();
    if sock.as_os_str().len() >= 108 {
        bail!(
            "runtime dir {} is too deep: the QMP socket path {} has {} bytes, unix sockets allow 107",
            roots.runtime_dir.display(),
            sock.display(),
            sock.as_os_str().len()
        );
    }
    let qemu_bin = image::resolve_command(&v.config.qemu)
        .with_context(|| format!("field `qemu` = {:?}: not found on PATH", v.config.qemu))?;

    ensure_dir(&roots.state_dir, 0o755)?;
    ensure_dir(&roots.runtime_dir, 0o755)?;
    ensure_dir(&paths.state, 0o711)?;
    let lock = match StartLock::acquire(&paths.lock()) {
        Ok(l) => l,
        Err(LockError::Busy { .. }) => {
            let detail = match launch::inspect(&paths) {
                PidState::Running { pid, .. } => format!("its QEMU is running as PID {pid}"),
                _ => "another start is in progress".into(),
            };
            bail!("VM {name} is already running or starting: {detail}");
        }
        Err(e) => return Err(e.into()),
    };
    ensure_dir(&paths.runtime, 0o700)?;
    chown(&paths.runtime, &who)?;

    match launch::inspect(&paths) {
        PidState::Running { pid, .. } => {
            bail!("VM {name} is already running as PID {pid}; refusing to start a second QEMU on its disk")
        }
        PidState::Stale { pid, reason } => {
            tracing::warn!(?pid, %reason, "stale pidfile from an earlier run; clearing it (no process signalled)");
            launch::clear(&paths).context("clearing stale pidfile")?;
        }
        PidState::NotRunning => {}
    }
    let _ = fs::remove_file(paths.qmp_socket());

    let img = image::ensure(&v, &paths)?;
    let image_dir = paths.image_dir();
    fs::set_permissions(&image_dir, fs::Permissions::from_mode(0o711))
        .with_context(|| format!("setting mode of {}", image_dir.display()))?;
    match &img.boot {
        qemu::Boot::Disk(p) | qemu::Boot::Direct { initrd: p, .. } => {
            fs::set_permissions(p, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("setting mode of {}", p.display()))?;
            chown(p, &who)?;
        }
    }

    let (tap_name, ip) = match &v.net {
        ResolvedNet::Bridge(b) => {
            let outcome = tap::ensure(&b.tap, who.uid, who.gid)?;
            if let Err(e) = tap::attach_isolated(&b.tap, &b.bridge) {
                if outcome == tap::TapOutcome::Created {
                    let _ = tap::remove(&b.tap);
                }
                return Err(e.into());
            }
            tracing::info!(tap = %b.tap, bridge = %b.bridge, ?outcome, "TAP attached as isolated bridge port");
            (Some(b.tap.clone()), Some(b.ip.to_string()))
        }
        ResolvedNet::User { .. } => (None, None),
    };

    let argv = qemu::argv(&v, &paths, &img.boot);
    let me = std::process::id() as i32;
    let record = LaunchRecord {
        name: name.to_owned(),
        pid: me,
        start_ticks: procinfo::start_ticks(me).context("reading own start time")?,
        boot_id: procinfo::boot_id(),
        tap: tap_name,
        ip,
        image_hash: img.hash.clone(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    launch::write_record(&paths, &record).context("writing launch record")?;
    lock.inherit_across_exec()
        .context("keeping the start lock across exec")?;
    tracing::info!(
        pid = me,
        user = %who.user,
        rebuilt = img.rebuilt,
        prep_us = t0.elapsed().as_micros() as u64,
        "exec {}",
        argv.join(" ")
    );
    privs::drop_to(&who)?;
    let err = Command::new(&qemu_bin)
        .arg0(&argv[0])
        .args(&argv[1..])
        .exec();
    // Still here: exec failed. The launch record names us; remove it.
    let _ = launch::clear(&paths);
    Err(err).with_context(|| format!("exec {}", qemu_bin.display()))
}
