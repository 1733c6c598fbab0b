//! The launch record written just before exec, and PID validation: a PID from
//! the pidfile is trusted only if that process's command line references this
//! VM's own state or runtime dir AND its start time and boot id match the
//! record. Anything else is stale: reported, its files removed, never signalled.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::paths::VmPaths;
use crate::procinfo;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaunchRecord {
    pub name: String,
    pub pid: i32,
    /// /proc/PID/stat start time (clock ticks since boot). exec keeps the PID
    /// and the start time, so the helper records its own before exec'ing QEMU.
    pub start_ticks: u64,
    pub boot_id: String,
    pub tap: Option<String>,
    pub ip: Option<String>,
    pub image_hash: String,
    pub started_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidState {
    /// No pidfile and no launch record.
    NotRunning,
    /// A validated QEMU of this VM.
    Running { pid: i32, record: LaunchRecord },
    /// The files name a process that is not (or no longer) this VM's QEMU.
    Stale { pid: Option<i32>, reason: String },
}

fn read_pidfile(p: &Path) -> io::Result<Option<i32>> {
    match fs::read_to_string(p) {
        Ok(s) => {
            s.trim().parse::<i32>().map(Some).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("not a PID: {s:?}"))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_record(p: &Path) -> io::Result<Option<LaunchRecord>> {
    match fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn write_record(paths: &VmPaths, rec: &LaunchRecord) -> io::Result<()> {
    let tmp = paths.runtime.join(".launch.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(rec)?)?;
    fs::rename(&tmp, paths.launch_record())
}

/// Does the live process `pid` belong to this VM, as recorded?
pub fn validate(pid: i32, record: &LaunchRecord, paths: &VmPaths) -> Result<(), String> {
    if pid <= 1 {
        return Err(format!("PID {pid} is not a QEMU process"));
    }
    if record.pid != pid {
        return Err(format!(
            "pidfile names PID {pid} but the launch record names PID {}",
            record.pid
        ));
    }
    if record.boot_id != procinfo::boot_id() {
        return Err(format!("PID {pid} was recorded before the last reboot"));
    }
    let ticks = procinfo::start_ticks(pid).map_err(|_| format!("PID {pid} is not alive"))?;
    if ticks != record.start_ticks {
        return Err(format!(
            "PID {pid} started at tick {ticks}, not at the recorded tick {} (PID reused)",
            record.start_ticks
        ));
    }
    let argv = procinfo::cmdline(pid).map_err(|_| format!("PID {pid} is not alive"))?;
    let state = paths.state.to_string_lossy();
    let runtime = paths.runtime.to_string_lossy();
    let refers = argv
        .iter()
        .any(|a| contains_dir(a, &state) || contains_dir(a, &runtime));
    if !refers {
        return Err(format!(
            "PID {pid} ({}) does not reference {} or {}",
            argv.first().map(String::as_str).unwrap_or("?"),
            paths.state.display(),
            paths.runtime.display()
        ));
    }
    Ok(())
}

/// `arg` mentions `dir` as a whole path component prefix (so /run/x/web does
/// not match /run/x/web2).
fn contains_dir(arg: &str, dir: &str) -> bool {
    arg.match_indices(dir).any(|(i, _)| {
        let after = &arg[i + dir.len()..];
        after.is_empty() || after.starts_with('/') || after.starts_with(',')
    })
}

/// Inspect the VM's runtime files and validate the PID they name.
pub fn inspect(paths: &VmPaths) -> PidState {
    let pidfile = read_pidfile(&paths.pidfile());
    let record = read_record(&paths.launch_record());
    let (pidfile, record) = match (pidfile, record) {
        (Err(e), _) => {
            return PidState::Stale {
                pid: None,
                reason: format!("unreadable pidfile {}: {e}", paths.pidfile().display()),
            }
        }
        (_, Err(e)) => {
            return PidState::Stale {
                pid: None,
                reason: format!(
                    "unreadable launch record {}: {e}",
                    paths.launch_record().display()
                ),
            }
        }
        (Ok(p), Ok(r)) => (p, r),
    };
    match (pidfile, record) {
        (None, None) => PidState::NotRunning,
        (Some(pid), None) => PidState::Stale {
            pid: Some(pid),
            reason: format!("pidfile names PID {pid} but there is no launch record"),
        },
        (pid, Some(rec)) => {
            // QEMU writes its pidfile shortly after exec; until then the record's PID stands.
            let pid = pid.unwrap_or(rec.pid);
            match validate(pid, &rec, paths) {
                Ok(()) => PidState::Running { pid, record: rec },
                Err(reason) => PidState::Stale {
                    pid: Some(pid),
                    reason,
                },
            }
        }
    }
}

/// Remove the pidfile and launch record (never touches any process).
pub fn clear(paths: &VmPaths) -> io::Result<()> {
    for p in [paths.pidfile(), paths.launch_record()] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_match_is_component_aware() {
        assert!(contains_dir(
            "unix:/run/m/web/qmp.sock,server=on",
            "/run/m/web"
        ));
        assert!(contains_dir(
            "file=/var/lib/m/web,format=raw",
            "/var/lib/m/web"
        ));
        assert!(!contains_dir("unix:/run/m/web2/qmp.sock", "/run/m/web"));
    }
}
