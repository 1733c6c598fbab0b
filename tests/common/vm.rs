//! Test support for driving the real helper binary: per-test config/state/
//! runtime dirs, configs, the Linux stand-in guest's artifacts, a namespace
//! with the bridge, and HTTP probes from inside that namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::netns::NetNs;

pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-unikernel");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A private config/state/runtime tree under target/, removed on drop.
pub struct Sandbox {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // Short and under /tmp: QMP socket paths must stay under 108 bytes,
        // and the QEMU user must be able to reach its dirs.
        let short: String = tag.chars().take(12).collect();
        let root = std::env::temp_dir().join(format!("mcpt-{short}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("etc")).unwrap();
        Sandbox {
            config_dir: root.join("etc"),
            state_dir: root.join("state"),
            runtime_dir: root.join("run"),
            root,
        }
    }

    pub fn write_config(&self, name: &str, json: &serde_json::Value) -> PathBuf {
        let p = self.config_dir.join(format!("{name}.json"));
        fs::write(&p, serde_json::to_vec_pretty(json).unwrap()).unwrap();
        p
    }

    /// `mcp-unikernel --config-dir .. --state-dir .. --runtime-dir .. ARGS`,
    /// inside `ns` when given.
    pub fn cmd(&self, ns: Option<&NetNs>, args: &[&str]) -> Command {
        let mut c = match ns {
            Some(ns) => ns.cmd(BIN),
            None => Command::new(BIN),
        };
        c.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--runtime-dir")
            .arg(&self.runtime_dir)
            .args(args)
            .env_remove("MCP_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, ns: Option<&NetNs>, args: &[&str]) -> Output {
        self.cmd(ns, args).output().expect("run mcp-unikernel")
    }

    pub fn status_json(&self, ns: Option<&NetNs>, name: &str) -> serde_json::Value {
        let out = self.run(ns, &["status", name, "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A namespace with the bridge `mcp-br0` at 10.99.0.1/24, as the NixOS module
/// sets it up on a host.
pub fn bridge_ns(prefix: &str) -> NetNs {
    let ns = NetNs::new(prefix);
    ns.run(&["ip", "link", "add", "mcp-br0", "type", "bridge"]);
    ns.run(&["ip", "addr", "add", "10.99.0.1/24", "dev", "mcp-br0"]);
    ns.run(&["ip", "link", "set", "mcp-br0", "up"]);
    ns
}

pub fn links(ns: &NetNs) -> String {
    ns.run(&["ip", "-o", "link", "show"])
}

/// One HTTP GET from inside the namespace (curl, 2 s limit).
pub fn http_get(ns: &NetNs, url: &str) -> Option<String> {
    let out = ns
        .cmd("curl")
        .args(["-sf", "--max-time", "2", url])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll until a GET returns `want` (or until `limit`); returns the time taken.
pub fn wait_http(ns: &NetNs, url: &str, want: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if http_get(ns, url).as_deref() == Some(want) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

pub fn accel() -> String {
    std::env::var("MCP_TEST_ACCEL").unwrap_or_else(|_| "tcg".into())
}

/// The QEMU user the tests run VMs as (created by .ci/run), when it exists.
pub fn qemu_user() -> Option<String> {
    let user = std::env::var("MCP_TEST_QEMU_USER").unwrap_or_else(|_| "mcp-qemu".into());
    let out = Command::new("id").arg("-u").arg(&user).output().ok()?;
    out.status.success().then_some(user)
}

/// Artifacts of the Linux stand-in for Nanos (no Nanos kernel exists in CI).
pub struct StandinGuest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub file_server: PathBuf,
}

static GUEST_BUILD: Mutex<()> = Mutex::new(());

/// A static guest program built by tests/run: `$env`, else its default path
/// under target/.
fn static_program(env: &str, bin: &str, what: &str) -> Result<PathBuf, String> {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        Path::new(ROOT)
            .join("target/x86_64-unknown-linux-gnu/release")
            .join(bin)
    });
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{what} {} missing (tests/run builds it)",
            p.display()
        ))
    }
}

/// The static example server (examples/file-server).
pub fn file_server() -> Result<PathBuf, String> {
    static_program("MCP_FILE_SERVER", "file-server", "static example server")
}

/// The static net-probe test guest (tests/net-probe).
pub fn net_probe() -> Result<PathBuf, String> {
    static_program("MCP_NET_PROBE", "net-probe", "static net-probe")
}

/// FNV-1a over the files tests/guest/build-initramfs.sh puts into the base
/// initramfs (and the script itself).
fn guest_sources_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in [
        "build-initramfs.sh",
        "init",
        "power-button",
        "udhcpc.script",
        "debug-exit.s",
    ] {
        let bytes = fs::read(Path::new(ROOT).join("tests/guest").join(f)).unwrap_or_default();
        for b in f.bytes().chain([0u8]).chain(bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Kernel, base initramfs (built once per test binary by
/// tests/guest/build-initramfs.sh) and the static example server.
pub fn standin_guest() -> Result<StandinGuest, String> {
    let _g = GUEST_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = match std::env::var_os("MCP_TEST_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => {
            let mut ks: Vec<PathBuf> = fs::read_dir("/boot")
                .map_err(|e| format!("/boot: {e}"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with("vmlinuz-")
                            && n.to_string_lossy().ends_with("-cloud-amd64")
                    })
                })
                .collect();
            ks.sort();
            ks.pop()
                .ok_or("no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)")?
        }
    };
    let version = kernel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    // Keyed by the sources too, so an edited init is never booted stale.
    let initrd = Path::new(ROOT).join(format!(
        "target/test-guest/base-initramfs-{version}-{:016x}.cpio.gz",
        guest_sources_hash()
    ));
    if !initrd.is_file() {
        fs::create_dir_all(initrd.parent().unwrap()).unwrap();
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("tests/guest/build-initramfs.sh"))
            .arg(&initrd)
            .arg(&version)
            .output()
            .map_err(|e| format!("build-initramfs.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "build-initramfs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(StandinGuest {
        kernel,
        initrd,
        file_server: file_server()?,
    })
}

/// The guest a VM test boots: a Nanos image built by real `ops` (with
/// MCP_NANOS_DIR), or the Linux stand-in for Nanos (direct kernel boot).
pub enum Guest {
    Standin(StandinGuest),
    Nanos {
        dir: PathBuf,
        ops: String,
        file_server: PathBuf,
    },
}

impl Guest {
    pub fn label(&self) -> &'static str {
        match self {
            Guest::Standin(_) => "Linux stand-in for Nanos",
            Guest::Nanos { .. } => "Nanos",
        }
    }

    /// A bridge-mode config running the example server on `volume/index.html`.
    pub fn config(&self, name: &str, ip: &str, volume: &Path) -> serde_json::Value {
        let mut cfg = serde_json::json!({
            "schema_version": 1,
            "name": name,
            "args": ["--listen", "0.0.0.0:8080", "--file", "/srv/www/index.html"],
            "memory_mib": 128,
            "accel": accel(),
            "network": { "ip": ip },
            "volumes": [ { "source": volume, "target": "/srv/www" } ],
            "stop_timeout_secs": 20
        });
        match self {
            Guest::Standin(g) => {
                cfg["program"] = serde_json::json!(g.file_server);
                cfg["direct_boot"] = serde_json::json!({ "kernel": g.kernel, "initrd": g.initrd, "append": "quiet no_timer_check" });
            }
            Guest::Nanos {
                dir,
                ops,
                file_server,
            } => {
                cfg["program"] = serde_json::json!(file_server);
                cfg["nanos_dir"] = serde_json::json!(dir);
                cfg["ops"] = serde_json::json!(ops);
            }
        }
        if let Some(u) = qemu_user() {
            cfg["qemu_user"] = u.clone().into();
            cfg["qemu_group"] = u.into();
        }
        cfg
    }
}

/// `ops` for tests: MCP_TEST_OPS (set by tests/run), else `ops` on PATH.
pub fn ops() -> Result<String, String> {
    let ops = std::env::var("MCP_TEST_OPS").unwrap_or_else(|_| "ops".into());
    let found = Command::new(&ops)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match found {
        Ok(_) => Ok(ops),
        Err(e) => Err(format!(
            "ops not runnable ({ops}: {e}); .ci/run installs it"
        )),
    }
}

/// A Nanos guest when MCP_NANOS_DIR names a dir with kernel.img and boot.img.
pub fn nanos_guest() -> Result<Guest, String> {
    let dir = std::env::var_os("MCP_NANOS_DIR").ok_or("no MCP_NANOS_DIR")?;
    let dir = PathBuf::from(dir);
    for f in ["kernel.img", "boot.img"] {
        if !dir.join(f).is_file() {
            return Err(format!("MCP_NANOS_DIR={} has no {f}", dir.display()));
        }
    }
    Ok(Guest::Nanos {
        dir,
        ops: ops()?,
        file_server: file_server()?,
    })
}

/// A QEMU exit the unit counts as clean (`SuccessExitStatus=1 31`, plus 0):
/// 0 = QMP quit / SIGTERM / guest powered off without isa-debug-exit;
/// (c << 1) | 1 through isa-debug-exit, c = 0 (program exited 0) or 15
/// (program ended by SIGTERM, the power button of `stop`).
pub fn clean_qemu_exit(st: std::process::ExitStatus) -> bool {
    matches!(st.code(), Some(0 | 1 | 31))
}

/// Fields of /proc/PID/status.
pub fn proc_status(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().to_owned())
    })
}

