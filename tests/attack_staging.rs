//! Attacks on staging by the owner of a volume dir. An unprivileged uid
//! (`mcpt-c`, a forked child of this test that dropped to it) owns the volume
//! and, for a bounded time, exchanges one of its entries with something else
//! (renameat2 RENAME_EXCHANGE in a tight loop, every swap counted) while the
//! real helper, as root, runs `mcp-unikernel build` over and over:
//!
//! (a) a regular file <-> a symlink to a root-only 0600 file in a root-only dir,
//! (b) a regular file <-> a FIFO,
//! (c) a regular file <-> a symlink to /dev/zero,
//! (d) a subdirectory <-> a symlink to a root-only dir.
//!
//! Every build must end within a bound and succeed, the secrets never appear
//! in the state dir (staging tree, scratch, image), and the state dir's disk
//! use stays bounded (it is a small tmpfs, so the host disk is safe even when
//! the defence is broken). Plus two refusals: a volume source reached through
//! a symlink, and volume data over `volume_limit_mib`.
//!
//! The builds use the Linux stand-in config (`direct_boot`, placeholder
//! kernel and initrd files): the build only packs an initramfs, no QEMU runs.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::netns::{self, ChildGuard};
use common::vm::{self, Sandbox};
use serde_json::json;

/// The unprivileged owner of the volume (CI creates it, scripts/setup.sh).
const ATTACKER: &str = "mcpt-c";
/// How long the builds run against the racing attacker.
const RACE_TIME: Duration = Duration::from_secs(6);
const MIN_SWAPS: u64 = 10_000;
const MIN_BUILDS: u32 = 5;
/// A build of this tiny volume takes well under a second; anything near
/// this is a hang.
const BUILD_LIMIT: Duration = Duration::from_secs(15);
/// Most the state dir (a tmpfs of TMPFS_SIZE) may use at any moment.
const DISK_LIMIT: u64 = 16 << 20;
const TMPFS_SIZE: &str = "size=128m,mode=0755";
/// No staged file of this volume is anywhere near this big.
const FILE_LIMIT: u64 = 1 << 20;

/// Each build stages the attacker's dir as this many volumes (same source,
/// targets /srv/www, /srv/v1, ...): every build walks the racing entries
/// that many times, which multiplies the chances to hit the few
/// microseconds between looking at an entry and opening it.
const VOLUMES: usize = 32;
/// Size of the tmpfs holding the attacker's volume (renames on tmpfs are
/// several times faster than on a journalled disk: more swaps per second).
const VOLUME_FS: &str = "size=16m,mode=0755";

/// The races run one at a time: each keeps a core busy.
static SERIAL: Mutex<()> = Mutex::new(());

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(user).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Root and the attacker's account, or the test reports itself skipped.
fn attacker_ids(test: &str) -> Option<(u32, u32)> {
    if !netns::require_root_or_skip(test) {
        return None;
    }
    match (id_of(ATTACKER, "-u"), id_of(ATTACKER, "-g")) {
        (Some(u), Some(g)) if u != 0 => Some((u, g)),
        _ => {
            netns::skip(
                test,
                &format!("no user {ATTACKER} (scripts/setup.sh creates it)"),
            );
            None
        }
    }
}

