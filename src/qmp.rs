//! QMP, the QEMU Machine Protocol, over the VM's unix socket, through the
//! `qapi` crate: greeting and capabilities handshake, typed commands
//! (`system_powerdown`, `quit`, `query-status`) and typed events (`SHUTDOWN`
//! with its reason, `POWERDOWN`, `GUEST_PANICKED`), on a current-thread tokio
//! runtime that only a QMP session starts.
//!
//! **The peer is checked first.** The socket lives in a directory the QEMU
//! uid controls (`<runtime>/<name>/vm/`), so a compromised QEMU could replace
//! it with a symlink to another VM's socket. Right after `connect`, before
//! anything is read or sent, the socket's peer (`SO_PEERCRED`) must be the
//! validated QEMU PID; otherwise the session is refused with
//! [`QmpError::WrongPeer`] and nothing goes over it.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use qapi::futures::{QapiEvents, QapiService, QmpStreamTokio};
use qapi::qmp::{self, Event};
use qapi::Enum;
use tokio::io::{unix::AsyncFd, Interest, ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use crate::procinfo::PidFd;

pub use qapi::qmp::ShutdownCause;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("QMP socket {path} is served by PID {peer}, not by this VM's QEMU (PID {expected}); refusing to talk to it (replaced, e.g. by a symlink to another VM's socket?)")]
    WrongPeer {
        path: String,
        peer: i32,
        expected: i32,
    },
    #[error("QMP: no reply within {0:.1?}")]
    Timeout(Duration),
    #[error("QMP: QEMU closed the socket")]
    Closed,
    #[error("QMP: {0}")]
    Io(#[from] io::Error),
    #[error("QMP command {cmd} failed: {desc}")]
    Command { cmd: &'static str, desc: String },
}

/// An event QEMU reported that tells how a VM is ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The ACPI power button was pressed (`system_powerdown`).
    Powerdown,
    /// QEMU is shutting down, and why (`guest-shutdown`: the guest powered
    /// off; `host-qmp-quit`: QMP `quit`; `host-signal`: QEMU got a signal...).
    Shutdown { guest: bool, reason: ShutdownCause },
    /// The guest reported a panic.
    GuestPanicked { action: &'static str },
}

impl fmt::Display for VmEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmEvent::Powerdown => write!(f, "POWERDOWN"),
            VmEvent::Shutdown { reason, .. } => write!(f, "SHUTDOWN reason {}", reason.name()),
            VmEvent::GuestPanicked { action } => write!(f, "GUEST_PANICKED action {action}"),
        }
    }
}

/// `query-status`: whether the guest runs, and QEMU's run state name
/// (`running`, `paused`, `shutdown`, `guest-panicked`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStatus {
    pub running: bool,
    pub status: &'static str,
}

