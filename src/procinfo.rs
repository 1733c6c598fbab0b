//! Reading /proc: a process's start time and command line, the boot id, and
//! pidfds for signalling and waiting on a process without PID races.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
pub fn start_ticks(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and ')' — split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn cmdline(pid: i32) -> io::Result<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Seconds since boot, from /proc/uptime.
pub fn uptime_secs() -> Option<f64> {
    fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A pidfd: signals and exit waits go to exactly the process it was opened on.
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: plain syscall; a non-negative return is a new fd we own.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PidFd {
            // SAFETY: r is a fresh, owned file descriptor.
            fd: unsafe { OwnedFd::from_raw_fd(r as i32) },
        })
    }

    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: valid pidfd, null siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// True when the process exited within `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return true;
            }
            if r == 0 {
                return false;
            }
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 10000 100";
        assert_eq!(parse_start_ticks(stat), Some(987654));
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).unwrap() > 0);
        assert!(!cmdline(me).unwrap().is_empty());
        assert_eq!(boot_id().len(), 36);
    }
}
