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

/// What QEMU's exit status says about the guest (docs/helper.md "Exit
/// status"): `(c << 1) | 1` is the program's exit code c through
/// isa-debug-exit.
pub fn describe_exit(code: &str, status: &str) -> String {
    match (code, status.parse::<u32>()) {
        ("exited", Ok(0)) => "QEMU quit (QMP quit or SIGTERM)".into(),
        ("exited", Ok(n)) if n % 2 == 1 => {
            let c = n >> 1;
            if c == 15 {
                "the guest program ended by SIGTERM (or exited 15)".into()
            } else {
                format!("the guest program exited with status {c} (or was killed by signal {c})")
            }
        }
        ("exited", Ok(n)) => format!("QEMU exited with status {n}"),
        (kind, _) => format!("QEMU {kind} {status}"),
    }
}

pub fn run(roots: &Roots, name: &str) -> Result<()> {
    // Under systemd (ExecStopPost) say how the VM ended, once, for the journal.
    if let (Ok(result), Ok(code), Ok(status)) = (
        std::env::var("SERVICE_RESULT"),
        std::env::var("EXIT_CODE"),
        std::env::var("EXIT_STATUS"),
    ) {
        tracing::info!(
            service_result = %result,
            exit_code = %code,
            exit_status = %status,
            "{name} ended: {}",
            describe_exit(&code, &status)
        );
    }
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
    crate::health::clear(&paths);
    match (tap_name, uid) {
        (Some(t), Some(uid)) => match tap::remove_owned(&t, uid) {
            Ok(tap::Removed::Removed) => tracing::info!(tap = %t, "TAP removed"),
            Ok(tap::Removed::Absent) => {}
            Err(e @ tap::NetError::ForeignOwner { .. }) => {
                tracing::warn!(error = %e, "TAP left alone")
            }
            Err(e) => return Err(e.into()),
        },
        (Some(t), None) => tracing::warn!(
            tap = %t,
            "the VM's uid is unknown (no config, no launch record); TAP left alone"
        ),
        (None, _) => {}
    }
    println!("{name}: cleaned up");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_statuses_decode_the_program_code() {
        assert!(super::describe_exit("exited", "1").contains("exited with status 0"));
        assert!(super::describe_exit("exited", "7").contains("status 3"));
        assert!(super::describe_exit("exited", "31").contains("SIGTERM"));
        assert!(super::describe_exit("exited", "0").contains("QMP quit"));
        assert!(super::describe_exit("killed", "KILL").contains("killed KILL"));
    }
}
