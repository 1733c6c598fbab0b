//! A real systemd as PID 1 for tests: a throwaway `systemd-nspawn` container
//! on the cached Debian bookworm rootfs (scripts/systemd-rootfs.sh), booted
//! with `--volatile=overlay` (the shared rootfs stays read-only; every
//! container writes to a tmpfs of its own, so tests are independent and run
//! in parallel) and `--private-network` (its own network namespace: bridge,
//! TAPs and nft tables die with it). Commands run inside through `nsenter`
//! into all of its namespaces, outside any unit. Dropped (also on panic):
//! the container's PID 1 gets SIGKILL by its PID, which ends every process
//! of its PID namespace (QEMU included), then nspawn exits and removes the
//! overlay; the host-side directory goes too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::netns::{skip, ChildGuard};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// PATH inside the container (the environment is not inherited).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The rootfs: MCP_SYSTEMD_ROOTFS (tests/run builds it first), else
/// scripts/systemd-rootfs.sh once per test binary. Err((skip?, reason)):
/// a missing prerequisite is a skip, anything else a failure.
fn rootfs() -> &'static Result<PathBuf, (bool, String)> {
    static ROOTFS: OnceLock<Result<PathBuf, (bool, String)>> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        if let Some(p) = std::env::var_os("MCP_SYSTEMD_ROOTFS") {
            let p = PathBuf::from(p);
            return if p.join("usr/lib/systemd/systemd").is_file() {
                Ok(p)
            } else {
                Err((
                    false,
                    format!("MCP_SYSTEMD_ROOTFS={} holds no systemd", p.display()),
                ))
            };
        }
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/systemd-rootfs.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| (false, format!("scripts/systemd-rootfs.sh: {e}")))?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
            Some(2) => Err((true, err.lines().last().unwrap_or("").to_owned())),
            _ => Err((false, format!("scripts/systemd-rootfs.sh failed: {err}"))),
        }
    })
}

/// Root, systemd-nspawn, nsenter, nix-instantiate and the rootfs; otherwise
/// the test reports itself skipped (by name, with the missing piece) and
/// gets None. A rootfs that fails to build for another reason panics.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    if !super::netns::require_root_or_skip(test) {
        return None;
    }
    for (prog, why) in [
        (
            "systemd-nspawn",
            "systemd-nspawn not found (apt-get install systemd-container)",
        ),
        ("nsenter", "nsenter not found (util-linux)"),
        (
            "nix-instantiate",
            "nix-instantiate not found: cannot render nixos/lib/units.nix and nftables.nix",
        ),
    ] {
        if !have(prog) {
            skip(test, why);
            return None;
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        skip(test, "no /dev/net/tun on this host");
        return None;
    }
    match rootfs() {
        Ok(p) => Some(p.clone()),
        Err((true, why)) => {
            skip(test, why);
            None
        }
        Err((false, why)) => panic!("{test}: {why}"),
    }
}

/// A file or directory of the host bound into the container.
pub struct Bind {
    pub host: PathBuf,
    pub inside: String,
    pub read_only: bool,
}

impl Bind {
    pub fn ro(host: impl Into<PathBuf>, inside: &str) -> Bind {
        Bind {
            host: host.into(),
            inside: inside.to_owned(),
            read_only: true,
        }
    }
}

/// The cgroup hierarchies nspawn uses, each as (mount point, our own
/// cgroup's path there): the unified one (cgroup2) and, on a hybrid host,
/// the legacy `name=systemd` one.
fn own_cgroups() -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut dirs = vec![];
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let opts = post.nth(1).unwrap_or("");
        // (hierarchy id, controller field) in /proc/self/cgroup.
        let (id, ctrl) = match fstype {
            "cgroup2" => ("0", ""),
            "cgroup" if opts.split(',').any(|o| o == "name=systemd") => ("", "name=systemd"),
            _ => continue,
        };
        let ours = cgroups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (i, c, path) = (f.next()?, f.next()?, f.next()?);
            (c == ctrl && (id.is_empty() || i == id)).then(|| path.to_owned())
        });
        if let Some(ours) = ours {
            dirs.push(PathBuf::from(mount).join(ours.trim_start_matches('/')));
        }
    }
    dirs
}

