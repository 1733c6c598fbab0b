//! What `wait-ready` and `health` remember, for `status` and for counting
//! consecutive failures: two root-owned files in the VM's root-owned runtime
//! dir (`ready.json`, `health.json`, 0600, written with O_EXCL|O_NOFOLLOW
//! on a temp name, then renamed). Each names the QEMU it is about (PID and
//! /proc start time of the launch record), so a record of an earlier run
//! never counts for the current one. systemd removes the runtime dir when the
//! VM stops (RuntimeDirectory=), so a restart starts counting from zero.

use serde::{Deserialize, Serialize};

use crate::launch::LaunchRecord;
use crate::paths::VmPaths;
use crate::safefs;

pub const READY_FILE: &str = "ready.json";
pub const HEALTH_FILE: &str = "health.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadyRecord {
    pub pid: i32,
    pub start_ticks: u64,
    pub probe: String,
    pub after_ms: u64,
    pub at_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthRecord {
    pub pid: i32,
    pub start_ticks: u64,
    /// Consecutive failed probes (0 after a success).
    pub failures: u32,
    pub last_error: Option<String>,
    pub at_unix: u64,
    /// A restart was requested for this QEMU (not asked again).
    pub restart_requested: bool,
}

/// The state `status` shows for a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// QEMU runs, the readiness probe has not answered yet.
    Starting,
    /// Answered (or no probe: started = QEMU running).
    Ready,
    /// The last health probe failed.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Ready => "ready",
            Health::Unhealthy => "unhealthy",
        }
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read<T: for<'de> Deserialize<'de>>(paths: &VmPaths, file: &str) -> Option<T> {
    let bytes = safefs::read_untrusted(&paths.runtime, file, 16 * 1024)
        .ok()
        .flatten()?;
    serde_json::from_slice(&bytes).ok()
}

fn write<T: Serialize>(paths: &VmPaths, file: &str, rec: &T) -> Result<(), safefs::SafeFsError> {
    let bytes = serde_json::to_vec_pretty(rec).expect("a record serialises");
    safefs::write_private(&paths.runtime, file, &bytes, 0o600)
}

/// The ready record, if it is about the QEMU of `launch`.
pub fn ready_for(paths: &VmPaths, launch: &LaunchRecord) -> Option<ReadyRecord> {
    read::<ReadyRecord>(paths, READY_FILE)
        .filter(|r| r.pid == launch.pid && r.start_ticks == launch.start_ticks)
}

pub fn write_ready(paths: &VmPaths, rec: &ReadyRecord) -> Result<(), safefs::SafeFsError> {
    write(paths, READY_FILE, rec)
}

/// The health record, if it is about the QEMU of `launch`.
pub fn health_for(paths: &VmPaths, launch: &LaunchRecord) -> Option<HealthRecord> {
    read::<HealthRecord>(paths, HEALTH_FILE)
        .filter(|r| r.pid == launch.pid && r.start_ticks == launch.start_ticks)
}

pub fn write_health(paths: &VmPaths, rec: &HealthRecord) -> Result<(), safefs::SafeFsError> {
    write(paths, HEALTH_FILE, rec)
}

/// Remove both records (cleanup, holding the VM's lock).
pub fn clear(paths: &VmPaths) {
    for f in [READY_FILE, HEALTH_FILE] {
        let _ = std::fs::remove_file(paths.runtime.join(f));
    }
}

/// `status`'s word for a running VM with the given launch record.
pub fn state(
    paths: &VmPaths,
    launch: &LaunchRecord,
    has_probe: bool,
) -> (Health, Option<HealthRecord>) {
    if !has_probe {
        return (Health::Ready, None);
    }
    if ready_for(paths, launch).is_none() {
        return (Health::Starting, None);
    }
    match health_for(paths, launch) {
        Some(h) if h.failures > 0 => (Health::Unhealthy, Some(h)),
        other => (Health::Ready, other),
    }
}
