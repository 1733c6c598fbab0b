//! Reading /proc through the `procfs` crate (a process's start time and
//! command line, the boot id, uptime, clock ticks), and pidfds through
//! `rustix` for signalling and waiting on a process without PID races.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use procfs::process::Process;
use procfs::{Current, ProcError};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

fn proc_io(e: ProcError) -> io::Error {
    match e {
        ProcError::NotFound(p) => io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} not found", path_text(p)),
        ),
        ProcError::PermissionDenied(p) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: permission denied", path_text(p)),
        ),
        ProcError::Io(e, _) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

fn path_text(p: Option<std::path::PathBuf>) -> String {
    p.map(|p| p.display().to_string())
        .unwrap_or_else(|| "/proc entry".into())
}

fn process(pid: i32) -> io::Result<Process> {
    Process::new(pid).map_err(proc_io)
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn start_ticks(pid: i32) -> io::Result<u64> {
    Ok(process(pid)?.stat().map_err(proc_io)?.starttime)
}

/// /proc/PID/cmdline, split at NULs (an error when it is not UTF-8).
pub fn cmdline(pid: i32) -> io::Result<Vec<String>> {
    process(pid)?.cmdline().map_err(proc_io)
}

/// /proc/sys/kernel/random/boot_id (empty when unreadable).
pub fn boot_id() -> String {
    procfs::sys::kernel::random::boot_id().unwrap_or_default()
}

pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// Seconds since boot, from /proc/uptime.
pub fn uptime_secs() -> Option<f64> {
    procfs::Uptime::current().ok().map(|u| u.uptime)
}

/// A pidfd: signals and exit waits go to exactly the process it was opened on.
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(PidFd {
            fd: pidfd_open(pid, PidfdFlags::empty())?,
        })
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        let sig = Signal::from_named_raw(sig)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("signal {sig}")))?;
        Ok(pidfd_send_signal(&self.fd, sig)?)
    }

    /// True when the process exited within `timeout` (a pidfd polls readable
    /// once its process has exited).
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: left.subsec_nanos().into(),
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(n) if n > 0 => return true,
                Ok(_) => return false,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).unwrap() > 0);
        assert!(!cmdline(me).unwrap().is_empty());
        assert_eq!(boot_id().len(), 36);
        assert!(uptime_secs().unwrap() > 0.0);
        assert!(ticks_per_second() > 0);
    }

    #[test]
    fn missing_process_is_not_found() {
        // PIDs above pid_max (at most 2^22) never exist.
        let e = start_ticks(i32::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    /// A real process whose comm is `x) (y z)`: spaces and `) (` in the
    /// command name, which a parser splitting at the first `)` or at spaces
    /// gets wrong. Its start time is read independently, knowing the comm.
    #[test]
    fn start_time_of_a_process_with_parens_and_spaces_in_comm() {
        let comm = "x) (y z) 1";
        let dir = std::env::temp_dir().join(format!("mcp-comm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(comm);
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let mut child = Command::new(&exe)
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // The comm is set at exec; wait until the child has exec'd.
        let stat_path = format!("/proc/{pid}/stat");
        let prefix = format!("{pid} ({comm}) ");
        let t0 = Instant::now();
        let stat = loop {
            let s = std::fs::read_to_string(&stat_path).unwrap();
            if s.starts_with(&prefix) || t0.elapsed() > Duration::from_secs(5) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let result = (|| {
            let rest = stat
                .strip_prefix(&prefix)
                .ok_or_else(|| format!("comm not set: {stat}"))?;
            // After "PID (COMM) ": state is field 3, starttime field 22.
            let expected: u64 = rest.split(' ').nth(19).unwrap().parse().unwrap();
            let got = start_ticks(pid).map_err(|e| e.to_string())?;
            if got != expected {
                return Err(format!("start_ticks {got}, /proc says {expected}: {stat}"));
            }
            // Just after exec the command line can read empty for a moment.
            let mut argv = cmdline(pid).map_err(|e| e.to_string())?;
            while argv.is_empty() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
                argv = cmdline(pid).map_err(|e| e.to_string())?;
            }
            if argv != [exe.display().to_string(), "30".into()] {
                return Err(format!("cmdline {argv:?}"));
            }
            Ok(())
        })();
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
    }

    #[test]
    fn pidfd_signals_and_sees_the_exit() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(child.id() as i32).unwrap();
        assert!(!fd.wait_exit(Duration::from_millis(50)));
        fd.signal(libc::SIGTERM).unwrap();
        // Exited (a zombie until reaped) counts as exited for a pidfd.
        assert!(fd.wait_exit(Duration::from_secs(5)));
        child.wait().unwrap();
        // Reaped: the pidfd names no process any more (ESRCH), and never
        // another one that reuses the PID.
        assert!(fd.signal(libc::SIGKILL).is_err());
    }
}
