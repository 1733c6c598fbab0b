//! `ops build` as an unprivileged, throwaway identity: the VM's own uid
//! (never root), no capabilities, PR_SET_NO_NEW_PRIVS, killed with the
//! helper (PR_SET_PDEATHSIG), no network (a private network namespace unless
//! the helper already runs in one, as under the build unit's
//! PrivateNetwork=yes), a fresh ops home, reading only the staging tree (group
//! readable by the VM), its config and the Nanos dir. ops's output is read
//! without following links and copied into a root-owned file.
//!
//! Before a build the helper asks `ops version` (same sandbox) and refuses an
//! ops it cannot drive (docs/helper.md lists the supported range).

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::config::Validated;
use crate::image::{io_err, BuildError};
use crate::opsconfig;
use crate::paths::VmPaths;
use crate::privs::RunAs;

/// ops versions the helper is tested with: `ops build` writes
/// `$OPS_HOME/.ops/images/<RunConfig.ImageName>` and reads `Klibs` at the top
/// level (0.1.32, nixpkgs's, writes `images/<name>.img` and reads klibs from
/// RunConfig).
pub const MIN_OPS: (u32, u32, u32) = (0, 1, 43);
pub const SUPPORTED_OPS: &str = ">= 0.1.43, < 0.2";

/// Who ops runs as and how it is fenced in.
pub struct OpsSandbox<'a> {
    pub who: &'a RunAs,
    /// Give ops a private network namespace (false when we already run in
    /// one, or when ops must download the Nanos kernel).
    pub unshare_net: bool,
}

/// Whether this thread's network namespace has nothing but loopback (as
/// under systemd's PrivateNetwork=yes). Read from `/proc/thread-self/net/dev`,
/// which lists the caller's namespace and needs no socket (the build unit
/// allows no AF_NETLINK).
pub fn netns_is_private() -> bool {
    let Ok(dev) = fs::read_to_string("/proc/thread-self/net/dev")
        .or_else(|_| fs::read_to_string("/proc/self/net/dev"))
    else {
        return false;
    };
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    !names.is_empty() && names.iter().all(|n| *n == "lo")
}

fn sandboxed(cmd: &mut Command, sb: &OpsSandbox) {
    let (uid, gid, switch, unshare_net) = (sb.who.uid, sb.who.gid, sb.who.switch, sb.unshare_net);
    let parent = nix::unistd::getpid();
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if unshare_net {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            if switch {
                nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)])?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))?;
            }
            nix::sys::prctl::set_no_new_privs()?;
            // After setuid: a credential change clears the parent-death signal.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("the helper died before ops started"));
            }
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
            Ok(())
        });
    }
}

fn run(
    ops: &Path,
    args: &[&std::ffi::OsStr],
    home: &Path,
    cwd: &Path,
    sb: &OpsSandbox,
) -> Result<Output, BuildError> {
    let mut cmd = Command::new(ops);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("OPS_HOME", home)
        .stdin(Stdio::null());
    sandboxed(&mut cmd, sb);
    cmd.output().map_err(|source| BuildError::OpsSpawn {
        ops: ops.display().to_string(),
        source,
    })
}

fn output_text(out: &Output) -> String {
    strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Ops version:"))
        .map(|v| v.trim().to_owned())
}

/// `0.1.43-24-gcd2208d` → (0, 1, 43).
fn numeric(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    let mut it = core.split('.').map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Refuse an ops outside the supported range; returns the version string.
pub fn check_version(
    ops: &Path,
    home: &Path,
    cwd: &Path,
    sb: &OpsSandbox,
) -> Result<String, BuildError> {
    let out = run(ops, &["version".as_ref()], home, cwd, sb)?;
    let text = output_text(&out);
    let found = parse_version(&text);
    let unsupported = |found: String| BuildError::OpsVersion {
        ops: ops.display().to_string(),
        found,
        supported: SUPPORTED_OPS,
    };
    match found.as_deref().map(|f| (f, numeric(f))) {
        Some((f, Some(n))) if n >= MIN_OPS && n < (0, 2, 0) => Ok(f.to_owned()),
        Some(("", _)) => Err(unsupported(
            "no version (built without -ldflags -X github.com/nanovms/ops/lepton.Version=...)"
                .into(),
        )),
        Some((f, _)) => Err(unsupported(f.to_owned())),
        None => Err(unsupported(format!(
            "no \"Ops version:\" line in its output ({})",
            text.lines().last().unwrap_or("").trim()
        ))),
    }
}

/// A fresh ops home (root-made, then handed to the VM's uid): `.ops/` with
/// `latest.txt` naming the local Nanos version and an `images/` dir.
pub fn fresh_home(parent: &Path, who: &RunAs, local_nanos: bool) -> Result<PathBuf, BuildError> {
    let home = parent.join("ops-home");
    let dot = home.join(".ops");
    let images = dot.join("images");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&images)
        .map_err(io_err("creating", &images))?;
    if local_nanos {
        let latest = dot.join("latest.txt");
        fs::write(&latest, opsconfig::LOCAL_NANOS_VERSION).map_err(io_err("writing", &latest))?;
    }
    if who.switch {
        for d in [&home, &dot, &images] {
            std::os::unix::fs::lchown(d, Some(who.uid), Some(who.gid))
                .map_err(io_err("chown", d))?;
        }
    }
    Ok(home)
}

