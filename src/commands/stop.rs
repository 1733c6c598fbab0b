//! `stop NAME` (ExecStop): QMP `system_powerdown`, wait for QEMU to exit
//! (bounded by the config's stop timeout), then QMP `quit`, then SIGKILL
//! through a pidfd as the last resort; SIGTERM through the pidfd when QMP is
//! unavailable (or its socket is not served by the validated QEMU). Says which
//! one ended it, and the QMP event QEMU reported on the way out (`SHUTDOWN`
//! with its reason, or `GUEST_PANICKED`), on stdout and in the journal.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::procinfo::PidFd;
use crate::qmp::{self, QmpError, ShutdownCause};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    NotRunning,
    PowerDown,
    Quit,
    Terminated,
    Killed,
}

impl Ended {
    pub fn describe(self) -> &'static str {
        match self {
            Ended::NotRunning => "was not running",
            Ended::PowerDown => "guest powered down (ACPI power button)",
            Ended::Quit => "QEMU quit over QMP after the guest ignored the power button",
            Ended::Terminated => "QEMU ended by SIGTERM (QMP unavailable)",
            Ended::Killed => "QEMU killed with SIGKILL (did not exit otherwise)",
        }
    }
}

const QUIT_WAIT: Duration = Duration::from_secs(5);
const QMP_TIMEOUT: Duration = Duration::from_secs(3);

/// What QMP told about the end, for the result line.
fn qmp_note(events: Option<&[qmp::VmEvent]>, ending: Option<&qmp::VmEvent>) -> String {
    match (events, ending) {
        (None, _) => String::new(),
        (Some(_), Some(ev)) => format!("; QMP event {ev}"),
        (Some(evs), None) if evs.contains(&qmp::VmEvent::Powerdown) => {
            "; QMP event POWERDOWN, then QEMU exited without a SHUTDOWN event".into()
        }
        (Some(_), None) => "; QEMU exited without a SHUTDOWN event".into(),
    }
}

pub fn run(roots: &Roots, name: &str) -> Result<Ended> {
    let paths = VmPaths::new(roots, name);
    let timeout = match config::load_by_name(&roots.config_dir, name) {
        Ok(v) => Duration::from_secs(v.config.stop_timeout_secs),
        Err(e) => {
            // A VM removed from the configuration is still stopped.
            tracing::warn!(error = %e, "config unavailable; using a 30 s stop timeout");
            Duration::from_secs(30)
        }
    };
    let pid = match launch::inspect(&paths) {
        PidState::NotRunning => {
            println!("{name}: {}", Ended::NotRunning.describe());
            return Ok(Ended::NotRunning);
        }
        PidState::Stale { pid, reason } => {
            tracing::warn!(?pid, %reason, "stale pidfile; clearing it, no process signalled");
            launch::clear(&paths)?;
            println!(
                "{name}: {} (stale pidfile removed: {reason})",
                Ended::NotRunning.describe()
            );
            return Ok(Ended::NotRunning);
        }
        PidState::Running { pid, .. } => pid,
    };
    let pidfd = PidFd::open(pid).with_context(|| format!("pidfd_open({pid})"))?;
    // Re-validate now that the pidfd pins the process.
    if let PidState::Running { pid: p2, .. } = launch::inspect(&paths) {
        anyhow::ensure!(p2 == pid, "PID changed while stopping");
    } else {
        println!("{name}: {}", Ended::NotRunning.describe());
        return Ok(Ended::NotRunning);
    }

    let t0 = Instant::now();
    // The session's peer must be `pid` (SO_PEERCRED), checked before anything
    // is sent: a socket swapped for another VM's is refused.
    let (ended, note, reason) = match qmp::Session::connect(&paths.qmp_socket(), pid, QMP_TIMEOUT) {
        Ok(mut qmp) => {
            tracing::info!(pid, "sending system_powerdown");
            let pd = qmp.power_down();
            let ended = if pd.is_ok() && qmp.wait_exit(&pidfd, timeout) {
                Ended::PowerDown
            } else {
                if let Err(e) = pd {
                    tracing::warn!(error = %e, "system_powerdown failed");
                } else {
                    tracing::warn!(
                        timeout_s = timeout.as_secs(),
                        "guest did not power down in time; sending quit"
                    );
                }
                if let Err(e) = qmp.quit() {
                    tracing::warn!(error = %e, "quit");
                    // The session may be unusable (say, a message qapi could
                    // not decode) while QEMU still runs: one fresh session.
                    if !pidfd.wait_exit(Duration::ZERO) {
                        if let Err(e) = qmp::quit(&paths.qmp_socket(), pid, QMP_TIMEOUT) {
                            tracing::warn!(error = %e, "quit over a new QMP session");
                        }
                    }
                }
                if qmp.wait_exit(&pidfd, QUIT_WAIT) {
                    // The guest may have powered off just as quit went out:
                    // QEMU's SHUTDOWN reason says which it was.
                    match qmp.shutdown_reason() {
                        Some(ShutdownCause::guest_shutdown) => Ended::PowerDown,
                        _ => Ended::Quit,
                    }
                } else {
                    kill(&pidfd)?
                }
            };
            let reason = qmp.shutdown_reason();
            (ended, qmp_note(Some(qmp.events()), qmp.ending()), reason)
        }
        Err(e) => {
            match &e {
                QmpError::WrongPeer { .. } => {
                    tracing::error!(error = %e, "QMP socket refused; sending SIGTERM through the pidfd")
                }
                _ => {
                    tracing::warn!(error = %e, "QMP unavailable; sending SIGTERM through the pidfd")
                }
            }
            pidfd.signal(libc::SIGTERM).context("SIGTERM")?;
            let ended = if pidfd.wait_exit(QUIT_WAIT) {
                Ended::Terminated
            } else {
                kill(&pidfd)?
            };
            (ended, String::new(), None)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    tracing::info!(
        pid,
        ended = ?ended,
        shutdown_reason = reason.map(|r| qapi::Enum::name(&r)).unwrap_or("-"),
        elapsed_s = format!("{secs:.2}"),
        "VM stopped: {}{note}",
        ended.describe()
    );
    println!("{name}: {} after {secs:.2} s{note}", ended.describe());
    Ok(ended)
}

fn kill(pidfd: &PidFd) -> Result<Ended> {
    pidfd.signal(libc::SIGKILL).context("SIGKILL")?;
    anyhow::ensure!(pidfd.wait_exit(QUIT_WAIT), "QEMU survived SIGKILL");
    Ok(Ended::Killed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::VmEvent;

    #[test]
    fn result_line_names_the_qmp_event() {
        let evs = [
            VmEvent::Powerdown,
            VmEvent::Shutdown {
                guest: true,
                reason: ShutdownCause::guest_shutdown,
            },
        ];
        assert_eq!(
            qmp_note(Some(&evs), evs.get(1)),
            "; QMP event SHUTDOWN reason guest-shutdown"
        );
        assert_eq!(
            qmp_note(Some(&evs[..1]), None),
            "; QMP event POWERDOWN, then QEMU exited without a SHUTDOWN event"
        );
        assert_eq!(qmp_note(None, None), "");
    }
}
