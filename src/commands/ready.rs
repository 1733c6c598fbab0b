//! `wait-ready NAME` (the VM unit's ExecStartPost=) and `health NAME` (the
//! oneshot the health timer starts): the readiness probe from the host side
//! (src/probe.rs), remembered in root-owned records (src/health.rs).
//!
//! wait-ready: probe every 250 ms until the guest answers or
//! `readiness.timeout_secs` pass; the unit becomes active only then. A guest
//! that never answers (or a QEMU that exits first) fails the start with one
//! line naming the probe and the last error.
//!
//! health: one probe (limit `health.timeout_secs`); a success resets the
//! count, a failure increments it; at `health.failures` consecutive failures
//! it asks systemd to restart the VM (`systemctl restart --no-block`) and
//! says why, in its own journal and in the VM unit's (OBJECT_SYSTEMD_UNIT=).
//! Nothing stays resident between probes.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config;
use crate::health::{self, HealthRecord, ReadyRecord};
use crate::launch;
use crate::paths::{Roots, VmPaths};
use crate::probe::Probe;

const RETRY: Duration = Duration::from_millis(250);
const ATTEMPT_MAX: Duration = Duration::from_secs(2);

pub fn vm_unit(name: &str) -> String {
    format!("mcp-unikernel@{name}.service")
}

pub fn wait_ready(roots: &Roots, name: &str) -> Result<()> {
    let v = config::load_by_name(&roots.config_dir, name)?;
    let Some(probe) = Probe::for_vm(&v) else {
        println!("{name}: no readiness probe configured (started = QEMU running)");
        return Ok(());
    };
    let timeout = Duration::from_secs(v.config.readiness.as_ref().map_or(60, |r| r.timeout_secs));
    let paths = VmPaths::new(roots, name);
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut last = String::from("no attempt yet");
    loop {
        let Some(launch) = launch::running(&paths) else {
            bail!(
                "{name}: QEMU is not running (it exited before the guest answered {}; last error: {last})",
                probe.describe()
            );
        };
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            bail!(
                "{name}: not ready within {} s: {} never answered; last error: {last}",
                timeout.as_secs(),
                probe.describe()
            );
        }
        match probe.once(left.min(ATTEMPT_MAX)) {
            Ok(()) => {
                let after = t0.elapsed();
                let rec = ReadyRecord {
                    pid: launch.pid,
                    start_ticks: launch.start_ticks,
                    probe: probe.describe(),
                    after_ms: after.as_millis() as u64,
                    at_unix: health::now_unix(),
                };
                health::write_ready(&paths, &rec).context("writing the ready record")?;
                tracing::info!(
                    after_ms = rec.after_ms,
                    "{name}: ready after {:.2} s ({} answered)",
                    after.as_secs_f64(),
                    probe.describe()
                );
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "{name}: {} not answering yet", probe.describe());
                last = e;
            }
        }
        std::thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

pub fn health_check(roots: &Roots, name: &str, systemctl: &str) -> Result<()> {
    let v = config::load_by_name(&roots.config_dir, name)?;
    let (Some(probe), Some(h)) = (Probe::for_vm(&v), v.config.health.as_ref()) else {
        println!("{name}: no health check configured");
        return Ok(());
    };
    let paths = VmPaths::new(roots, name);
    let Some(launch) = launch::running(&paths) else {
        println!("{name}: not running; nothing to probe");
        return Ok(());
    };
    let prev = health::health_for(&paths, &launch);
    let mut rec = HealthRecord {
        pid: launch.pid,
        start_ticks: launch.start_ticks,
        failures: prev.as_ref().map_or(0, |p| p.failures),
        last_error: None,
        at_unix: health::now_unix(),
        restart_requested: prev.as_ref().is_some_and(|p| p.restart_requested),
    };
    match probe.once(Duration::from_secs(h.timeout_secs)) {
        Ok(()) => {
            if rec.failures > 0 {
                tracing::info!(
                    "{name}: healthy again ({} answered after {} failed probes)",
                    probe.describe(),
                    rec.failures
                );
            }
            rec.failures = 0;
            health::write_health(&paths, &rec).context("writing the health record")?;
            Ok(())
        }
        Err(e) => {
            rec.failures = rec.failures.saturating_add(1);
            rec.last_error = Some(e.clone());
            let restart = rec.failures >= h.failures && !rec.restart_requested;
            rec.restart_requested |= restart;
            health::write_health(&paths, &rec).context("writing the health record")?;
            if !restart {
                tracing::warn!(
                    "{name}: health probe {}/{} failed: {}: {e}",
                    rec.failures,
                    h.failures,
                    probe.describe()
                );
                return Ok(());
            }
            let unit = vm_unit(name);
            let why = format!(
                "{name}: unhealthy: {} consecutive health probes failed (last: {}: {e}); restarting {unit}",
                rec.failures,
                probe.describe()
            );
            tracing::error!("{why}");
            journal_about(&unit, 3, &why);
            let out = Command::new(systemctl)
                .args(["restart", "--no-block", &unit])
                .output()
                .with_context(|| format!("running {systemctl}"))?;
            if !out.status.success() {
                bail!(
                    "{name}: `systemctl restart --no-block {unit}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        }
    }
}

/// One message in `unit`'s journal too: journald lists a root sender's
/// OBJECT_SYSTEMD_UNIT= entries under `journalctl -u unit`. Best effort.
fn journal_about(unit: &str, priority: u8, message: &str) {
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let clean = |s: &str| s.replace('\n', " ");
    let entry = format!(
        "MESSAGE={}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=mcp-unikernel\nOBJECT_SYSTEMD_UNIT={}\n",
        clean(message),
        clean(unit)
    );
    let _ = sock.send_to(entry.as_bytes(), "/run/systemd/journal/socket");
}
