//! `stop NAME` (ExecStop): QMP `system_powerdown`, wait for QEMU to exit
//! (bounded by the config's stop timeout), then QMP `quit`, then SIGKILL
//! through a pidfd as the last resort. Says which one ended it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::procinfo::PidFd;
use crate::qmp::Qmp;

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
    let ended = match Qmp::connect(&paths.qmp_socket(), Duration::from_secs(3)) {
        Ok(mut qmp) => {
            tracing::info!(pid, "sending system_powerdown");
            let pd = qmp.execute("system_powerdown");
            if pd.is_ok() && pidfd.wait_exit(timeout) {
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
                let _ = qmp.execute("quit");
                if pidfd.wait_exit(QUIT_WAIT) {
                    Ended::Quit
                } else {
                    kill(&pidfd)?
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "QMP unavailable; sending SIGTERM through the pidfd");
            pidfd.signal(libc::SIGTERM).context("SIGTERM")?;
            if pidfd.wait_exit(QUIT_WAIT) {
                Ended::Terminated
            } else {
                kill(&pidfd)?
            }
        }
    };
    println!(
        "{name}: {} after {:.2} s",
        ended.describe(),
        t0.elapsed().as_secs_f64()
    );
    Ok(ended)
}

fn kill(pidfd: &PidFd) -> Result<Ended> {
    pidfd.signal(libc::SIGKILL).context("SIGKILL")?;
    anyhow::ensure!(pidfd.wait_exit(QUIT_WAIT), "QEMU survived SIGKILL");
    Ok(Ended::Killed)
}
