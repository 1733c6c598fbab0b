//! Lifecycle benchmark (`cargo bench --bench lifecycle`, wrapped by
//! `scripts/bench.sh`): one Markdown table, measured in one run on this
//! machine, for the Nanos guest when `MCP_NANOS_DIR` is set and otherwise for
//! the Linux stand-in guest (Debian cloud kernel + busybox initramfs, direct
//! kernel boot; see tests/guest/). Needs root, QEMU and the `mcp-qemu` user.
//!
//! 1. Warm start: `mcp-unikernel start` (image cached) until the first HTTP 200
//!    from the guest, against plain `qemu-system-x86_64` started by hand with
//!    the same argv (read from the helper's QEMU in /proc/PID/cmdline), on a
//!    TAP made by hand (`ip tuntap add ... user mcp-qemu`, isolated bridge
//!    port), as the QEMU user (`setpriv`). Plus the helper's own time before
//!    it execs QEMU: its logged `prep_us`, and the time the process was seen
//!    as `mcp-unikernel` in /proc before it became QEMU.
//! 2. Cold start: the same with the VM's state dir removed (stage + build),
//!    against building the same image by hand (`ops build` for Nanos; for the
//!    stand-in `cp` + `cpio` + `cat` of the same initramfs) plus the same
//!    plain-QEMU boot.
//! 3. The "nothing changed" check: `mcp-unikernel build` on a VM with
//!    100 MiB of volume data whose image is current (whole command, wall).
//! 4. Stop: from spawning `mcp-unikernel stop` until the QEMU process exits
//!    (the guest's ACPI power-down), against QMP `system_powerdown` by hand.
//! 5. Density: N VMs (64 MiB each) started together on one bridge, until all
//!    serve; host memory per VM (QEMU PSS/RSS, MemAvailable drop); resident
//!    `mcp-unikernel` processes.
//!
//! Every network action happens inside a network namespace this bench creates
//! (deleted at the end, also on failure, together with the TAPs in it); every
//! process it starts is killed by its own PID if still running at the end.
//!
//! Arguments (after `--`): --runs N (5), --vms N (20), --density-runs N (5),
//! --vm-mib M (64), --volume-mib M (100), --only warm,cold,check,density,
//! --out FILE (also write the report there). `--bench` (from cargo) is ignored.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::netns::{ChildGuard, NetNs};
use common::vm::{self, Guest, Sandbox, BIN};

type R<T> = Result<T, String>;

// ---------------------------------------------------------------- options

struct Opts {
    runs: usize,
    vms: usize,
    density_runs: usize,
    vm_mib: u64,
    volume_mib: u64,
    only: Option<Vec<String>>,
    out: Option<PathBuf>,
}

impl Opts {
    fn parse() -> R<Opts> {
        let mut o = Opts {
            runs: 5,
            vms: 20,
            density_runs: 5,
            vm_mib: 64,
            volume_mib: 100,
            only: None,
            out: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut val = |what: &str| it.next().ok_or(format!("{what} needs a value"));
            let num = |s: String, what: &str| {
                s.parse::<usize>()
                    .map_err(|_| format!("{what}: not a number: {s}"))
            };
            match a.as_str() {
                "--bench" => {}
                "--runs" => o.runs = num(val("--runs")?, "--runs")?.max(1),
                "--vms" => o.vms = num(val("--vms")?, "--vms")?.clamp(1, 200),
                "--density-runs" => {
                    o.density_runs = num(val("--density-runs")?, "--density-runs")?.max(1)
                }
                "--vm-mib" => o.vm_mib = num(val("--vm-mib")?, "--vm-mib")? as u64,
                "--volume-mib" => o.volume_mib = num(val("--volume-mib")?, "--volume-mib")? as u64,
                "--only" => o.only = Some(val("--only")?.split(',').map(str::to_owned).collect()),
                "--out" => o.out = Some(PathBuf::from(val("--out")?)),
                "-h" | "--help" => {
                    println!(
                        "lifecycle bench: --runs N (5) --vms N (20) --density-runs N (5) --vm-mib M (64) \
                         --volume-mib M (100) --only warm,cold,check,density --out FILE"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other} (see --help)")),
            }
        }
        Ok(o)
    }
    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .map_or(true, |l| l.iter().any(|p| p == part))
    }
}

// ---------------------------------------------------------------- interrupt

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

fn check_interrupt() -> R<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn progress(msg: &str) {
    eprintln!("[bench {:>7.1}s] {msg}", started().elapsed().as_secs_f64());
}