/// Remove a cgroup tree (depth first; only empty cgroups can go).
fn remove_cgroup(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

pub struct Container {
    pub machine: String,
    /// A cgroup of its own per hierarchy: with --keep-unit nspawn puts the
    /// container into `payload/` below the cgroup it runs in, so containers
    /// started from one cgroup would share (and fight over) one tree.
    cgroups: Vec<PathBuf>,
    /// Host-side scratch dir: console log, bound dirs. Removed on drop.
    pub dir: PathBuf,
    nspawn: ChildGuard,
    /// The container's PID 1 (systemd), as a host PID.
    pub leader: i32,
}

/// Parent PID and command name of a host process.
fn ppid_comm(pid: i32) -> Option<(i32, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat[close + 2..].split(' ');
    let state = rest.next()?;
    if state == "Z" {
        return None;
    }
    Some((rest.next()?.parse().ok()?, stat[open + 1..close].to_owned()))
}

fn child_named(parent: i32, comm: &str) -> Option<i32> {
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| ppid_comm(p).is_some_and(|(pp, c)| pp == parent && c == comm))
}

impl Container {
    /// Boot a fresh container on `rootfs` with the binds `prepare` returns
    /// (it gets the host-side scratch dir to put files into first); returns
    /// once its systemd reports the boot finished (`is-system-running --wait`).
    pub fn boot(test: &str, rootfs: &Path, prepare: impl FnOnce(&Path) -> Vec<Bind>) -> Container {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let short: String = test
            .trim_start_matches("systemd_")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(10)
            .collect();
        let machine = format!("mcpt-{short}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&machine);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let binds = prepare(&dir);
        let log = fs::File::create(dir.join("console.log")).unwrap();
        let mut cmd = Command::new("systemd-nspawn");
        // The unified cgroup hierarchy, else DevicePolicy= is not enforced
        // on this cgroup-v1 host; bpf() for systemd's device programs;
        // no machined/D-Bus on the host (its PID 1 is not systemd).
        cmd.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=overlay",
                "--private-network",
                "--system-call-filter=bpf",
                "--bind=/dev/net/tun",
                "--console=passive",
                "--boot",
            ])
            .arg(format!("--machine={machine}"))
            .arg("-D")
            .arg(rootfs);
        for b in &binds {
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{}", b.host.display(), b.inside));
        }
        let cgroups: Vec<PathBuf> = own_cgroups()
            .into_iter()
            .map(|d| d.join(&machine))
            .collect();
        let mut procs = vec![];
        for cg in &cgroups {
            fs::create_dir_all(cg)
                .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", cg.display()));
            procs.push(
                fs::OpenOptions::new()
                    .write(true)
                    .open(cg.join("cgroup.procs"))
                    .unwrap_or_else(|e| panic!("{}/cgroup.procs: {e}", cg.display())),
            );
        }
        let fds: Vec<i32> = procs.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        // SAFETY: between fork and exec only write(2) on fds opened before
        // the fork ("0" moves the writing process, i.e. the future nspawn).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                for &fd in &fds {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn systemd-nspawn");
        let mut nspawn = ChildGuard::new(child);
        let t0 = Instant::now();
        let leader = loop {
            if let Some(p) = child_named(nspawn.id() as i32, "systemd") {
                break p;
            }
            if let Some(st) = nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({st}) before booting: {}",
                    fs::read_to_string(dir.join("console.log")).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no systemd in the container after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(procs);
        let c = Container {
            machine,
            cgroups,
            dir,
            nspawn,
            leader,
        };
        // systemctl talks to PID 1 over this socket (no D-Bus needed).
        assert!(
            c.wait_until(Duration::from_secs(30), || c
                .path("/run/systemd/private")
                .exists()),
            "the container's systemd opened no /run/systemd/private in 30 s"
        );
        let out = c.run(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            state == "running" || state == "degraded",
            "container did not finish booting ({state}): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.text(&["systemctl", "--failed", "--no-legend"])
        );
        c
    }