/// Run `ops build` and copy its image to `dest` (root-owned, created new).
pub fn build(
    v: &Validated,
    paths: &VmPaths,
    ops: &Path,
    home: &Path,
    config_file: &Path,
    sb: &OpsSandbox,
    dest: &Path,
) -> Result<(), BuildError> {
    let t0 = Instant::now();
    let out = run(
        ops,
        &[
            "build".as_ref(),
            opsconfig::PLACEHOLDER.as_ref(),
            "-c".as_ref(),
            config_file.as_os_str(),
        ],
        home,
        &paths.staging(),
        sb,
    )?;
    let text = output_text(&out);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::debug!(target: "ops", "{line}");
    }
    if !out.status.success() {
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        return Err(BuildError::OpsFailed {
            status: out.status.to_string(),
            tail,
        });
    }
    let rel = format!(".ops/images/{}", opsconfig::IMAGE_NAME);
    copy_out(home, &rel, dest)?;
    tracing::info!(
        name = v.name(),
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "ops build done"
    );
    Ok(())
}

/// Copy `home/rel` (a dir the VM's uid owns) to a new root-owned `dest`,
/// without following any symlink on the way.
fn copy_out(home: &Path, rel: &str, dest: &Path) -> Result<(), BuildError> {
    let produced = home.join(rel);
    let no_image = |reason: String| BuildError::OpsNoImage {
        path: produced.clone(),
        reason,
    };
    let dir = crate::safefs::open_dir(home).map_err(|e| no_image(e.to_string()))?;
    let how = OpenHow::new()
        .flags(
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
        )
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let fd = openat2(&dir, rel, how).map_err(|e| no_image(e.desc().to_owned()))?;
    let st = fstat(fd.as_fd()).map_err(|e| no_image(e.desc().to_owned()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(no_image("not a regular file".into()));
    }
    let mut src = File::from(fd);
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dest)
        .map_err(io_err("creating", dest))?;
    io::copy(&mut src, &mut out).map_err(io_err("copying the image to", dest))?;
    out.flush()
        .and_then(|()| out.sync_data())
        .map_err(io_err("writing", dest))?;
    Ok(())
}

/// ops colours its output even when it is not a terminal; the journal wants
/// plain text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_network_namespace_counts_as_private() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        // In a namespace of its own (this thread only) there is just lo.
        let private = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            netns_is_private()
        })
        .join()
        .unwrap();
        assert!(private);
        // The test runner's namespace has more (tests/run runs as root on a
        // host with a real NIC; skip the check where it has only lo).
        let host = fs::read_to_string("/proc/self/net/dev").unwrap();
        if host
            .lines()
            .skip(2)
            .any(|l| !l.trim_start().starts_with("lo:"))
        {
            assert!(!netns_is_private());
        }
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            strip_ansi("\x1b[1;33mversion lookup failed\x1b[0m ok"),
            "version lookup failed ok"
        );
    }

    #[test]
    fn versions_are_compared_numerically() {
        assert_eq!(
            parse_version("x\nOps version: 0.1.43-24-gcd2208d\nNanos version: y"),
            Some("0.1.43-24-gcd2208d".into())
        );
        assert_eq!(numeric("0.1.43-24-gcd2208d"), Some((0, 1, 43)));
        assert_eq!(numeric("0.1.32"), Some((0, 1, 32)));
        assert!(numeric("0.1.32").unwrap() < MIN_OPS);
        assert!(numeric("0.1.100").unwrap() > MIN_OPS);
        assert_eq!(numeric(""), None);
    }
}