type Events = QapiEvents<QmpStreamTokio<ReadHalf<UnixStream>>>;
type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// A QMP session with one VM's QEMU, peer verified, capabilities negotiated.
/// Every call is bounded by the timeout given to `connect`.
pub struct Session {
    // Declared before `rt`: the socket is dropped while its runtime exists.
    service: Service,
    events: Events,
    seen: Vec<VmEvent>,
    closed: bool,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Refuse a peer other than `expected_pid`.
fn check_peer(stream: &impl AsFd, path: &Path, expected_pid: i32) -> Result<(), QmpError> {
    let cred = getsockopt(stream, PeerCredentials).map_err(|e| QmpError::Connect {
        path: path.display().to_string(),
        source: io::Error::other(format!("reading the peer's credentials (SO_PEERCRED): {e}")),
    })?;
    if cred.pid() != expected_pid {
        return Err(QmpError::WrongPeer {
            path: path.display().to_string(),
            peer: cred.pid(),
            expected: expected_pid,
        });
    }
    Ok(())
}

fn exec_error(cmd: &'static str, e: qapi::ExecuteError) -> QmpError {
    match e {
        qapi::ExecuteError::Qapi(e) => QmpError::Command { cmd, desc: e.desc },
        qapi::ExecuteError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => QmpError::Closed,
        qapi::ExecuteError::Io(e) => QmpError::Io(e),
    }
}

fn interesting(ev: Event) -> Option<VmEvent> {
    match ev {
        Event::SHUTDOWN { data, .. } => Some(VmEvent::Shutdown {
            guest: data.guest,
            reason: data.reason,
        }),
        Event::POWERDOWN { .. } => Some(VmEvent::Powerdown),
        Event::GUEST_PANICKED { data, .. } => Some(VmEvent::GuestPanicked {
            action: data.action.name(),
        }),
        other => {
            tracing::debug!(event = ?other, "QMP event");
            None
        }
    }
}

impl Session {
    /// Connect to `socket`, check that its peer is `expected_pid` (nothing is
    /// read or sent otherwise), read the greeting and leave capabilities
    /// negotiation mode.
    pub fn connect(
        socket: &Path,
        expected_pid: i32,
        timeout: Duration,
    ) -> Result<Session, QmpError> {
        let rt = runtime()?;
        let (service, events) = rt.block_on(async {
            let session = async {
                let stream =
                    UnixStream::connect(socket)
                        .await
                        .map_err(|source| QmpError::Connect {
                            path: socket.display().to_string(),
                            source,
                        })?;
                check_peer(&stream, socket, expected_pid)?;
                let negotiation = QmpStreamTokio::open(stream).await?;
                let stream = negotiation.negotiate().await?;
                Ok::<_, QmpError>(stream.into_parts())
            };
            tokio::time::timeout(timeout, session)
                .await
                .map_err(|_| QmpError::Timeout(timeout))?
        })?;
        Ok(Session {
            service,
            events,
            seen: Vec::new(),
            closed: false,
            timeout,
            rt,
        })
    }

    /// Run one command; events that arrive meanwhile are kept.
    fn execute<C>(&mut self, cmd: C) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand,
    {
        if self.closed {
            return Err(QmpError::Closed);
        }
        let Session {
            service,
            events,
            seen,
            closed,
            timeout,
            rt,
        } = self;
        let timeout = *timeout;
        rt.block_on(async {
            let run = async {
                let exec = service.execute(cmd).fuse();
                futures_util::pin_mut!(exec);
                loop {
                    futures_util::select_biased! {
                        r = exec => return r.map_err(|e| exec_error(C::NAME, e)),
                        ev = events.next().fuse() => match ev {
                            Some(Ok(ev)) => seen.extend(interesting(ev)),
                            Some(Err(e)) => {
                                *closed = true;
                                return Err(QmpError::Io(e));
                            }
                            None => {
                                *closed = true;
                                return Err(QmpError::Closed);
                            }
                        },
                    }
                }
            };
            tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| QmpError::Timeout(timeout))?
        })
    }

    /// `system_powerdown`: press the ACPI power button.
    pub fn power_down(&mut self) -> Result<(), QmpError> {
        self.execute(qmp::system_powerdown {}).map(drop)
    }

    /// `quit`: QEMU exits at once (the guest gets no say).
    pub fn quit(&mut self) -> Result<(), QmpError> {
        self.execute(qmp::quit {}).map(drop)
    }

    /// `query-status`.
    pub fn query_status(&mut self) -> Result<RunStatus, QmpError> {
        self.execute(qmp::query_status {}).map(|s| RunStatus {
            running: s.running,
            status: s.status.name(),
        })
    }