/// A tmpfs mounted for the test, unmounted on drop (also on panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, opts: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "mcp-attack-tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }

    /// Bytes in use right now.
    fn used(&self) -> u64 {
        let c = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string and a zeroed statvfs to fill.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
        assert_eq!(r, 0, "statvfs: {}", std::io::Error::last_os_error());
        (s.f_blocks - s.f_bfree) * s.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The racing volume owner: a forked child of this test, running as
/// `uid`/`gid`, exchanging each pair of paths with renameat2(RENAME_EXCHANGE)
/// in a loop and counting the swaps that succeeded in memory shared with
/// us. SIGKILLed by its PID (our child) in `stop` or on drop, so a panicking
/// test never leaves it running; PR_SET_PDEATHSIG covers a killed test.
struct Attacker {
    pid: libc::pid_t,
    counts: *mut AtomicU64,
    pairs: usize,
    map_len: usize,
    reaped: bool,
}

impl Attacker {
    fn spawn(uid: u32, gid: u32, pairs: &[(PathBuf, PathBuf)]) -> Attacker {
        let cpairs: Vec<(CString, CString)> = pairs
            .iter()
            .map(|(a, b)| {
                (
                    CString::new(a.as_os_str().as_bytes()).unwrap(),
                    CString::new(b.as_os_str().as_bytes()).unwrap(),
                )
            })
            .collect();
        // One counter per pair, then a "ready" flag.
        let map_len = (pairs.len() + 1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: a fresh anonymous shared mapping; zeroed memory is a valid AtomicU64.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let counts = p as *mut AtomicU64;
        let n = pairs.len();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child calls only async-signal-safe functions and
        // allocates nothing (everything it uses was prepared above).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != parent {
                    libc::_exit(2);
                }
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                    || libc::getuid() != uid
                    || libc::geteuid() != uid
                {
                    libc::_exit(3);
                }
                (*counts.add(n)).store(1, Ordering::SeqCst);
                loop {
                    for (i, (a, b)) in cpairs.iter().enumerate() {
                        let r = libc::syscall(
                            libc::SYS_renameat2,
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        );
                        if r == 0 {
                            (*counts.add(i)).fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        let mut a = Attacker {
            pid,
            counts,
            pairs: n,
            map_len,
            reaped: false,
        };
        let t0 = Instant::now();
        // SAFETY: the mapping lives as long as `a`.
        while unsafe { (*a.counts.add(n)).load(Ordering::SeqCst) } == 0 {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                a.reaped = true;
                panic!("the attacker could not become {ATTACKER} (status {status:#x})");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "attacker never ready"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        a
    }

    /// Swaps done so far, per pair.
    fn swaps(&self) -> Vec<u64> {
        (0..self.pairs)
            // SAFETY: the mapping lives as long as self.
            .map(|i| unsafe { (*self.counts.add(i)).load(Ordering::Relaxed) })
            .collect()
    }

    /// SIGKILL (our child, by PID), reap, and return the swap counts.
    fn stop(&mut self) -> Vec<u64> {
        self.kill_and_reap();
        self.swaps()
    }

    fn kill_and_reap(&mut self) {
        if !self.reaped {
            // SAFETY: our own unreaped child, so the PID cannot be reused.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
            self.reaped = true;
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.kill_and_reap();
        // SAFETY: unmapping the mapping made in spawn, no longer used.
        unsafe { libc::munmap(self.counts as *mut libc::c_void, self.map_len) };
    }
}

struct BuildRun {
    status: Option<ExitStatus>,
    took: Duration,
    max_used: u64,
    log: String,
}

/// One `build web`, polled: killed (by PID) if it runs past BUILD_LIMIT;
/// the tmpfs's use is sampled while it runs.
fn build_once(sb: &Sandbox, disk: &Tmpfs, log: &Path) -> BuildRun {
    let f = fs::File::create(log).unwrap();
    let child = sb
        .cmd(None, &["build", "web"])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn the helper");
    let mut g = ChildGuard::new(child);
    let t0 = Instant::now();
    let mut max_used = 0;
    let status = loop {
        max_used = max_used.max(disk.used());
        if let Some(st) = g.try_wait() {
            break Some(st);
        }
        if t0.elapsed() > BUILD_LIMIT {
            g.kill_now();
            g.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    max_used = max_used.max(disk.used());
    BuildRun {
        status,
        took: t0.elapsed(),
        max_used,
        log: fs::read_to_string(log).unwrap_or_default(),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir` (symlinks not followed): the paths that
/// contain one of `markers`, and staged files bigger than FILE_LIMIT.
fn scan(dir: &Path, markers: &[Vec<u8>], leaks: &mut Vec<String>, big: &mut Vec<String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            scan(&p, markers, leaks, big);
        } else if m.is_file() {
            let in_image = p
                .components()
                .any(|c| c.as_os_str().as_bytes().starts_with(b"image"));
            if !in_image && m.len() > FILE_LIMIT {
                big.push(format!("{} ({} bytes)", p.display(), m.len()));
            }
            let data = fs::read(&p).unwrap_or_default();
            if markers.iter().any(|k| contains(&data, k)) {
                leaks.push(p.display().to_string());
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Swap {
    SymlinkToSecretFile,
    Fifo,
    SymlinkToDevZero,
    DirWithSymlinkToSecretDir,
}

/// Build repeatedly while the volume's owner swaps `kind` in and out.
fn race(test: &str, kind: Swap) {
    let Some((uid, gid)) = attacker_ids(test) else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new(&format!("atk{kind:?}"));
    let disk = Tmpfs::mount(&sb.state_dir, TMPFS_SIZE);
    let volfs = Tmpfs::mount(&sb.root.join("volfs"), VOLUME_FS);
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );

    // Root-only secrets the attacker can name but not read.
    let secret_dir = sb.root.join("secret");
    fs::create_dir(&secret_dir).unwrap();
    fs::set_permissions(&secret_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let secret_file = secret_dir.join("secret.txt");
    let file_marker = format!("MCPT-ROOT-ONLY-FILE-{nonce}");
    fs::write(&secret_file, &file_marker).unwrap();
    fs::set_permissions(&secret_file, fs::Permissions::from_mode(0o600)).unwrap();
    let secret_tree = sb.root.join("secretdir");
    fs::create_dir(&secret_tree).unwrap();
    fs::set_permissions(&secret_tree, fs::Permissions::from_mode(0o700)).unwrap();
    let dir_marker = format!("MCPT-ROOT-ONLY-DIR-{nonce}");
    fs::write(secret_tree.join("x"), &dir_marker).unwrap();
    fs::set_permissions(secret_tree.join("x"), fs::Permissions::from_mode(0o600)).unwrap();
    let markers = vec![file_marker.into_bytes(), dir_marker.into_bytes()];

    // The attacker's volume.
    let vol = volfs.0.join("vol");
    fs::create_dir(&vol).unwrap();
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(vol.join("index.html"), "0").unwrap();
    let (real, alt) = match kind {
        Swap::SymlinkToSecretFile => {
            fs::write(vol.join("a"), "decoy-a").unwrap();
            symlink(&secret_file, vol.join("a.alt")).unwrap();
            (vol.join("a"), vol.join("a.alt"))
        }
        Swap::Fifo => {
            fs::write(vol.join("b"), "decoy-b").unwrap();
            let c = CString::new(vol.join("b.alt").as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
            (vol.join("b"), vol.join("b.alt"))
        }
        Swap::SymlinkToDevZero => {
            fs::write(vol.join("c"), "decoy-c").unwrap();
            symlink("/dev/zero", vol.join("c.alt")).unwrap();
            (vol.join("c"), vol.join("c.alt"))
        }
        Swap::DirWithSymlinkToSecretDir => {
            fs::create_dir(vol.join("d")).unwrap();
            fs::write(vol.join("d/x"), "decoy-d").unwrap();
            symlink(&secret_tree, vol.join("d.alt")).unwrap();
            (vol.join("d"), vol.join("d.alt"))
        }
    };
    // Everything in the volume belongs to the attacker.
    for p in [&vol, &real, &alt] {
        lchown(p, Some(uid), Some(gid)).unwrap();
    }
    if vol.join("d/x").exists() {
        chown(vol.join("d/x"), Some(uid), Some(gid)).unwrap();
    }
    let mut cfg = vm::build_only_config(&sb, &vol);
    cfg["volumes"] = (0..VOLUMES)
        .map(|i| {
            let target = if i == 0 {
                "/srv/www".to_owned()
            } else {
                format!("/srv/v{i}")
            };
            json!({ "source": vol, "target": target })
        })
        .collect();
    sb.write_config("web", &cfg);

    // A clean build first: the race starts from a good image.
    let first = build_once(&sb, &disk, &sb.root.join("build-0.log"));
    assert!(
        first.status.is_some_and(|s| s.success()),
        "clean build failed: {}",
        first.log
    );

    let mut attacker = Attacker::spawn(uid, gid, &[(real.clone(), alt.clone())]);
    let mut violations: Vec<String> = Vec::new();
    let mut builds = 0u32;
    let mut slowest = Duration::ZERO;
    let mut max_used = 0u64;
    // Builds that met the swap between looking at an entry and opening it
    // (evidence that the race was really run, not just the steady states).
    let mut raced = 0u32;
    let t0 = Instant::now();
    while t0.elapsed() < RACE_TIME || builds < MIN_BUILDS {
        builds += 1;
        // A new input every round, so every build stages again.
        fs::write(vol.join("index.html"), builds.to_string()).unwrap();
        let log = sb.root.join(format!("build-{builds}.log"));
        let run = build_once(&sb, &disk, &log);
        slowest = slowest.max(run.took);
        if run.log.contains("changed while being staged") {
            raced += 1;
        }
        max_used = max_used.max(run.max_used);
        let tail: String = run
            .log
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ");
        match run.status {
            None => violations.push(format!(
                "build {builds} hung: killed after {:?} ({tail})",
                run.took
            )),
            Some(st) if !st.success() => {
                violations.push(format!("build {builds} failed ({st}): {tail}"))
            }
            Some(_) => {}
        }
        if run.max_used > DISK_LIMIT {
            violations.push(format!(
                "build {builds}: the state dir used {} MiB (limit {} MiB)",
                run.max_used >> 20,
                DISK_LIMIT >> 20
            ));
        }
        let (mut leaks, mut big) = (Vec::new(), Vec::new());
        scan(&sb.state_dir, &markers, &mut leaks, &mut big);
        for l in leaks {
            violations.push(format!("build {builds}: a root-only secret is in {l}"));
        }
        for b in big {
            violations.push(format!("build {builds}: oversized staged file {b}"));
        }
        // A hang costs BUILD_LIMIT each time and is conclusive.
        if run.status.is_none() {
            break;
        }
    }
    let swaps = attacker.stop();
    let total: u64 = swaps.iter().sum();
    eprintln!(
        "{test}: {builds} builds in {:.1} s against {total} swaps ({raced} builds met an entry \
         changing between look and open); slowest build {:.0} ms; state dir at most {:.1} MiB; \
         {} violations",
        t0.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        max_used as f64 / (1 << 20) as f64,
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{test}: {} of {builds} builds went wrong:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        total >= MIN_SWAPS,
        "{test}: only {total} swaps during the race (want >= {MIN_SWAPS})"
    );
    // The race did not stop staging: the last round's file is in the tree.
    assert_eq!(
        fs::read_to_string(sb.state_dir.join("web/staging/srv/www/index.html")).unwrap(),
        builds.to_string()
    );
    drop(volfs);
    drop(disk);
}

#[test]
fn attack_swap_file_with_symlink_to_root_only_file() {
    race(
        "attack_swap_file_with_symlink_to_root_only_file",
        Swap::SymlinkToSecretFile,
    );
}

#[test]
fn attack_swap_file_with_fifo() {
    race("attack_swap_file_with_fifo", Swap::Fifo);
}

#[test]
fn attack_swap_file_with_symlink_to_dev_zero() {
    race(
        "attack_swap_file_with_symlink_to_dev_zero",
        Swap::SymlinkToDevZero,
    );
}

#[test]
fn attack_swap_dir_with_symlink_to_root_only_dir() {
    race(
        "attack_swap_dir_with_symlink_to_root_only_dir",
        Swap::DirWithSymlinkToSecretDir,
    );
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line of the helper's stderr that carries its error.
fn error_line(err: &str) -> Option<&str> {
    err.lines().find(|l| l.starts_with("error:"))
}

#[test]
fn volume_source_through_a_symlink_is_refused() {
    let sb = Sandbox::new("srclink");
    let real = sb.root.join("real");
    fs::create_dir_all(real.join("vol")).unwrap();
    fs::write(real.join("vol/index.html"), "through a link").unwrap();
    symlink(&real, sb.root.join("link")).unwrap();
    symlink(real.join("vol"), sb.root.join("vol-link")).unwrap();
    // The source itself a symlink, and a symlink in a parent component.
    for source in [sb.root.join("vol-link"), sb.root.join("link/vol")] {
        let mut cfg = vm::build_only_config(&sb, &source);
        cfg["volumes"][0]["source"] = json!(source);
        sb.write_config("web", &cfg);
        let out = sb.run(None, &["build", "web"]);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "built from {}", source.display());
        let line = error_line(&err).unwrap_or_else(|| panic!("no error line: {err}"));
        assert!(
            line.contains("volumes[0].source") && line.contains(&*source.to_string_lossy()),
            "{line}"
        );
        assert!(line.contains("symlink"), "{line}");
        assert!(
            !sb.state_dir.join("web/staging").exists(),
            "staged through {}",
            source.display()
        );
    }
    // The same dir named by its real path builds.
    sb.write_config("web", &vm::build_only_config(&sb, &real.join("vol")));
    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn volume_data_over_the_limit_is_refused_before_anything_is_staged() {
    let sb = Sandbox::new("overlimit");
    let vol = sb.root.join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "small").unwrap();
    // 3 MiB apparent size (sparse: the limit counts apparent sizes).
    let big = fs::File::create(vol.join("big.bin")).unwrap();
    big.set_len(3 << 20).unwrap();
    let total = (3u64 << 20) + 5;

    let mut cfg = vm::build_only_config(&sb, &vol);
    cfg["volume_limit_mib"] = json!(2);
    sb.write_config("web", &cfg);
    let out = sb.run(None, &["build", "web"]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "built over the limit");
    let line = error_line(&err).unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&*vol.to_string_lossy())
            && line.contains(&total.to_string())
            && line.contains("volume_limit_mib")
            && line.contains("2 MiB"),
        "{line}"
    );
    assert!(
        !sb.state_dir.join("web/staging").exists(),
        "something was staged"
    );
    let leftovers: Vec<_> = fs::read_dir(sb.state_dir.join("web"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An out-of-range limit is a config error naming the field.
    cfg["volume_limit_mib"] = json!(0);
    sb.write_config("web", &cfg);
    let out = sb.run(None, &["build", "web"]);
    let err = stderr_of(&out);
    assert!(!out.status.success());
    assert!(err.contains("volume_limit_mib"), "{err}");

    // Under a big enough limit it builds.
    cfg["volume_limit_mib"] = json!(4);
    sb.write_config("web", &cfg);
    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}
