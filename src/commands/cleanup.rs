//! `cleanup NAME` (ExecStopPost): remove the TAP, QEMU's runtime dir (QMP
//! socket, pidfile, overlay) and the launch record. Holds the VM's lock, so
//! it refuses while QEMU (which holds the lock) or a start still runs; safe to
//! repeat. What it removes comes from root-owned files only: the TAP name from
//! the config (or the root-owned launch record when the config is gone), and
//! a TAP is removed only when it is owned by this VM's uid.

use anyhow::{Context, Result};

use crate::commands::start::lock_vm;
use crate::config;
use crate::derive;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::privs;
use crate::tap;

pub fn run(roots: &Roots, name: &str) -> Result<()> {
    let paths = VmPaths::new(roots, name);
    if !paths.state.exists() && !paths.runtime.exists() {
        println!("{name}: nothing to clean up");
        return Ok(());
    }
    let _lock = if paths.state.exists() {
        Some(lock_vm(&paths, name, "cleaning up")?)
    } else {
        None
    };
    let record = launch::read_record(&paths).ok().flatten();
    match launch::inspect(&paths) {
        PidState::Running { pid, .. } => {
            anyhow::bail!("VM {name} is still running as PID {pid}; stop it first")
        }
        PidState::Stale { pid, reason } => {
            tracing::info!(?pid, %reason, "runtime files name no live QEMU of this VM; removing them (no process signalled)");
        }
        PidState::NotRunning => {}
    }
    // TAP name and owner: the config when it is there, else the record
    // (root-owned), else the derived name with the record's uid.
    let (tap_name, uid) = match config::load_by_name(&roots.config_dir, name) {
        Ok(v) => {
            let uid = privs::resolve(&v.config.qemu_user, &v.config.qemu_group)
                .ok()
                .map(|w| w.uid)
                .or(record.as_ref().map(|r| r.uid));
            (v.tap().map(str::to_owned), uid)
        }
        Err(_) => (
            record
                .as_ref()
                .and_then(|r| r.tap.clone())
                .or_else(|| Some(derive::tap_name(name))),
            record.as_ref().map(|r| r.uid),
        ),
    };
    launch::clear(&paths).context("removing QEMU's runtime files and the launch record")?;
    if let Some(t) = tap_name {
        match tap::remove_if_owned(&t, uid)? {
            tap::Removal::Removed => tracing::info!(tap = %t, "TAP removed"),
            tap::Removal::Absent => {}
            tap::Removal::NotOurs(owner) => tracing::warn!(
                tap = %t,
                owner = ?owner,
                "TAP is not owned by this VM's uid; left alone"
            ),
        }
    }
    println!("{name}: cleaned up");
    Ok(())
}
