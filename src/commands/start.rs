//! `start NAME` (ExecStart): validate → lock → image (built if its inputs
//! changed, or with `--no-build` the last good one) → TAP → launch record →
//! drop privileges → exec QEMU. On success it never returns.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::config::{self, ResolvedNet, Validated};
use crate::image::{self, Image};
use crate::launch::{self, LaunchRecord, PidState};
use crate::lock::{LockError, StartLock};
use crate::paths::{Roots, VmPaths};
use crate::privs::{self, RunAs};
use crate::procinfo;
use crate::qemu;
use crate::safefs;
use crate::tap;

/// The state dir of a VM and its root, created only where missing.
pub(crate) fn ensure_state(roots: &Roots, paths: &VmPaths) -> Result<()> {
    safefs::ensure_dir(&roots.state_dir, 0o755)?;
    safefs::ensure_dir(&paths.state, 0o711)?;
    Ok(())
}

/// Take the VM's lock, saying what holds it when it is busy.
pub(crate) fn lock_vm(paths: &VmPaths, name: &str, doing: &str) -> Result<StartLock> {
    match StartLock::acquire(&paths.lock()) {
        Ok(l) => Ok(l),
        Err(LockError::Busy { .. }) => {
            let detail = match launch::inspect(paths) {
                PidState::Running { pid, .. } => format!("its QEMU is running as PID {pid}"),
                _ => "another start or build is in progress".into(),
            };
            bail!("VM {name} is already running or starting ({detail}); not {doing}")
        }
        Err(e) => Err(e.into()),
    }
}

/// Everything that can be checked without side effects.
fn preflight(roots: &Roots, name: &str) -> Result<(Validated, VmPaths, RunAs, std::path::PathBuf)> {
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
    Ok((v, paths, who, qemu_bin))
}

pub fn run(roots: &Roots, name: &str, build: bool) -> Result<std::convert::Infallible> {
    let t0 = Instant::now();
    let (v, paths, who, qemu_bin) = preflight(roots, name)?;

    ensure_state(roots, &paths)?;
    let lock = lock_vm(&paths, name, "starting a second QEMU on its disk")?;
    safefs::ensure_dir(&roots.runtime_dir, 0o755)?;
    safefs::ensure_dir(&paths.runtime, 0o711)?;
    match launch::inspect(&paths) {
        PidState::Running { pid, .. } => {
            bail!("VM {name} is already running as PID {pid}; refusing to start a second QEMU on its disk")
        }
        PidState::Stale { pid, reason } => {
            tracing::warn!(?pid, %reason, "stale runtime files from an earlier run; clearing them (no process signalled)");
        }
        PidState::NotRunning => {}
    }
    // Whatever the QEMU uid left in its runtime dir is not trusted: start afresh.
    launch::clear(&paths).context("clearing the runtime files of an earlier run")?;

    let img: Image = if build {
        image::ensure(&v, &paths, &who)?
    } else {
        let img = image::last_good(&v, &paths)?;
        image::share_with(&v, &paths, &who)?;
        img
    };
    safefs::fresh_owned_dir(&paths.runtime, "vm", who.uid, who.gid)?;

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
        uid: who.uid,
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
    // QEMU's temporary files (the snapshot overlay of the disk) go to the
    // only dir its uid may write.
    let err = Command::new(&qemu_bin)
        .arg0(&argv[0])
        .args(&argv[1..])
        .env("TMPDIR", paths.vm_dir())
        .exec();
    // Still here: exec failed. The record names us, and we can no longer
    // remove it (no longer root); `cleanup` sees a stale record.
    Err(err).with_context(|| format!("exec {}", qemu_bin.display()))
}
