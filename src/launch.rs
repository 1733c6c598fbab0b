//! The launch record written just before exec, and PID validation: a PID is
//! trusted only if that process runs as the VM's uid, its command line
//! references this VM's own state or runtime dir, and its start time matches
//! the record. (The boot id is recorded but not compared: in a container,
//! `ProtectKernelTunables=` shows the unit another boot id than the rest of
//! the container sees, so a live VM would look stale from outside its unit.
//! A reboot clears the runtime dir, and a reused PID has another start time.) Anything else is stale: reported, never
//! signalled. Inspecting changes nothing; only `start` and `cleanup`, holding
//! the VM's lock, clear stale files (`clear`).
//!
//! The record is root-owned in the root-owned runtime dir (`launch.json`);
//! the pidfile is QEMU's (`vm/qemu.pid`, in the dir the QEMU uid controls) and
//! read as untrusted input.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::paths::VmPaths;
use crate::procinfo;
use crate::safefs;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaunchRecord {
    pub name: String,
    pub pid: i32,
    /// /proc/PID/stat start time (clock ticks since boot). exec keeps the PID
    /// and the start time, so the helper records its own before exec'ing QEMU.
    pub start_ticks: u64,
    pub boot_id: String,
    /// The uid QEMU runs as (and owns the TAP).
    pub uid: u32,
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

fn read_pidfile(paths: &VmPaths) -> Result<Option<i32>, String> {
    let bytes = safefs::read_untrusted(&paths.vm_dir(), "qemu.pid", 32)
        .map_err(|e| format!("unusable pidfile: {e}"))?;
    let Some(bytes) = bytes else { return Ok(None) };
    let s = String::from_utf8_lossy(&bytes);
    s.trim()
        .parse::<i32>()
        .map(Some)
        .map_err(|_| format!("pidfile {} holds no PID: {s:?}", paths.pidfile().display()))
}

/// The launch record (root-owned; a missing one is None).
pub fn read_record(paths: &VmPaths) -> io::Result<Option<LaunchRecord>> {
    let p = paths.launch_record();
    let bytes = match safefs::read_untrusted(&paths.runtime, "launch.json", 64 * 1024) {
        Ok(b) => b,
        Err(safefs::SafeFsError::Io { source, .. }) => return Err(source),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    };
    let Some(bytes) = bytes else { return Ok(None) };
    // Written by root only: anything else is not ours.
    let owner = fs::symlink_metadata(&p)?.uid();
    if owner != 0 && owner != nix::unistd::Uid::effective().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is owned by uid {owner}, not by root", p.display()),
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn write_record(paths: &VmPaths, rec: &LaunchRecord) -> Result<(), safefs::SafeFsError> {
    let bytes = serde_json::to_vec_pretty(rec).expect("a record serialises");
    safefs::write_private(&paths.runtime, "launch.json", &bytes, 0o600)
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
    let ticks = procinfo::start_ticks(pid).map_err(|_| format!("PID {pid} is not alive"))?;
    if ticks != record.start_ticks {
        return Err(format!(
            "PID {pid} started at tick {ticks}, not at the recorded tick {} (PID reused)",
            record.start_ticks
        ));
    }
    let uid = fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .map_err(|_| format!("PID {pid} is not alive"))?;
    if uid != record.uid {
        return Err(format!(
            "PID {pid} runs as uid {uid}, not as the VM's uid {}",
            record.uid
        ));
    }
    let argv = procinfo::cmdline(pid).map_err(|_| format!("PID {pid} is not alive"))?;
    let state = paths.state.to_string_lossy();
    let runtime = paths.runtime.to_string_lossy();
    let escaped = |s: &str| s.replace(',', ",,");
    let refers = argv.iter().any(|a| {
        contains_dir(a, &state)
            || contains_dir(a, &runtime)
            || contains_dir(a, &escaped(&state))
            || contains_dir(a, &escaped(&runtime))
    });
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

/// Inspect the VM's runtime files and validate the PID they name. Read-only.
/// The root-owned record is authoritative: it names the PID that exec'd
/// QEMU. QEMU's pidfile (written by the QEMU uid, so untrusted) is only
/// compared with it: a pidfile naming another PID is logged, never followed.
pub fn inspect(paths: &VmPaths) -> PidState {
    let record = match read_record(paths) {
        Ok(r) => r,
        Err(e) => {
            return PidState::Stale {
                pid: None,
                reason: format!(
                    "unreadable launch record {}: {e}",
                    paths.launch_record().display()
                ),
            }
        }
    };
    let pidfile = read_pidfile(paths);
    match (pidfile, record) {
        (Ok(None), None) => PidState::NotRunning,
        (Ok(Some(pid)), None) => PidState::Stale {
            pid: Some(pid),
            reason: format!("pidfile names PID {pid} but there is no launch record"),
        },
        (Err(reason), None) => PidState::Stale { pid: None, reason },
        (pidfile, Some(rec)) => {
            let pid = rec.pid;
            match pidfile {
                Ok(Some(p)) if p != pid => {
                    tracing::warn!(
                        pidfile = p,
                        record = pid,
                        "QEMU's pidfile disagrees with the launch record; trusting the record"
                    )
                }
                Err(reason) => {
                    tracing::warn!(%reason, "QEMU's pidfile is unusable; trusting the launch record")
                }
                // QEMU writes its pidfile shortly after exec; until then the record stands.
                _ => {}
            }
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

/// The validated record of the running QEMU from the root-owned record
/// alone, without QEMU's pidfile (which `inspect` compares and warns about):
/// for callers without CAP_DAC_OVERRIDE, which cannot open QEMU's 0700 dir
/// (the health probe). None when nothing valid runs.
pub fn running(paths: &VmPaths) -> Option<LaunchRecord> {
    let rec = read_record(paths).ok().flatten()?;
    validate(rec.pid, &rec, paths).ok().map(|()| rec)
}

/// Remove the launch record and QEMU's runtime dir (socket, pidfile, overlay).
/// Never touches any process. Callers hold the VM's lock.
pub fn clear(paths: &VmPaths) -> io::Result<()> {
    match fs::remove_file(paths.launch_record()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // remove_dir_all does not follow symlinks the QEMU uid may have planted.
    match fs::remove_dir_all(paths.vm_dir()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => fs::remove_file(paths.vm_dir()).or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_match_is_component_aware() {
        assert!(contains_dir(
            "socket,id=qmp,path=/run/m/web/vm/qmp.sock,server=on",
            "/run/m/web"
        ));
        assert!(contains_dir(
            "file=/var/lib/m/web,format=raw",
            "/var/lib/m/web"
        ));
        assert!(!contains_dir("path=/run/m/web2/vm/qmp.sock", "/run/m/web"));
    }
}