fn started() -> Instant {
    use std::sync::OnceLock;
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

// ---------------------------------------------------------------- statistics

#[derive(Clone, Copy)]
enum Unit {
    Secs,
    Ms,
    Ratio,
    MiB,
    Count,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Secs => format!("{v:.2} s"),
            Unit::Ms => format!("{v:.1} ms"),
            Unit::Ratio => format!("{v:.3}"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// A target: the median (or, for counts, the maximum) must be at most this.
#[derive(Clone, Copy)]
struct Target {
    max: f64,
    on_max: bool,
}

struct Row {
    fig: &'static str,
    label: String,
    unit: Unit,
    vals: Vec<f64>,
    target: Option<Target>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
}

impl Row {
    fn new(
        fig: &'static str,
        label: impl Into<String>,
        unit: Unit,
        vals: Vec<f64>,
        target: Option<Target>,
    ) -> Row {
        Row {
            fig,
            label: label.into(),
            unit,
            vals,
            target,
        }
    }
    /// (met, judged value)
    fn judge(&self) -> Option<(bool, f64)> {
        let t = self.target?;
        if self.vals.is_empty() {
            return None;
        }
        let v = if t.on_max {
            max(&self.vals)
        } else {
            median(&self.vals)
        };
        Some((v <= t.max + 1e-9, v))
    }
}

// ---------------------------------------------------------------- processes

fn canon(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

fn exe_of(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn cmdline_of(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut v: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if v.last().is_some_and(|s| s.is_empty()) {
        v.pop();
    }
    (!v.is_empty()).then_some(v)
}

/// Follow a spawned child (`ip netns exec` → helper → QEMU, one PID) in /proc:
/// when it was first seen running the helper, and when first seen as QEMU.
fn watch_exec(pid: u32, helper: &Path, limit: Duration) -> (Option<Instant>, Option<Instant>) {
    let t0 = Instant::now();
    let mut as_helper = None;
    while t0.elapsed() < limit {
        match exe_of(pid) {
            Some(e) => {
                if as_helper.is_none() && e == helper {
                    as_helper = Some(Instant::now());
                }
                if e.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("qemu-system"))
                {
                    return (as_helper, Some(Instant::now()));
                }
            }
            None => return (as_helper, None), // exited (or a zombie)
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    (as_helper, None)
}

fn wait_exit(g: &mut ChildGuard, limit: Duration) -> Option<(ExitStatus, Instant)> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = g.try_wait() {
            return Some((st, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn run_ok(cmd: &mut Command) -> R<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_ns(ns: &NetNs, args: &[&str]) -> R<String> {
    run_ok(Command::new("ip").arg("-n").arg(&ns.name).args(args))
}

/// The last `key=<digits>` on a line containing `marker`.
fn log_number(log: &str, marker: &str, key: &str) -> Option<f64> {
    let pat = format!("{key}=");
    log.lines()
        .rev()
        .filter(|l| l.contains(marker))
        .find_map(|l| {
            let i = l.rfind(&pat)? + pat.len();
            let digits: String = l[i..].chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<f64>().ok()
        })
}

// ---------------------------------------------------------------- HTTP probe inside the namespace

fn enter_netns(ns: &str) -> R<()> {
    let f =
        fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("/run/netns/{ns}: {e}"))?;
    // SAFETY: a valid fd of a network namespace; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns({ns}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One GET; Some(body) on a 200.
fn http_get_200(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            addr.ip()
        )
        .as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status_ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    status_ok.then_some(body)
}

/// A thread in the namespace polling `ip:port` until a 200 (or limit/cancel).
/// Returns the instant of the first 200 and its body.
fn probe(
    ns: &str,
    ip: Ipv4Addr,
    port: u16,
    every: Duration,
    limit: Duration,
    cancel: Arc<AtomicBool>,
) -> JoinHandle<R<(Instant, String)>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        let addr = SocketAddr::from((ip, port));
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if cancel.load(Ordering::SeqCst) || INTERRUPTED.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            if let Some(body) = http_get_200(addr) {
                return Ok((Instant::now(), body));
            }
            std::thread::sleep(every);
        }
        Err(format!("no HTTP 200 from {addr} within {limit:?}"))
    })
}

/// Wait for a probe while watching that the VM process is alive.
fn await_probe(
    h: JoinHandle<R<(Instant, String)>>,
    cancel: &Arc<AtomicBool>,
    vm: &mut ChildGuard,
    log: &Path,
) -> R<(Instant, String)> {
    while !h.is_finished() {
        if let Some(st) = vm.try_wait() {
            cancel.store(true, Ordering::SeqCst);
            let _ = h.join();
            return Err(format!(
                "VM process exited ({st}) before serving; log {}:\n{}",
                log.display(),
                tail(log, 30)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join()
        .map_err(|_| "probe thread panicked".to_string())?
        .map_err(|e| format!("{e}; log {}:\n{}", log.display(), tail(log, 30)))
}

fn tail(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------- QMP by hand

fn qmp_cmd(sock: &Path, cmd: &str) -> R<()> {
    let s = UnixStream::connect(sock).map_err(|e| format!("QMP {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("QMP greeting: {e}"))?;
    for c in ["qmp_capabilities", cmd] {
        w.write_all(format!("{{\"execute\":\"{c}\"}}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        loop {
            line.clear();
            if r.read_line(&mut line)
                .map_err(|e| format!("QMP {c}: {e}"))?
                == 0
            {
                return Err(format!("QMP closed during {c}"));
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                return Err(format!("QMP {c}: {line}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- machine facts

fn read(p: &str) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

fn meminfo_kib(key: &str) -> Option<f64> {
    read("/proc/meminfo").lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn smaps_kib(pid: u32, key: &str) -> Option<f64> {
    read(&format!("/proc/{pid}/smaps_rollup"))
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
}

fn header(guest: &Guest, accel: &str, opts: &Opts) -> String {
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|r| {
                r.trim_start_matches(|c: char| c == ':' || c.is_whitespace())
                    .to_owned()
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = meminfo_kib("MemTotal")
        .map(|k| format!("{:.1} GiB", k / 1048576.0))
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["-C", vm::ROOT, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let guest_detail = match guest {
        Guest::Standin(g) => format!(
            "Linux stand-in for Nanos (kernel {}, busybox initramfs, direct kernel boot; no MCP_NANOS_DIR)",
            g.kernel.file_name().unwrap().to_string_lossy()
        ),
        Guest::Nanos { dir, ops, .. } => format!("Nanos (MCP_NANOS_DIR={}, ops {ops})", dir.display()),
    };
    let accel_detail = match accel {
        "tcg" => "tcg (QEMU software emulation, `-accel tcg -cpu max`)".to_owned(),
        "kvm" => "kvm (`-accel kvm -cpu host`)".to_owned(),
        a => a.to_owned(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Lifecycle benchmark: {} guest, accel {accel}\n",
        guest.label()
    );
    let _ = writeln!(s, "- guest: {guest_detail}");
    let _ = writeln!(s, "- acceleration: {accel_detail}");
    let _ = writeln!(
        s,
        "- machine: {cpu}, {cores} cores, {mem} RAM; {os}; Linux {kernel}"
    );
    let _ = writeln!(
        s,
        "- QEMU: {qemu}; helper: release build of commit {commit}"
    );
    let _ = writeln!(
        s,
        "- date: {date}; host CPU busy just before the run: {:.0} % (1 s sample of /proc/stat); load average {}",
        cpu_busy_percent(Duration::from_secs(1)),
        read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        s,
        "- runs: {} per figure (after one discarded warm-up); density: {} VMs, {} MiB each requested, {} rounds",
        opts.runs, opts.vms, opts.vm_mib, opts.density_runs
    );
    s
}

/// Share of non-idle CPU time over `d`, all CPUs (other work on the machine
/// disturbs every figure; the header says how much there was).
fn cpu_busy_percent(d: Duration) -> f64 {
    let sample = || -> Option<(f64, f64)> {
        let line = read("/proc/stat").lines().next()?.to_owned();
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let idle = v.get(3)? + v.get(4).unwrap_or(&0.0);
        Some((v.iter().sum(), idle))
    };
    let (Some((t0, i0)), Some((t1, i1))) = (sample(), {
        std::thread::sleep(d);
        sample()
    }) else {
        return f64::NAN;
    };
    if t1 > t0 {
        100.0 * (1.0 - (i1 - i0) / (t1 - t0))
    } else {
        f64::NAN
    }
}

// ---------------------------------------------------------------- the VM under test

struct Vm<'a> {
    sb: &'a Sandbox,
    ns: &'a NetNs,
    name: String,
    ip: Ipv4Addr,
    cfg: serde_json::Value,
    /// What the guest serves (the volume's index.html).
    body: String,
}

struct Started {
    guard: ChildGuard,
    log: PathBuf,
    t0: Instant,
}

impl<'a> Vm<'a> {
    fn new(
        sb: &'a Sandbox,
        ns: &'a NetNs,
        guest: &Guest,
        name: &str,
        ip: Ipv4Addr,
        vol: &Path,
        mib: u64,
    ) -> R<Vm<'a>> {
        let mut cfg = guest.config(name, &ip.to_string(), vol);
        cfg["memory_mib"] = mib.into();
        if cfg["direct_boot"].is_object() {
            // Linux stand-in only: with many TCG guests on 2 cores a starved
            // vCPU fails Linux's IO-APIC timer check and panics ("IO-APIC +
            // timer doesn't work!"); the usual switch for virtual machines.
            cfg["direct_boot"]["append"] = "quiet no_timer_check".into();
        }
        let path = sb.write_config(name, &cfg);
        // The guest's MAC as the helper derives it: a permanent neighbour
        // entry on the bridge takes ARP timing out of the measurement.
        let out = run_ok(Command::new(BIN).arg("check-config").arg(&path))?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let mac = v["network"]["mac"]
            .as_str()
            .ok_or("check-config printed no MAC")?
            .to_owned();
        ip_ns(
            ns,
            &[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac,
                "dev",
                "mcp-br0",
                "nud",
                "permanent",
            ],
        )?;
        let body = fs::read_to_string(vol.join("index.html"))
            .map_err(|e| format!("{}: {e}", vol.display()))?;
        Ok(Vm {
            sb,
            ns,
            name: name.into(),
            ip,
            cfg,
            body,
        })
    }

    /// One uid per VM: the helper refuses a QEMU user shared by two configs.
    fn set_user(&mut self, user: &str) {
        self.cfg["qemu_user"] = user.into();
        self.cfg["qemu_group"] = user.into();
        self.sb.write_config(&self.name, &self.cfg);
    }

    fn set_memory(&mut self, mib: u64) {
        self.cfg["memory_mib"] = mib.into();
        self.sb.write_config(&self.name, &self.cfg);
    }

    fn tap(&self) -> String {
        format!("mcp-{}", self.name)
    }

    fn log_path(&self, what: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        self.sb.root.join(format!("{}-{what}-{n}.log", self.name))
    }

    /// `mcp-unikernel build NAME`, timed (spawn → exit); stdout and stderr.
    fn build(&self) -> R<(Duration, String, String)> {
        let t0 = Instant::now();
        let out = self
            .sb
            .cmd(None, &["build", &self.name])
            .output()
            .map_err(|e| e.to_string())?;
        let took = t0.elapsed();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        if !out.status.success() {
            return Err(format!("build {} failed: {o}{e}", self.name));
        }
        Ok((took, o, e))
    }

    /// Spawn `ip netns exec NS mcp-unikernel start NAME`.
    fn spawn_start(&self) -> R<Started> {
        let log = self.log_path("start");
        let f = fs::File::create(&log).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = self
            .sb
            .cmd(Some(self.ns), &["start", &self.name])
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .spawn()
            .map_err(|e| format!("spawn start: {e}"))?;
        Ok(Started {
            guard: ChildGuard::new(child),
            log,
            t0,
        })
    }

    /// Plain QEMU by hand: `ip netns exec NS setpriv --reuid U --regid G
    /// --clear-groups -- <argv>` with a TAP made by hand beforehand.
    fn spawn_plain(&self, argv: &[String], user: &str) -> R<Started> {
        self.hand_tap(user)?;
        // QEMU's own dir (socket, pidfile, overlay), as the helper makes it.
        let vm_dir = self.sb.runtime_dir.join(&self.name).join("vm");
        let _ = fs::remove_dir_all(&vm_dir);
        fs::create_dir_all(&vm_dir).map_err(|e| e.to_string())?;
        run_ok(
            Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(&vm_dir),
        )?;
        let log = self.log_path("plain");
        let f = fs::File::create(&log).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = self
            .ns
            .cmd("setpriv")
            .args(["--reuid", user, "--regid", user, "--clear-groups", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .spawn()
            .map_err(|e| format!("spawn plain QEMU: {e}"))?;
        Ok(Started {
            guard: ChildGuard::new(child),
            log,
            t0,
        })
    }

    /// The TAP as an operator would make it for a hand-started QEMU.
    fn hand_tap(&self, user: &str) -> R<()> {
        let tap = self.tap();
        let _ = ip_ns(self.ns, &["link", "del", &tap]);
        ip_ns(
            self.ns,
            &[
                "tuntap", "add", "dev", &tap, "mode", "tap", "user", user, "group", user,
            ],
        )?;
        ip_ns(self.ns, &["link", "set", "dev", &tap, "master", "mcp-br0"])?;
        ip_ns(
            self.ns,
            &[
                "link",
                "set",
                "dev",
                &tap,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ],
        )?;
        ip_ns(self.ns, &["link", "set", "dev", &tap, "up"])?;
        Ok(())
    }

    fn probe(
        &self,
        every: Duration,
        limit: Duration,
        cancel: Arc<AtomicBool>,
    ) -> JoinHandle<R<(Instant, String)>> {
        probe(&self.ns.name, self.ip, 8080, every, limit, cancel)
    }

    /// `stop` (helper) → QEMU exit. Returns (stop → exit, the stop command's line).
    fn stop_helper(&self, s: &mut Started) -> R<(Duration, String)> {
        let mut cmd = self.sb.cmd(None, &["stop", &self.name]);
        let t0 = Instant::now();
        // `stop` is bounded by its own timeouts (stop_timeout_secs + quit + kill).
        let stop = std::thread::spawn(move || cmd.output());
        let waited = wait_exit(&mut s.guard, Duration::from_secs(90));
        let out = stop
            .join()
            .map_err(|_| "stop thread panicked".to_string())?
            .map_err(|e| format!("spawn stop: {e}"))?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (st, t_exit) =
            waited.ok_or_else(|| format!("QEMU still running 90 s after stop ({said})"))?;
        if !out.status.success() {
            return Err(format!(
                "stop failed ({}): {said}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // 0: quit; 1: the program exited 0; 31: it ended by SIGTERM (docs/helper.md).
        if !common::vm::clean_qemu_exit(st) {
            return Err(format!(
                "QEMU exit status {st} after stop; log:\n{}",
                tail(&s.log, 20)
            ));
        }
        self.cleanup()?;
        Ok((t_exit - t0, said))
    }

    /// QMP `system_powerdown` by hand → QEMU exit.
    fn stop_plain(&self, s: &mut Started) -> R<Duration> {
        let vm_dir = self.sb.runtime_dir.join(&self.name).join("vm");
        let sock = vm_dir.join("qmp.sock");
        let t0 = Instant::now();
        qmp_cmd(&sock, "system_powerdown")?;
        let (st, t_exit) = wait_exit(&mut s.guard, Duration::from_secs(60))
            .ok_or("plain QEMU still running 60 s after system_powerdown")?;
        if !common::vm::clean_qemu_exit(st) {
            return Err(format!("plain QEMU exit status {st}"));
        }
        let _ = ip_ns(self.ns, &["link", "del", &self.tap()]);
        let _ = fs::remove_dir_all(&vm_dir);
        Ok(t_exit - t0)
    }

    fn cleanup(&self) -> R<()> {
        run_ok(&mut self.sb.cmd(Some(self.ns), &["cleanup", &self.name])).map(|_| ())
    }
}

// ---------------------------------------------------------------- figures

struct Ctx<'a> {
    guest: &'a Guest,
    user: String,
    helper: PathBuf,
    rows: Vec<Row>,
    notes: Vec<String>,
}

const BOOT_LIMIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(20);

/// One helper start until HTTP 200: (start → 200, prep_us ms, helper seen → QEMU seen, rebuilt, log, started).
struct HelperRun {
    to_200: Duration,
    prep_ms: Option<f64>,
    seen_ms: Option<f64>,
    rebuilt: Option<bool>,
}

fn helper_start(ctx: &Ctx, vm: &Vm) -> R<(HelperRun, Started)> {
    check_interrupt()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let prober = vm.probe(POLL, BOOT_LIMIT, cancel.clone());
    let mut s = vm.spawn_start()?;
    let (as_helper, as_qemu) = watch_exec(s.guard.id(), &ctx.helper, Duration::from_secs(30));
    let (t200, body) = match await_probe(prober, &cancel, &mut s.guard, &s.log) {
        Ok(x) => x,
        Err(e) => {
            s.guard.kill_now();
            return Err(e);
        }
    };
    let log = fs::read_to_string(&s.log).unwrap_or_default();
    if !body.contains(&vm.body) {
        s.guard.kill_now();
        return Err(format!(
            "{} served {body:?}, not its volume file {:?}",
            vm.name, vm.body
        ));
    }
    let run = HelperRun {
        to_200: t200 - s.t0,
        prep_ms: log_number(&log, " exec ", "prep_us").map(|us| us / 1000.0),
        seen_ms: match (as_helper, as_qemu) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1000.0),
            _ => None,
        },
        rebuilt: if log.contains("rebuilt=true") {
            Some(true)
        } else if log.contains("rebuilt=false") {
            Some(false)
        } else {
            None
        },
    };
    Ok((run, s))
}

fn plain_start(vm: &Vm, argv: &[String], user: &str) -> R<(Duration, Started)> {
    check_interrupt()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let prober = vm.probe(POLL, BOOT_LIMIT, cancel.clone());
    let mut s = vm.spawn_plain(argv, user)?;
    let (t200, body) = match await_probe(prober, &cancel, &mut s.guard, &s.log) {
        Ok(x) => x,
        Err(e) => {
            s.guard.kill_now();
            let _ = s.guard.wait();
            return Err(e);
        }
    };
    if !body.contains(&vm.body) {
        s.guard.kill_now();
        return Err(format!(
            "plain QEMU for {} served {body:?}, not {:?}",
            vm.name, vm.body
        ));
    }
    Ok((t200 - s.t0, s))
}

/// Figures 1 and 4: warm start vs plain QEMU; stop vs QMP by hand.
fn bench_warm(ctx: &mut Ctx, vm: &Vm, runs: usize) -> R<Vec<String>> {
    progress("warm start: first build and a discarded warm-up start of each kind");
    let (_, out, _) = vm.build()?;
    progress(&format!("  build: {}", out.trim()));
    let (w, mut s) = helper_start(ctx, vm)?;
    let argv = cmdline_of(s.guard.id()).ok_or("cannot read QEMU's command line")?;
    if !argv[0].contains("qemu-system") {
        return Err(format!("expected QEMU, got {argv:?}"));
    }
    progress(&format!(
        "  warm-up helper start: {:.2} s to HTTP 200 (rebuilt={:?})",
        w.to_200.as_secs_f64(),
        w.rebuilt
    ));
    vm.stop_helper(&mut s)?;
    let (d, mut p) = plain_start(vm, &argv, &ctx.user)?;
    progress(&format!(
        "  warm-up plain QEMU: {:.2} s to HTTP 200",
        d.as_secs_f64()
    ));
    vm.stop_plain(&mut p)?;

    let (mut helper, mut plain, mut ratio, mut prep, mut seen, mut stop_h, mut stop_p) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut stop_lines = BTreeMap::new();
    for i in 0..runs {
        // Alternate which goes first so that drift hits both alike.
        let mut one_helper = |helper: &mut Vec<f64>,
                              prep: &mut Vec<f64>,
                              seen: &mut Vec<f64>,
                              stop_h: &mut Vec<f64>|
         -> R<f64> {
            let (r, mut s) = helper_start(ctx, vm)?;
            if r.rebuilt != Some(false) {
                return Err(format!(
                    "warm start rebuilt the image (rebuilt={:?})",
                    r.rebuilt
                ));
            }
            helper.push(r.to_200.as_secs_f64());
            if let Some(p) = r.prep_ms {
                prep.push(p);
            }
            if let Some(x) = r.seen_ms {
                seen.push(x);
            }
            let (st, said) = vm.stop_helper(&mut s)?;
            stop_h.push(st.as_secs_f64());
            let kind = said
                .split(": ")
                .nth(1)
                .unwrap_or(&said)
                .split(" after ")
                .next()
                .unwrap_or("")
                .to_owned();
            *stop_lines.entry(kind).or_insert(0) += 1;
            Ok(r.to_200.as_secs_f64())
        };
        let one_plain = |plain: &mut Vec<f64>, stop_p: &mut Vec<f64>| -> R<f64> {
            let (d, mut p) = plain_start(vm, &argv, &ctx.user)?;
            plain.push(d.as_secs_f64());
            stop_p.push(vm.stop_plain(&mut p)?.as_secs_f64());
            Ok(d.as_secs_f64())
        };
        let (h, p) = if i % 2 == 0 {
            let h = one_helper(&mut helper, &mut prep, &mut seen, &mut stop_h)?;
            (h, one_plain(&mut plain, &mut stop_p)?)
        } else {
            let p = one_plain(&mut plain, &mut stop_p)?;
            (
                one_helper(&mut helper, &mut prep, &mut seen, &mut stop_h)?,
                p,
            )
        };
        ratio.push(h / p);
        progress(&format!(
            "  run {}/{runs}: helper {h:.2} s, plain {p:.2} s, ratio {:.3}, prep {:.1} ms, stop {:.2} s (QMP by hand {:.2} s)",
            i + 1,
            h / p,
            prep.last().copied().unwrap_or(f64::NAN),
            stop_h.last().copied().unwrap_or(f64::NAN),
            stop_p.last().copied().unwrap_or(f64::NAN)
        ));
    }
    // The hash check alone, on the same VM (what `start` does before the TAP).
    let mut hash_ms = Vec::new();
    for _ in 0..runs {
        let (_, out, err) = vm.build()?;
        if !out.contains("unchanged, not rebuilt") {
            return Err(format!("expected `unchanged, not rebuilt`, got: {out}"));
        }
        if let Some(ms) = log_number(&err, "inputs unchanged", "elapsed_ms") {
            hash_ms.push(ms);
        }
    }
    let t = |max: f64| Some(Target { max, on_max: false });
    ctx.rows.push(Row::new(
        "1 warm start",
        "`mcp-unikernel start` → first HTTP 200 (image cached)",
        Unit::Secs,
        helper.clone(),
        None,
    ));
    ctx.rows.push(Row::new(
        "1 warm start",
        "plain `qemu-system-x86_64`, same argv, by hand → first HTTP 200",
        Unit::Secs,
        plain.clone(),
        None,
    ));
    ctx.rows.push(Row::new(
        "1 warm start",
        "ratio helper / plain (per pair)",
        Unit::Ratio,
        ratio,
        t(1.05),
    ));
    ctx.rows.push(Row::new(
        "1 warm start",
        "helper's own time before exec (`prep_us` it logs: config, hash check, TAP)",
        Unit::Ms,
        prep,
        t(10.0),
    ));
    ctx.rows.push(Row::new("1 warm start", "helper process seen in /proc until it is QEMU (adds process start, argument parsing, logging)", Unit::Ms, seen, t(10.0)));
    ctx.rows.push(Row::new("1 warm start", "… of which hashing every input (`elapsed_ms` logged by `build` on the same VM, 1 ms resolution)", Unit::Ms, hash_ms, None));
    ctx.rows.push(Row::new(
        "4 stop",
        "`mcp-unikernel stop` → QEMU exited (guest power-down)",
        Unit::Secs,
        stop_h,
        None,
    ));
    ctx.rows.push(Row::new(
        "4 stop",
        "QMP `system_powerdown` by hand → QEMU exited",
        Unit::Secs,
        stop_p,
        None,
    ));
    ctx.notes.push(format!(
        "Warm start: ratio of the medians {:.3}; single boots of the same image vary by ±{:.0} % under {} (plain QEMU alone: {:.2}–{:.2} s), \
         which is much more than the helper's own time, so the per-pair ratios scatter around the median.",
        median(&helper) / median(&plain),
        100.0 * (max(&plain) - min(&plain)) / 2.0 / median(&plain),
        vm::accel(),
        min(&plain),
        max(&plain)
    ));
    let how: Vec<String> = stop_lines
        .iter()
        .map(|(k, n)| format!("{n}× \"{k}\""))
        .collect();
    ctx.notes
        .push(format!("Stop: the helper reported {}.", how.join(", ")));
    Ok(argv)
}

/// Figure 2: cold start (state removed) vs building the same image by hand + plain boot.
fn bench_cold(ctx: &mut Ctx, vm: &Vm, argv: &[String], runs: usize) -> R<()> {
    let hand = vm.sb.root.join("by-hand");
    let state = vm.sb.state_dir.join(&vm.name);
    let (mut helper, mut by_hand, mut ratio, mut build_h, mut build_p) =
        (vec![], vec![], vec![], vec![], vec![]);
    progress("cold start: state dir removed before each helper start; image built by hand before each plain start");
    for i in 0..runs + 1 {
        let warmup = i == 0;
        // Helper, cold.
        fs::remove_dir_all(&state).map_err(|e| format!("removing {}: {e}", state.display()))?;
        let (r, mut s) = helper_start(ctx, vm)?;
        if r.rebuilt != Some(true) {
            return Err(format!(
                "cold start did not build (rebuilt={:?})",
                r.rebuilt
            ));
        }
        let log = fs::read_to_string(&s.log).unwrap_or_default();
        let build_ms = log_number(&log, "image built", "elapsed_ms");
        vm.stop_helper(&mut s)?;
        // By hand: build, then plain QEMU on that image.
        let (hand_build, hand_argv) = build_by_hand(ctx, vm, &hand, argv)?;
        let (boot, mut p) = plain_start(vm, &hand_argv, &ctx.user)?;
        vm.stop_plain(&mut p)?;
        let h = r.to_200.as_secs_f64();
        let ph = hand_build.as_secs_f64() + boot.as_secs_f64();
        progress(&format!(
            "  {}: helper {h:.2} s (build {:.0} ms), by hand {ph:.2} s (build {:.0} ms + boot {:.2} s)",
            if warmup { "warm-up".to_string() } else { format!("run {i}/{runs}") },
            build_ms.unwrap_or(f64::NAN),
            hand_build.as_secs_f64() * 1000.0,
            boot.as_secs_f64()
        ));
        if warmup {
            continue;
        }
        helper.push(h);
        by_hand.push(ph);
        ratio.push(h / ph);
        if let Some(b) = build_ms {
            build_h.push(b);
        }
        build_p.push(hand_build.as_secs_f64() * 1000.0);
    }
    ctx.notes.push(format!(
        "Cold start: ratio of the medians {:.3}.",
        median(&helper) / median(&by_hand)
    ));
    let (baseline, build_label) = match ctx.guest {
        Guest::Nanos { .. } => ("`ops build` run directly + plain QEMU → first HTTP 200", "image build by hand (`ops build` directly, staging by `cp -a`)"),
        Guest::Standin(_) => (
            "initramfs built by hand (`cp -a`, `cpio`, `cat`) + plain QEMU → first HTTP 200",
            "image build by hand (stand-in: `cp -a`, `cpio -o -H newc`, `cat` onto the base initramfs)",
        ),
    };
    let t = |max: f64| Some(Target { max, on_max: false });
    ctx.rows.push(Row::new(
        "2 cold start",
        "`mcp-unikernel start` with no state → first HTTP 200 (stage + build + boot)",
        Unit::Secs,
        helper,
        None,
    ));
    ctx.rows.push(Row::new(
        "2 cold start",
        baseline,
        Unit::Secs,
        by_hand,
        None,
    ));
    ctx.rows.push(Row::new(
        "2 cold start",
        "ratio helper / by hand (per pair)",
        Unit::Ratio,
        ratio,
        t(1.05),
    ));
    ctx.rows.push(Row::new(
        "2 cold start",
        "image build inside `start` (staging + hash + build, from its log)",
        Unit::Ms,
        build_h,
        None,
    ));
    ctx.rows.push(Row::new(
        "2 cold start",
        build_label,
        Unit::Ms,
        build_p,
        None,
    ));
    Ok(())
}

/// Build the VM's image by hand, the way an operator would without the
/// helper; returns the time and the plain-QEMU argv pointing at it.
fn build_by_hand(ctx: &Ctx, vm: &Vm, hand: &Path, argv: &[String]) -> R<(Duration, Vec<String>)> {
    let c = &vm.cfg;
    let user = &ctx.user;
    let mut vol_args: Vec<String> = Vec::new();
    for v in c["volumes"].as_array().cloned().unwrap_or_default() {
        vol_args.push(v["source"].as_str().unwrap_or_default().to_owned());
        vol_args.push(
            v["target"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
        );
    }
    let program = c["program"].as_str().unwrap_or_default().to_owned();
    let mut cmd = Command::new("bash");
    let (script, image, flag) = match ctx.guest {
        Guest::Standin(g) => {
            let args: String = c["args"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| format!("{}\n", a.as_str().unwrap_or("")))
                .collect();
            let net = format!(
                "ip={} prefix=24 gateway=10.99.0.1 mac={}\n",
                vm.ip,
                argv.iter()
                    .find_map(|a| a.split(",mac=").nth(1).map(str::to_owned))
                    .unwrap_or_default()
            );
            cmd.env("ARGS_TXT", args)
                .env("NET_TXT", net)
                .env("BASE", &g.initrd);
            (
                r#"set -euo pipefail
H=$1 PROGRAM=$2 USR=$3; shift 3
rm -rf "$H"; mkdir -p "$H/stage/mcp"
cp "$PROGRAM" "$H/stage/mcp/program"; chmod 755 "$H/stage/mcp/program"
printf '%s' "$ARGS_TXT" > "$H/stage/mcp/args"; : > "$H/stage/mcp/env"; printf '%s' "$NET_TXT" > "$H/stage/mcp/net"
while [ $# -gt 0 ]; do mkdir -p "$H/stage/$2"; cp -a "$1/." "$H/stage/$2/"; shift 2; done
cp "$BASE" "$H/initrd.img"; truncate -s %4 "$H/initrd.img"
(cd "$H/stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >> "$H/initrd.img"
chown "$USR:$USR" "$H/initrd.img"; chmod 600 "$H/initrd.img"
"#,
                hand.join("initrd.img"),
                "-initrd",
            )
        }
        Guest::Nanos { ops, .. } => {
            let cfg = vm.sb.state_dir.join(&vm.name).join("ops-config.json");
            fs::create_dir_all(hand).map_err(|e| e.to_string())?;
            let hand_cfg = hand.with_extension("ops-config.json");
            fs::copy(&cfg, &hand_cfg).map_err(|e| format!("copying {}: {e}", cfg.display()))?;
            cmd.env("OPS", ops).env("CFG", &hand_cfg);
            (
                r#"set -euo pipefail
H=$1 PROGRAM=$2 USR=$3; shift 3
rm -rf "$H"; mkdir -p "$H/stage" "$H/home/.ops"
printf '0.0.0-local' > "$H/home/.ops/latest.txt"
while [ $# -gt 0 ]; do mkdir -p "$H/stage/$2"; cp -a "$1/." "$H/stage/$2/"; shift 2; done
(cd "$H/stage" && OPS_HOME="$H/home" HOME="$H/home" "$OPS" build "$PROGRAM" -c "$CFG" >/dev/null)
mv "$H/home/.ops/images/disk" "$H/disk.img"
chown "$USR:$USR" "$H/disk.img"; chmod 600 "$H/disk.img"
"#,
                hand.join("disk.img"),
                "-drive",
            )
        }
    };
    cmd.arg("-c")
        .arg(script)
        .arg("by-hand")
        .arg(hand)
        .arg(&program)
        .arg(user)
        .args(&vol_args);
    check_interrupt()?;
    let t0 = Instant::now();
    run_ok(&mut cmd)?;
    let took = t0.elapsed();
    let mut a = argv.to_vec();
    let i = a
        .iter()
        .position(|x| x == flag)
        .ok_or(format!("no {flag} in QEMU argv"))?;
    a[i + 1] = if flag == "-initrd" {
        image.display().to_string()
    } else {
        let rest = a[i + 1]
            .split_once(',')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
        format!("file={},{rest}", image.display())
    };
    Ok((took, a))
}

/// Figure 3: `build` with nothing changed on a VM with `mib` MiB of volume data.
fn bench_check(ctx: &mut Ctx, guest: &Guest, ns: &NetNs, mib: u64, runs: usize) -> R<()> {
    let sb = Sandbox::new("bench-check");
    let vol = sb.root.join("big");
    fs::create_dir_all(&vol).map_err(|e| e.to_string())?;
    progress(&format!(
        "nothing-changed check: writing {mib} MiB of volume data ({mib} files of 1 MiB)"
    ));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    for f in 0..mib {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        fs::write(vol.join(format!("blob-{f:03}.bin")), &buf).map_err(|e| e.to_string())?;
    }
    fs::write(vol.join("index.html"), "big volume\n").map_err(|e| e.to_string())?;
    let vm = Vm::new(
        &sb,
        ns,
        guest,
        "big",
        Ipv4Addr::new(10, 99, 0, 3),
        &vol,
        128,
    )?;
    let (first, out, _) = vm.build()?;
    progress(&format!(
        "  first build: {:.2} s ({})",
        first.as_secs_f64(),
        out.trim()
    ));
    let (mut wall, mut hash) = (vec![], vec![]);
    for i in 0..runs + 1 {
        check_interrupt()?;
        let (d, out, err) = vm.build()?;
        if !out.contains("unchanged, not rebuilt") {
            return Err(format!("expected `unchanged, not rebuilt`, got: {out}"));
        }
        if i == 0 {
            continue; // warm-up
        }
        wall.push(d.as_secs_f64() * 1000.0);
        if let Some(ms) = log_number(&err, "inputs unchanged", "elapsed_ms") {
            hash.push(ms);
        }
    }
    progress(&format!(
        "  `build` unchanged: median {:.1} ms",
        median(&wall)
    ));
    let t = Some(Target {
        max: 200.0,
        on_max: false,
    });
    ctx.rows.push(Row::new(
        "3 nothing changed",
        format!(
            "`mcp-unikernel build` with {mib} MiB of volume data, image current (whole command)"
        ),
        Unit::Ms,
        wall,
        t,
    ));
    ctx.rows.push(Row::new(
        "3 nothing changed",
        "… of which hashing every input (`elapsed_ms` it logs)",
        Unit::Ms,
        hash,
        None,
    ));
    ctx.notes.push(format!(
        "Nothing-changed check: {mib} files of 1 MiB plus index.html, read from the page cache (the first build read them) and hashed in full; \
         the program and kernel files are checked too, by their remembered digests (src/digests.rs)."
    ));
    Ok(())
}

/// System users made for the density figure (one per VM), removed on drop.
struct BenchUsers(Vec<String>);

impl BenchUsers {
    fn ensure(n: usize) -> R<BenchUsers> {
        let mut made = Vec::new();
        for i in 0..n {
            let u = format!("mcpb-{i:03}");
            let exists = Command::new("id")
                .arg("-u")
                .arg(&u)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !exists {
                run_ok(Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    &u,
                ]))?;
                made.push(u);
            }
        }
        Ok(BenchUsers(made))
    }
}

impl Drop for BenchUsers {
    fn drop(&mut self) {
        for u in &self.0 {
            let _ = Command::new("userdel").arg(u).status();
        }
    }
}

/// Figure 5: N VMs started together, until all serve; memory; resident helpers.
fn bench_density(ctx: &mut Ctx, guest: &Guest, ns: &NetNs, opts: &Opts) -> R<()> {
    let n = opts.vms;
    let _users = BenchUsers::ensure(n)?;
    let sb = Sandbox::new("bench-density");
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).map_err(|e| e.to_string())?;
    fs::write(vol.join("index.html"), "dense\n").map_err(|e| e.to_string())?;
    let mut vms = Vec::new();
    for i in 0..n {
        let ip = Ipv4Addr::new(10, 99, 0, 10 + i as u8);
        vms.push(Vm::new(
            &sb,
            ns,
            guest,
            &format!("d{:02}", i + 1),
            ip,
            &vol,
            opts.vm_mib,
        )?);
    }
    for (i, vm) in vms.iter_mut().enumerate() {
        vm.set_user(&format!("mcpb-{i:03}"));
    }
    let mib = smallest_memory(ctx, &mut vms[0], opts.vm_mib)?;
    progress(&format!("density: building {n} images ({mib} MiB VMs)"));
    for vm in &mut vms {
        vm.set_memory(mib);
        vm.build()?;
    }
    let netns_ino = fs::metadata(format!("/run/netns/{}", ns.name))
        .map_err(|e| e.to_string())?
        .ino();
    let (mut all, mut pss, mut rss, mut avail, mut resident) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut serving, mut boot_failures): (Vec<f64>, Vec<String>) = (vec![], vec![]);
    let mut per_vm_boot = Vec::new();
    for round in 0..opts.density_runs {
        check_interrupt()?;
        let before = meminfo_kib("MemAvailable").unwrap_or(f64::NAN);
        let cancels: Vec<Arc<AtomicBool>> = vms
            .iter()
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        let probes: Vec<_> = vms
            .iter()
            .zip(&cancels)
            .map(|(vm, c)| {
                vm.probe(
                    Duration::from_millis(100),
                    Duration::from_secs(400),
                    c.clone(),
                )
            })
            .collect();
        let t0 = Instant::now();
        let mut started = Vec::new();
        for vm in &vms {
            started.push(vm.spawn_start()?);
        }
        let mut last = t0;
        let mut failed = None;
        let mut dead = Vec::new();
        let mut probes = probes.into_iter();
        for i in 0..n {
            let p = probes.next().expect("one probe per VM");
            let log = started[i].log.clone();
            match await_probe(p, &cancels[i], &mut started[i].guard, &log) {
                Ok((t, _)) => {
                    per_vm_boot.push((t - t0).as_secs_f64());
                    last = last.max(t);
                }
                // The guest died while booting (the stand-in can panic when 20
                // emulated boots starve each other): counted, reported, the
                // round goes on with the others.
                Err(_) if started[i].guard.try_wait().is_some() => {
                    let line = guest_last_line(&log);
                    progress(&format!("  {} died before serving: {line}", vms[i].name));
                    dead.push(i);
                    boot_failures.push(format!("round {}: {} — `{line}`", round + 1, vms[i].name));
                }
                Err(e) => {
                    for c in &cancels {
                        c.store(true, Ordering::SeqCst);
                    }
                    failed = Some(format!("{}: {e}", vms[i].name));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for s in &mut started {
                s.guard.kill_now();
            }
            return Err(e);
        }
        serving.push((n - dead.len()) as f64);
        if dead.len() * 2 > n {
            return Err(format!(
                "{} of {n} density VMs died before serving: {}",
                dead.len(),
                boot_failures.join("; ")
            ));
        }
        let all_s = (last - t0).as_secs_f64();
        // Memory with all serving.
        let after = meminfo_kib("MemAvailable").unwrap_or(f64::NAN);
        let (mut p_sum, mut r_sum, mut qemus) = (0.0, 0.0, 0);
        let alive = n - dead.len();
        for (i, s) in started.iter().enumerate() {
            if dead.contains(&i) {
                continue;
            }
            let pid = s.guard.id();
            let exe = exe_of(pid).unwrap_or_default();
            if exe
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("qemu-system"))
            {
                qemus += 1;
            }
            p_sum += smaps_kib(pid, "Pss").unwrap_or(f64::NAN);
            r_sum += smaps_kib(pid, "Rss").unwrap_or(f64::NAN);
        }
        let helpers = count_helpers(&ctx.helper, netns_ino);
        if qemus != alive {
            return Err(format!(
                "only {qemus} of {alive} serving VMs' processes are QEMU"
            ));
        }
        all.push(all_s);
        pss.push(p_sum / alive as f64 / 1024.0);
        rss.push(r_sum / alive as f64 / 1024.0);
        avail.push((before - after) / alive as f64 / 1024.0);
        resident.push(helpers as f64);
        progress(&format!(
            "  round {}/{}: all {n} serving after {all_s:.1} s; per VM PSS {:.1} MiB, RSS {:.1} MiB, MemAvailable drop {:.1} MiB; resident helpers {helpers}",
            round + 1,
            opts.density_runs,
            pss.last().unwrap(),
            rss.last().unwrap(),
            avail.last().unwrap()
        ));
        // Stop all together, then clean up.
        let t_stop = Instant::now();
        let mut stops: Vec<ChildGuard> = Vec::new();
        for vm in &vms {
            stops.push(ChildGuard::new(
                vm.sb
                    .cmd(None, &["stop", &vm.name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?,
            ));
        }
        for (i, s) in started.iter_mut().enumerate() {
            if dead.contains(&i) {
                continue;
            }
            if wait_exit(&mut s.guard, Duration::from_secs(120)).is_none() {
                return Err("a density VM did not stop within 120 s".into());
            }
        }
        for s in &mut stops {
            s.wait();
        }
        for vm in &vms {
            vm.cleanup()?;
        }
        progress(&format!(
            "  stopped all {n} in {:.1} s",
            t_stop.elapsed().as_secs_f64()
        ));
    }
    let fig = "5 density";
    ctx.rows.push(Row::new(
        fig,
        format!("{n} VMs × {mib} MiB started together → all serving HTTP"),
        Unit::Secs,
        all,
        None,
    ));
    ctx.rows.push(Row::new(
        fig,
        format!("VMs serving of {n} (a guest that died while booting is not retried)"),
        Unit::Count,
        serving,
        None,
    ));
    ctx.rows.push(Row::new(
        fig,
        "host memory per VM: QEMU PSS (smaps_rollup), all serving",
        Unit::MiB,
        pss,
        None,
    ));
    ctx.rows.push(Row::new(
        fig,
        "host memory per VM: QEMU RSS",
        Unit::MiB,
        rss,
        None,
    ));
    ctx.rows.push(Row::new(
        fig,
        "host memory per VM: MemAvailable drop / N",
        Unit::MiB,
        avail,
        None,
    ));
    ctx.rows.push(Row::new(
        fig,
        format!("`mcp-unikernel` processes resident with {n} VMs running (each start became its QEMU by exec)"),
        Unit::Count,
        resident,
        Some(Target { max: 0.0, on_max: true }),
    ));
    if !boot_failures.is_empty() {
        ctx.notes.push(format!(
            "Density: guests that died while booting: {}.",
            boot_failures.join("; ")
        ));
    }
    ctx.notes.push(format!(
        "Density: single VMs within a round reached HTTP after {:.1} s (median), {:.1}–{:.1} s (min–max) over all rounds.",
        median(&per_vm_boot),
        min(&per_vm_boot),
        max(&per_vm_boot)
    ));
    Ok(())
}

/// The requested VM memory if one VM boots and serves with it; otherwise the
/// smallest that does, in 4 MiB steps (noted in the report with the reason).
fn smallest_memory(ctx: &mut Ctx, vm: &mut Vm, want: u64) -> R<u64> {
    let mut mib = want;
    let mut failed = Vec::new();
    while mib <= 512 {
        vm.set_memory(mib);
        progress(&format!(
            "density: does one VM boot and serve with {mib} MiB?"
        ));
        let cancel = Arc::new(AtomicBool::new(false));
        let prober = vm.probe(Duration::from_millis(50), BOOT_LIMIT, cancel.clone());
        let mut s = vm.spawn_start()?;
        match await_probe(prober, &cancel, &mut s.guard, &s.log) {
            Ok(_) => {
                vm.stop_helper(&mut s)?;
                if failed.is_empty() {
                    return Ok(mib);
                }
                // At the bare minimum a guest can still run out of memory when
                // 20 boots share the CPUs (seen: 76 MiB served alone, then one
                // of 20 panicked out of memory): one step of margin.
                let used = mib + 4;
                ctx.notes.push(format!(
                    "Density: the guest does not boot with {want} MiB here ({}); {mib} MiB is the smallest that served alone (4 MiB steps), \
                     and the density figures use {used} MiB, one step more, because at the bare minimum a guest can still run out of memory \
                     when many boots share the CPUs.",
                    failed.join("; ")
                ));
                return Ok(used);
            }
            Err(_) if s.guard.try_wait().is_some() => {
                let _ = vm.cleanup();
                let last = guest_last_line(&s.log);
                progress(&format!(
                    "  {mib} MiB: QEMU exited before serving; guest's last console line: {last}"
                ));
                failed.push(format!(
                    "{mib} MiB: QEMU exited before serving, last console line `{last}`"
                ));
            }
            Err(e) => return Err(e),
        }
        mib += 4;
    }
    Err(format!(
        "the guest did not serve with any memory size from {want} to 512 MiB"
    ))
}

/// The last console line of the guest in a start log (not the helper's own lines).
fn guest_last_line(log: &Path) -> String {
    let s = fs::read_to_string(log).unwrap_or_default();
    if let Some(p) = s.lines().find(|l| l.contains("Kernel panic")) {
        return p.trim().chars().take(160).collect();
    }
    s.lines()
        .map(str::trim)
        .rev()
        .find(|l| !(l.is_empty() || l.len() > 20 && l.as_bytes()[4] == b'-' && l.contains("Z  ")))
        .unwrap_or("(none)")
        .chars()
        .take(160)
        .collect()
}

/// `mcp-unikernel` processes: our binary anywhere, or any process named so in our namespace.
fn count_helpers(helper: &Path, netns_ino: u64) -> usize {
    let Ok(rd) = fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let exe = exe_of(pid);
        let comm = read(&format!("/proc/{pid}/comm"));
        let in_ns = fs::metadata(format!("/proc/{pid}/ns/net"))
            .map(|m| m.ino() == netns_ino)
            .unwrap_or(false);
        let is_ours = exe.as_deref() == Some(helper);
        let named = comm.trim() == "mcp-unikernel"
            || exe
                .as_ref()
                .is_some_and(|p| p.file_name().is_some_and(|f| f == "mcp-unikernel"));
        if is_ours || (in_ns && named) {
            n += 1;
        }
    }
    n
}

// ---------------------------------------------------------------- report

fn report(head: &str, ctx: &Ctx, total: Duration) -> String {
    let mut s = String::from(head);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| figure | measurement | median | min | max | runs | target | met? |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    let mut missed = Vec::new();
    for r in &ctx.rows {
        let (med, lo, hi) = if r.vals.is_empty() {
            ("–".into(), "–".into(), "–".into())
        } else {
            (
                r.unit.fmt(median(&r.vals)),
                r.unit.fmt(min(&r.vals)),
                r.unit.fmt(max(&r.vals)),
            )
        };
        let target = r
            .target
            .map(|t| {
                format!(
                    "≤ {}{}",
                    r.unit.fmt(t.max),
                    if t.on_max { " (max)" } else { "" }
                )
            })
            .unwrap_or_else(|| "–".into());
        let met = match r.judge() {
            None if r.target.is_some() => "no data".to_string(),
            None => "–".into(),
            Some((true, _)) => "yes".into(),
            Some((false, v)) => {
                let t = r.target.unwrap().max;
                let by = if t > 0.0 {
                    format!("{} ({:+.0} %)", r.unit.fmt(v - t), (v / t - 1.0) * 100.0)
                } else {
                    r.unit.fmt(v - t)
                };
                missed.push(format!(
                    "{} — {}: {} against ≤ {}, missed by {by}",
                    r.fig,
                    r.label,
                    r.unit.fmt(v),
                    r.unit.fmt(t)
                ));
                format!("**no** (+{})", by.trim_start_matches('+'))
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {med} | {lo} | {hi} | {} | {target} | {met} |",
            r.fig,
            r.label,
            r.vals.len()
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Medians with min and max; targets are judged on the median (the resident-helper count on its maximum). \
         Total bench time {:.1} min; load average at the end: {}.",
        total.as_secs_f64() / 60.0,
        read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    for n in &ctx.notes {
        let _ = writeln!(s, "{n}");
    }
    if missed.is_empty() {
        let _ = writeln!(s, "\nAll targets met.");
    } else {
        let _ = writeln!(s, "\nTargets missed (why: see docs/benchmarks.md):");
        for m in missed {
            let _ = writeln!(s, "- {m}");
        }
    }
    s
}

// ---------------------------------------------------------------- main

fn main() {
    started();
    install_signal_handlers();
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> R<()> {
    // `cargo bench` passes --bench. Under `cargo test --all-targets` (no
    // --bench) this target must not start a 10-minute benchmark as a "test".
    if !std::env::args().any(|a| a == "--bench") {
        println!("lifecycle bench: nothing to do without --bench (run `cargo bench --bench lifecycle` or scripts/bench.sh)");
        return Ok(());
    }
    let opts = Opts::parse()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "run as root (network namespaces, TAPs, QEMU as the mcp-qemu user); scripts/bench.sh"
                .into(),
        );
    }
    let user =
        vm::qemu_user().ok_or("no mcp-qemu user to run QEMU as (scripts/setup.sh creates it)")?;
    let guest = if std::env::var_os("MCP_NANOS_DIR").is_some() {
        vm::nanos_guest()?
    } else {
        Guest::Standin(vm::standin_guest()?)
    };
    for tool in ["ip", "setpriv", "cpio", "truncate", "qemu-system-x86_64"] {
        if image_on_path(tool).is_none() {
            return Err(format!("{tool} not found on PATH"));
        }
    }
    let accel = vm::accel();
    let head = header(&guest, &accel, &opts);
    eprint!("{head}");
    let helper = canon(Path::new(BIN));
    let ns = bench_ns()?;
    let mut ctx = Ctx {
        guest: &guest,
        user,
        helper,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    ctx.notes.push(
        "Method: start → first HTTP 200 is measured from spawning `ip netns exec NS …` (the same wrapper for the helper and for plain QEMU) \
         to the first `200` answer to a GET polled every 20 ms from inside the namespace; the bridge has a permanent neighbour entry for each \
         guest MAC, and the bridge has a fixed MAC so that attaching a TAP does not flush those entries (without it, the host's 1 s ARP \
         retransmit put a 0–1 s step into every boot time). Plain QEMU runs the helper's exact argv (from /proc/PID/cmdline) as the QEMU user via \
         `setpriv`, on a TAP made with `ip tuntap add … user mcp-qemu` and attached as an isolated bridge port beforehand (not timed)."
            .into(),
    );
    let res = (|| -> R<()> {
        let mut argv = None;
        let sb = Sandbox::new("bench-life");
        let vol = sb.root.join("www");
        fs::create_dir_all(&vol).map_err(|e| e.to_string())?;
        fs::write(vol.join("index.html"), "hello from the bench volume\n")
            .map_err(|e| e.to_string())?;
        let web = Vm::new(
            &sb,
            &ns,
            &guest,
            "web",
            Ipv4Addr::new(10, 99, 0, 2),
            &vol,
            128,
        )?;
        if opts.wants("warm") || opts.wants("cold") {
            argv = Some(bench_warm(&mut ctx, &web, opts.runs)?);
        }
        if opts.wants("cold") {
            bench_cold(&mut ctx, &web, argv.as_deref().unwrap(), opts.runs)?;
        }
        drop(web);
        drop(sb);
        if opts.wants("check") {
            bench_check(&mut ctx, &guest, &ns, opts.volume_mib, opts.runs)?;
        }
        if opts.wants("density") {
            bench_density(&mut ctx, &guest, &ns, &opts)?;
        }
        Ok(())
    })();
    let text = report(&head, &ctx, started().elapsed());
    if let Err(e) = res {
        eprintln!("{text}");
        return Err(e);
    }
    println!("{text}");
    if let Some(out) = &opts.out {
        if let Some(d) = out.parent() {
            let _ = fs::create_dir_all(d);
        }
        fs::write(out, &text).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

/// A namespace with the bridge `mcp-br0` at 10.99.0.1/24 (as tests/common's
/// `bridge_ns`), but with a fixed bridge MAC: a bridge without one takes the
/// lowest MAC of its ports, and each such change flushes the neighbour table,
/// permanent entries included, so every new TAP would send the host back to
/// ARP with its 1 s retransmit timer (a 0–1 s step in every boot figure).
fn bench_ns() -> R<NetNs> {
    let ns = NetNs::new("bench");
    ip_ns(
        &ns,
        &[
            "link", "add", "mcp-br0", "address", BRIDGE_MAC, "type", "bridge",
        ],
    )?;
    ip_ns(&ns, &["addr", "add", "10.99.0.1/24", "dev", "mcp-br0"])?;
    ip_ns(&ns, &["link", "set", "mcp-br0", "up"])?;
    Ok(ns)
}

const BRIDGE_MAC: &str = "02:00:00:00:00:01";

fn image_on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