    /// A command in all the container's namespaces, as root, outside any
    /// unit, with a clean environment.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", self.leader))
            .args([
                "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--root", "--wd", "--",
            ])
            .args([
                "env",
                "-i",
                &format!("PATH={PATH}"),
                "SYSTEMD_COLORS=0",
                "SYSTEMD_PAGER=",
                "LC_ALL=C",
            ])
            .args(argv)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, argv: &[&str]) -> Output {
        self.cmd(argv).output().expect("run nsenter")
    }

    /// stdout of a command that must succeed (panics with its stderr).
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "in {}: {argv:?} failed ({}): {}{}",
            self.machine,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// stdout of a command, whatever its status.
    pub fn text(&self, argv: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(argv).stdout).into_owned()
    }

    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// The host path of `inside` (the container's root, through /proc).
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(inside.trim_start_matches('/'))
    }

    pub fn write(&self, inside: &str, contents: &str, mode: u32) {
        let p = self.path(inside);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {inside}: {e}"));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&["systemctl", "show", "-p", prop, "--value", unit])
            .trim()
            .to_owned()
    }

    /// The unit's journal, message text only.
    pub fn journal(&self, unit: &str) -> String {
        self.text(&["journalctl", "--no-pager", "-o", "cat", "-u", unit])
    }

    /// Poll `f` every 100 ms until it is true or `limit` has passed.
    pub fn wait_until(&self, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        loop {
            if f() {
                return true;
            }
            if t0.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One HTTP GET from the container's network namespace (2 s limit).
    pub fn http_get(&self, url: &str) -> Option<String> {
        let out = self.run(&["curl", "-sf", "--max-time", "2", url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::env::var_os("MCP_KEEP_CONTAINER").is_some() {
            // Debugging aid: leave it running; the caller ends it by PID.
            eprintln!(
                "kept container {}: nsenter --target={} --all; end it with kill -KILL {}",
                self.machine, self.leader, self.leader
            );
            return;
        }
        if std::thread::panicking() {
            let j = self.text(&[
                "journalctl",
                "--no-pager",
                "-o",
                "short-monotonic",
                "-n",
                "300",
            ]);
            eprintln!("---- journal of {} (last 300 lines)\n{j}----", self.machine);
        }
        // Only while the PID is still our nspawn's child (not reused).
        let nspawn = self.nspawn.id() as i32;
        if ppid_comm(self.leader).is_some_and(|(pp, _)| pp == nspawn) {
            // SAFETY: kill(2) on a PID verified to be our container's init.
            unsafe { libc::kill(self.leader, libc::SIGKILL) };
        }
        let t0 = Instant::now();
        while self.nspawn.try_wait().is_none() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.nspawn.try_wait().is_none() {
            self.nspawn.kill_now();
            self.nspawn.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
        for cg in &self.cgroups {
            remove_cgroup(cg);
        }
    }
}

/// `nix-instantiate --eval --strict --json --expr EXPR`, which must succeed.
pub fn nix_eval(expr: &str) -> serde_json::Value {
    super::nix::nix_eval(expr).unwrap_or_else(|e| panic!("nix-instantiate: {e}"))
}

/// A Nix string literal.
pub fn nix_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '$' => o.push_str("\\$"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The shipped unit files of systemd/, placeholders substituted, written to
/// `dir` (bound at /usr/local/lib/systemd/system: a vendor unit dir, as the
/// package's lib/systemd/system is on NixOS).
pub fn install_shipped_units(dir: &Path, helper: &str, nft: &str) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    let mut names = vec![];
    for e in fs::read_dir(Path::new(ROOT).join("systemd"))
        .unwrap()
        .flatten()
    {
        let file = e.file_name().to_string_lossy().into_owned();
        let name = file.strip_suffix(".in").unwrap_or(&file).to_owned();
        let text = fs::read_to_string(e.path()).unwrap();
        let text = text
            .replace("@helper@", helper)
            .replace("@nft@", nft)
            .replace("@systemctl@", "/usr/bin/systemctl");
        // No other @word@ placeholder may be left for the installer to miss.
        for (i, _) in text.match_indices('@') {
            let word: String = text[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                word.is_empty() || !text[i + 1 + word.len()..].starts_with('@'),
                "unsubstituted placeholder @{word}@ in systemd/{file}"
            );
        }
        fs::write(dir.join(&name), text).unwrap();
        names.push(name);
    }
    names.sort();
    names
}