/// Root, the guest (Nanos when `nanos`, else the Linux stand-in) and a QEMU
/// user, with a sandbox and a namespace holding the bridge; otherwise the
/// test reports itself skipped (by name, with the reason) and gets None.
pub fn vm_setup(test: &str, nanos: bool) -> Option<(Sandbox, NetNs, Guest)> {
    if !super::netns::require_root_or_skip(test) {
        return None;
    }
    let guest = if nanos {
        nanos_guest()
    } else {
        standin_guest().map(Guest::Standin)
    };
    let guest = match guest {
        Ok(g) => g,
        Err(e) => {
            super::netns::skip(test, &e);
            return None;
        }
    };
    if qemu_user().is_none() {
        super::netns::skip(test, "no mcp-qemu user to run QEMU as (.ci/run creates it)");
        return None;
    }
    Some((Sandbox::new(test), bridge_ns("vm"), guest))
}

/// State, parent PID and command name of a process, from /proc/PID/stat.
struct ProcStat {
    state: char,
    ppid: i32,
    comm: String,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let mut rest = stat[close + 2..].split(' ');
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        comm: stat[open + 1..close].to_owned(),
    })
}

/// Children of `parent` named `comm` that still run (zombies left out).
pub fn children_named(parent: i32, comm: &str) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|s| s.ppid == parent && s.comm == comm && s.state != 'Z')
        })
        .collect()
}

