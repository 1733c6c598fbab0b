//! `cleanup NAME` (ExecStopPost): remove the TAP, QMP socket, pidfile and
//! launch record. Refuses while a validated QEMU still runs; safe to repeat.

use std::fs;

use anyhow::{bail, Context, Result};

use crate::config::{self, ResolvedNet};
use crate::derive;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::tap;

pub fn run(roots: &Roots, name: &str) -> Result<()> {
    let paths = VmPaths::new(roots, name);
    let recorded_tap = fs::read(paths.launch_record())
        .ok()
        .and_then(|b| serde_json::from_slice::<launch::LaunchRecord>(&b).ok())
        .and_then(|r| r.tap);
    match launch::inspect(&paths) {
        PidState::Running { pid, .. } => {
            bail!("VM {name} is still running as PID {pid}; stop it first")
        }
        PidState::Stale { pid, reason } => {
            tracing::info!(?pid, %reason, "pidfile names no live QEMU of this VM; removing it (no process signalled)");
        }
        PidState::NotRunning => {}
    }
    launch::clear(&paths).context("removing pidfile and launch record")?;
    match fs::remove_file(paths.qmp_socket()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("removing QMP socket"),
    }
    let tap_name = recorded_tap.or_else(|| match config::load_by_name(&roots.config_dir, name) {
        Ok(v) => match v.net {
            ResolvedNet::Bridge(b) => Some(b.tap),
            ResolvedNet::User { .. } => None,
        },
        Err(_) => Some(derive::tap_name(name)),
    });
    if let Some(t) = tap_name {
        if tap::remove(&t)? {
            tracing::info!(tap = %t, "TAP removed");
        }
    }
    println!("{name}: cleaned up");
    Ok(())
}
