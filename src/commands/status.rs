//! `status [NAME]` and `list`: which VMs run, from validated PIDs only.
//! Read-only: a stale pidfile is reported, never removed (only `start` and
//! `cleanup`, holding the VM's lock, clear stale files).

use std::collections::BTreeSet;
use std::fs;

use anyhow::Result;
use serde::Serialize;

use crate::config::{self, ResolvedNet};
use crate::health;
use crate::image;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::procinfo;

#[derive(Debug, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub running: bool,
    pub pid: Option<i32>,
    pub ip: Option<String>,
    pub tap: Option<String>,
    pub uptime_secs: Option<u64>,
    pub image_hash: Option<String>,
    /// Set when the runtime files name a process that is not this VM's
    /// QEMU (left as they are; `cleanup` removes them).
    pub stale: Option<String>,
    pub config_error: Option<String>,
    /// The config is gone but state or runtime files are left (`on_remove =
    /// "keep"`, or not purged yet): `mcp-unikernel purge NAME` removes them.
    pub removed: bool,
    /// Running VMs: `starting` (its readiness probe has not answered yet),
    /// `ready` (answered, or no probe: started = QEMU running) or
    /// `unhealthy` (its last health probe failed). Null when not running.
    pub health: Option<health::Health>,
    /// Consecutive failed health probes of the running QEMU.
    pub health_failures: Option<u32>,
    pub last_probe_error: Option<String>,
}

pub fn one(roots: &Roots, name: &str) -> VmStatus {
    let paths = VmPaths::new(roots, name);
    let cfg = config::load_by_name(&roots.config_dir, name);
    let (mut ip, mut tap, config_error) = match &cfg {
        Ok(v) => match &v.net {
            ResolvedNet::Bridge(b) => (Some(b.ip.to_string()), Some(b.tap.clone()), None),
            ResolvedNet::User { .. } => (None, None, None),
        },
        Err(e) => (None, None, Some(e.to_string())),
    };
    let mut st = VmStatus {
        name: name.to_owned(),
        running: false,
        pid: None,
        ip: None,
        tap: None,
        uptime_secs: None,
        image_hash: cfg
            .as_ref()
            .ok()
            .and_then(|v| image::current_hash(v, &paths)),
        stale: None,
        removed: crate::commands::purge::config_removed(roots, name),
        config_error,
        health: None,
        health_failures: None,
        last_probe_error: None,
    };
    let has_probe = cfg.as_ref().is_ok_and(|v| v.config.readiness.is_some());
    match launch::inspect(&paths) {
        PidState::Running { pid, record } => {
            st.running = true;
            st.pid = Some(pid);
            ip = record.ip.clone().or(ip);
            tap = record.tap.clone().or(tap);
            st.image_hash = Some(record.image_hash.clone());
            let (h, rec) = health::state(&paths, &record, has_probe);
            st.health = Some(h);
            st.health_failures = rec.as_ref().map(|r| r.failures);
            st.last_probe_error = rec.and_then(|r| r.last_error);
            st.uptime_secs = procinfo::uptime_secs().map(|up| {
                let started = record.start_ticks as f64 / procinfo::ticks_per_second() as f64;
                (up - started).max(0.0) as u64
            });
        }
        PidState::Stale { reason, .. } => {
            st.stale = Some(reason);
        }
        PidState::NotRunning => {}
    }
    st.ip = ip;
    st.tap = tap;
    st
}

/// Every VM with a config, a state dir or a runtime dir.
pub fn names(roots: &Roots) -> Vec<String> {
    let mut set = BTreeSet::new();
    if let Ok(rd) = fs::read_dir(&roots.config_dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".json") {
                set.insert(stem.to_owned());
            }
        }
    }
    for dir in [&roots.state_dir, &roots.runtime_dir] {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    set.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    set.into_iter().collect()
}

fn fmt_uptime(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn print(list: &[VmStatus], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<20} {:<9} {:>8} {:<15} {:<15} {:>8} {:<12}",
        "NAME", "STATE", "HEALTH", "PID", "IP", "TAP", "UPTIME", "IMAGE"
    );
    for s in list {
        let state = if s.running {
            "running"
        } else if s.removed {
            "removed (state kept)"
        } else if s.stale.is_some() {
            "stale"
        } else {
            "stopped"
        };
        println!(
            "{:<20} {:<20} {:<9} {:>8} {:<15} {:<15} {:>8} {:<12}",
            s.name,
            state,
            s.health.map(|h| h.as_str()).unwrap_or("-"),
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s.ip.as_deref().unwrap_or("-"),
            s.tap.as_deref().unwrap_or("-"),
            s.uptime_secs.map(fmt_uptime).unwrap_or_else(|| "-".into()),
            s.image_hash
                .as_deref()
                .map(|h| &h[..h.len().min(12)])
                .unwrap_or("-"),
        );
        if let Some(r) = &s.stale {
            println!(
                "  stale runtime files (not removed; `mcp-unikernel cleanup {}` removes them): {r}",
                s.name
            );
        }
        if let (Some(n), Some(e)) = (s.health_failures.filter(|n| *n > 0), &s.last_probe_error) {
            println!("  {n} consecutive health probes failed, last: {e}");
        }
        if s.removed {
            println!(
                "  no config any more; `mcp-unikernel purge {}` removes its state, runtime dir and TAP",
                s.name
            );
        } else if let Some(e) = &s.config_error {
            println!("  config: {e}");
        }
    }
    Ok(())
}