/// How an orphaned process ended, reaped by this (subreaper) test process.
#[derive(Debug, PartialEq, Eq)]
pub enum OrphanEnd {
    Exited(i32),
    Signalled(i32),
}

/// Wait (up to `limit`) for `pid`, an orphan reparented to this test
/// process (see `kill_helper_during_ops_build`), and say how it ended.
pub fn reap_orphan(pid: i32, limit: Duration) -> Option<OrphanEnd> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let mut status = 0;
        // SAFETY: waitpid on one PID with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFSIGNALED(status) {
                OrphanEnd::Signalled(libc::WTERMSIG(status))
            } else {
                OrphanEnd::Exited(libc::WEXITSTATUS(status))
            });
        }
        assert!(
            r == 0,
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Run the helper with `args` (`build NAME` or `start NAME`), wait until its
/// `ops` child runs, let ops work for `into_build`, then SIGKILL the helper
/// (by its PID; it is our child) and return the PID of that ops process.
/// Panics when ops never appeared or the helper exited before it could be
/// killed (make the volume larger then).
pub fn kill_helper_during_ops_build(
    sb: &Sandbox,
    ns: Option<&NetNs>,
    args: &[&str],
    into_build: Duration,
) -> i32 {
    // Orphans (the helper's ops, once the helper is dead) are reparented to
    // this process, so the test can reap them and see how they ended.
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
    let child = sb
        .cmd(ns, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let mut guard = super::netns::ChildGuard::new(child);
    let helper = guard.id() as i32;
    let t0 = Instant::now();
    // The `ops build` child (the helper asks `ops version` first).
    let is_build = |pid: &i32| {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == b"build"))
            .unwrap_or(false)
    };
    let ops_pid = loop {
        if let Some(&pid) = children_named(helper, "ops").iter().find(|p| is_build(p)) {
            break pid;
        }
        if let Some(st) = guard.try_wait() {
            panic!("helper exited ({st}) before its ops build was seen");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no ops child of the helper within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(into_build);
    // Still our helper's running child: the PID cannot have been reused.
    assert!(
        children_named(helper, "ops").contains(&ops_pid),
        "ops finished within {into_build:?}; make the volume larger"
    );
    guard.kill_now();
    let st = guard.wait();
    assert!(
        !st.success(),
        "the helper finished before it could be killed: {st}"
    );
    ops_pid
}

/// A build-only stand-in config with placeholder kernel/initrd files (no boot
/// happens): for tests of staging, image swaps and builds.
pub fn build_only_config(sb: &Sandbox, vol: &Path) -> serde_json::Value {
    let kernel = sb.root.join("placeholder-kernel");
    let initrd = sb.root.join("placeholder-initrd");
    fs::write(&kernel, b"placeholder kernel").unwrap();
    fs::write(&initrd, b"").unwrap();
    serde_json::json!({
        "schema_version": 1,
        "name": "web",
        "program": "/bin/true",
        "network": { "ip": "10.99.0.2" },
        "volumes": [ { "source": vol, "target": "/srv/www" } ],
        "direct_boot": { "kernel": kernel, "initrd": initrd }
    })
}