    /// Wait up to `timeout` for the process behind `pidfd` to exit, reading
    /// QMP events meanwhile. True when it exited.
    pub fn wait_exit(&mut self, pidfd: &PidFd, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Session {
            events,
            seen,
            closed,
            rt,
            ..
        } = self;
        let exited = rt.block_on(async {
            // SAFETY: the fd is borrowed from `pidfd`, which outlives this
            // AsyncFd (dropped at the end of this block) and stays open.
            let Ok(fd) =
                (unsafe { AsyncFd::register_with_interest(pidfd.as_fd(), Interest::READABLE) })
            else {
                return None;
            };
            let sleep = tokio::time::sleep_until(deadline.into()).fuse();
            futures_util::pin_mut!(sleep);
            loop {
                if *closed {
                    futures_util::select_biased! {
                        r = fd.readable().fuse() => return r.is_ok().then_some(true),
                        _ = sleep => return Some(false),
                    }
                }
                futures_util::select_biased! {
                    r = fd.readable().fuse() => return r.is_ok().then_some(true),
                    ev = events.next().fuse() => match ev {
                        Some(Ok(ev)) => seen.extend(interesting(ev)),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "QMP stream ended");
                            *closed = true;
                        }
                        None => *closed = true,
                    },
                    _ = sleep => return Some(false),
                }
            }
        });
        // No reactor for the pidfd (should not happen): a plain poll.
        exited
            .unwrap_or_else(|| pidfd.wait_exit(deadline.saturating_duration_since(Instant::now())))
    }

    /// The events seen so far (POWERDOWN, SHUTDOWN, GUEST_PANICKED), in order.
    pub fn events(&self) -> &[VmEvent] {
        &self.seen
    }

    /// The event that tells how QEMU ended: its last SHUTDOWN, else a guest
    /// panic. None when QEMU went away without either.
    pub fn ending(&self) -> Option<&VmEvent> {
        self.seen
            .iter()
            .rev()
            .find(|e| matches!(e, VmEvent::Shutdown { .. }))
            .or_else(|| {
                self.seen
                    .iter()
                    .find(|e| matches!(e, VmEvent::GuestPanicked { .. }))
            })
    }

    /// The last SHUTDOWN event's reason, if one came.
    pub fn shutdown_reason(&self) -> Option<ShutdownCause> {
        self.seen.iter().rev().find_map(|e| match e {
            VmEvent::Shutdown { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

/// Connect (peer-checked) and press the power button.
pub fn power_down(socket: &Path, expected_pid: i32, timeout: Duration) -> Result<(), QmpError> {
    Session::connect(socket, expected_pid, timeout)?.power_down()
}

/// Connect (peer-checked) and tell QEMU to quit.
pub fn quit(socket: &Path, expected_pid: i32, timeout: Duration) -> Result<(), QmpError> {
    Session::connect(socket, expected_pid, timeout)?.quit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-qmp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A listener of our own (peer = this test process) stands in for a
    /// socket that is not the VM's QEMU: refused, and it receives nothing.
    #[test]
    fn wrong_peer_is_refused_before_anything_is_sent() {
        let dir = tmp("peer");
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        let not_us = std::process::id() as i32 + 1;
        let e = Session::connect(&path, not_us, Duration::from_secs(2))
            .err()
            .expect("connected to a foreign peer");
        let text = e.to_string();
        assert!(matches!(e, QmpError::WrongPeer { .. }), "{text}");
        assert!(
            text.contains(&std::process::id().to_string()) && text.contains(&not_us.to_string()),
            "{text}"
        );
        assert!(
            server.join().unwrap().is_empty(),
            "bytes were sent to the foreign peer"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_socket_names_the_path() {
        let dir = tmp("missing");
        let e = Session::connect(&dir.join("qmp.sock"), 1, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.to_string().contains("qmp.sock"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_read_as_the_journal_shows_them() {
        let e = VmEvent::Shutdown {
            guest: true,
            reason: ShutdownCause::guest_shutdown,
        };
        assert_eq!(e.to_string(), "SHUTDOWN reason guest-shutdown");
        assert_eq!(
            VmEvent::Shutdown {
                guest: false,
                reason: ShutdownCause::host_qmp_quit
            }
            .to_string(),
            "SHUTDOWN reason host-qmp-quit"
        );
        assert_eq!(VmEvent::Powerdown.to_string(), "POWERDOWN");
    }
}
