//! The bridge isolation rules (nixos/lib/nftables.nix), loaded for real with
//! `nft -f` and probed with real traffic between network namespaces:
//!
//! ```text
//!   vm1 (10.99.0.2) ──veth── mcp-vm1 ┐
//!   vm2 (10.99.0.3) ──veth── mcp-vm2 ├─ mcp-br0 10.99.0.1/24  [host]  out0 192.168.77.1 ──veth── outside 192.168.77.2
//!   rogue (10.99.0.9) ─veth─ rogue0  ┘   (ip_forward=1, rules loaded here)
//! ```
//!
//! `vm1`/`vm2` are stand-ins for VMs: their host-side veth ends are named and
//! attached like the helper's TAPs (isolated bridge ports), their addresses
//! are the ones the rules declare. `rogue` is a bridge port no VM declares.
//! Every cell of the matrix is also run without the rules (and without the
//! isolated flag), where it must pass: so a "blocked" cell can fail.

mod common;

use common::netns::{self, ChildGuard, NetNs};
use common::vm;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BRIDGE: &str = "mcp-br0";
const GW: &str = "10.99.0.1";
const ALLOWED_TCP: u16 = 8080;
const OTHER_TCP: u16 = 9090;
const SRV: u16 = 8080;
const OUTSIDE_HOST: &str = "192.168.77.1";
const OUTSIDE: &str = "192.168.77.2";
const SPOOF_IP: &str = "10.99.0.50";
const SPOOF_MAC: &str = "02:00:00:00:00:99";

struct VmDecl {
    name: &'static str,
    tap: &'static str,
    ip: &'static str,
    mac: &'static str,
}

const VM1: VmDecl = VmDecl {
    name: "vm1",
    tap: "mcp-vm1",
    ip: "10.99.0.2",
    mac: "02:00:00:00:00:01",
};
const VM2: VmDecl = VmDecl {
    name: "vm2",
    tap: "mcp-vm2",
    ip: "10.99.0.3",
    mac: "02:00:00:00:00:02",
};
/// Attached to the bridge, but not declared to the rules.
const ROGUE: VmDecl = VmDecl {
    name: "rogue",
    tap: "rogue0",
    ip: "10.99.0.9",
    mac: "02:00:00:00:00:09",
};

// ---------------------------------------------------------------- helpers

/// Prepended to every probe script: an unexpected Python error exits 3, never
/// 1, so a broken probe cannot pass for a "blocked" cell.
const PY_PRELUDE: &str = "import os, sys, traceback\nsys.excepthook = lambda *a: (traceback.print_exception(*a), sys.stderr.flush(), os._exit(3))\n";

fn py(script: &str) -> String {
    format!("{PY_PRELUDE}{script}")
}

/// Connect with a 1 s timeout. Exit 0 connected, 1 refused/timeout/unreachable,
/// 3 local setup error (so an error never looks like "blocked").
const PY_CONNECT: &str = r#"
import socket, sys
d, p = sys.argv[1], int(sys.argv[2])
c = socket.socket(); c.settimeout(1.0)
if len(sys.argv) > 3:
    try: c.bind((sys.argv[3], 0))
    except OSError as e: print("bind:", e, file=sys.stderr); sys.exit(3)
try: c.connect((d, p))
except (socket.timeout, OSError) as e: print(type(e).__name__, e, file=sys.stderr); sys.exit(1)
sys.exit(0)
"#;

/// ICMP echo with a 1 s timeout (no ping binary needed). Exit 0 on reply.
const PY_PING: &str = r#"
import os, socket, struct, sys, time
d = sys.argv[1]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident = os.getpid() & 0xffff
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"mcp-isolation!"
pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(pkt, (d, 0)); end = time.time() + 1.0
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try: data, addr = s.recvfrom(2048)
    except socket.timeout: break
    h = (data[0] & 15) * 4
    t, _, _, i, _ = struct.unpack("!BBHHH", data[h:h + 8])
    if addr[0] == d and t == 0 and i == ident: sys.exit(0)
sys.exit(1)
"#;

/// Send one ARP request on IFACE: sender MAC, sender IP (argv), asking for TARGET.
const PY_ARP: &str = r#"
import socket, sys
ifc, sha, spa, tpa = sys.argv[1:5]
mac = bytes.fromhex(sha.replace(":", ""))
ip = lambda a: socket.inet_aton(a)
frame = b"\xff" * 6 + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + ip(spa) + b"\x00" * 6 + ip(tpa)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifc, 0)); s.send(frame)
"#;

const PY_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
while True:
    c, _ = s.accept(); c.close()
"#;

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Root, nix-instantiate and python3 present; otherwise the test is reported skipped.
fn prerequisites(test: &str) -> bool {
    if !netns::require_root_or_skip(test) {
        return false;
    }
    for (prog, why) in [
        (
            "nix-instantiate",
            "nix-instantiate not found: cannot evaluate nixos/lib/nftables.nix",
        ),
        ("nft", "nft not found"),
        (
            "python3",
            "python3 not found: the probes and listeners use it",
        ),
    ] {
        if !have(prog) {
            netns::skip(test, why);
            return false;
        }
    }
    true
}

fn nix_list(items: &[String]) -> String {
    format!("[ {} ]", items.join(" "))
}

fn nix_expr(vms: &[&VmDecl], tcp: &[u32], udp: &[u32]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/lib/nftables.nix");
    let vms: Vec<String> = vms
        .iter()
        .map(|v| {
            format!(
                r#"{{ name = "{}"; tap = "{}"; ip = "{}"; mac = "{}"; }}"#,
                v.name, v.tap, v.ip, v.mac
            )
        })
        .collect();
    let ports = |ps: &[u32]| nix_list(&ps.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    format!(
        r#"import {} {{ bridge = "{BRIDGE}"; gateway = "{GW}"; prefixLength = 24; allowedTCPPorts = {}; allowedUDPPorts = {}; vms = {}; }}"#,
        path.display(),
        ports(tcp),
        ports(udp),
        nix_list(&vms)
    )
}

/// `nix-instantiate --eval --strict --json --expr EXPR`; Ok(json) or Err(stderr).
fn nix_eval(expr: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr", expr])
        .env(
            "NIX_CONFIG",
            "substituters =\nexperimental-features = nix-command flakes",
        )
        .stdin(Stdio::null())
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
}

fn ruleset(vms: &[&VmDecl], tcp: &[u32], udp: &[u32]) -> String {
    let v = nix_eval(&format!("({}).ruleset", nix_expr(vms, tcp, udp)))
        .unwrap_or_else(|e| panic!("nix eval: {e}"));
    v.as_str().expect("ruleset is a string").to_owned()
}

static FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A ruleset file under the cargo target tmpdir, removed on drop.
struct TempFile(PathBuf);
impl TempFile {
    fn new(text: &str) -> TempFile {
        let n = FILE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("isolation-{}-{n}.nft", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A TCP listener (accepts and closes) at `addr:port` in `ns`, ready when it returns.
fn spawn_listener(ns: &NetNs, addr: &str, port: u16) -> ChildGuard {
    let child = ns
        .cmd("python3")
        .args(["-c", PY_SERVER, addr, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listener");
    let mut g = ChildGuard::new(child);
    // Ready when it accepts from inside its own namespace (loopback path).
    let t0 = Instant::now();
    while !ns
        .cmd("python3")
        .args(["-c", PY_CONNECT, addr, &port.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        if let Some(st) = g.try_wait() {
            panic!(
                "listener {addr}:{port} in {} exited {st}: {}",
                ns.name,
                g.stderr_text()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "listener {addr}:{port} not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    g
}

/// `outside` (192.168.77.2) behind the host's `out0` (192.168.77.1): a host
/// off the bridge, reachable only through the host's routing.
fn route_outside(host: &NetNs, outside: &NetNs) {
    host.run(&[
        "ip",
        "link",
        "add",
        "out0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &outside.name,
    ]);
    host.run(&[
        "ip",
        "addr",
        "add",
        &format!("{OUTSIDE_HOST}/24"),
        "dev",
        "out0",
    ]);
    host.run(&["ip", "link", "set", "out0", "up"]);
    outside.run(&["ip", "addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"]);
    outside.run(&["ip", "link", "set", "eth0", "up"]);
    outside.run(&["ip", "route", "add", "default", "via", OUTSIDE_HOST]);
}

// ---------------------------------------------------------------- the lab

struct Lab {
    // Dropped first: listeners are killed (by PID) before namespaces go away.
    servers: Vec<ChildGuard>,
    host: NetNs,
    vm1: NetNs,
    vm2: NetNs,
    rogue: NetNs,
    outside: NetNs,
}

impl Lab {
    fn new(rules: Option<&str>, isolated: bool) -> Lab {
        let host = NetNs::new("host");
        let mut lab = Lab {
            servers: Vec::new(),
            vm1: NetNs::new("vm1"),
            vm2: NetNs::new("vm2"),
            rogue: NetNs::new("rogue"),
            outside: NetNs::new("outside"),
            host,
        };
        let h = &lab.host;
        h.run(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        h.run(&["ip", "addr", "add", &format!("{GW}/24"), "dev", BRIDGE]);
        h.run(&["ip", "link", "set", BRIDGE, "up"]);
        h.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (ns, decl, iso) in [
            (&lab.vm1, &VM1, isolated),
            (&lab.vm2, &VM2, isolated),
            (&lab.rogue, &ROGUE, false),
        ] {
            h.run(&[
                "ip", "link", "add", decl.tap, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ]);
            h.run(&["ip", "link", "set", decl.tap, "master", BRIDGE]);
            if iso {
                h.run(&[
                    "ip",
                    "link",
                    "set",
                    "dev",
                    decl.tap,
                    "type",
                    "bridge_slave",
                    "isolated",
                    "on",
                ]);
            }
            h.run(&["ip", "link", "set", decl.tap, "up"]);
            ns.run(&["ip", "link", "set", "eth0", "address", decl.mac]);
            ns.run(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", decl.ip),
                "dev",
                "eth0",
            ]);
            ns.run(&["ip", "link", "set", "eth0", "up"]);
            ns.run(&["ip", "route", "add", "default", "via", GW]);
        }
        route_outside(h, &lab.outside);

        if let Some(text) = rules {
            let f = TempFile::new(text);
            h.run(&["nft", "-f", f.path()]);
        }

        // Listeners: gateway on an allowed and a not-allowed port, each VM, outside.
        let listeners: [(&NetNs, &str, u16); 5] = [
            (&lab.host, GW, ALLOWED_TCP),
            (&lab.host, GW, OTHER_TCP),
            (&lab.vm1, VM1.ip, SRV),
            (&lab.vm2, VM2.ip, SRV),
            (&lab.outside, OUTSIDE, SRV),
        ];
        let servers = listeners
            .iter()
            .map(|(ns, addr, port)| spawn_listener(ns, addr, *port))
            .collect();
        lab.servers = servers;

        // vm1 knows the gateway's MAC statically, so the spoofed-source-IP cell
        // sends IPv4 right away (it tests the IPv4 rule, not ARP).
        let br_mac = lab
            .host
            .run(&["cat", &format!("/sys/class/net/{BRIDGE}/address")]);
        lab.vm1.run(&[
            "ip",
            "neigh",
            "replace",
            GW,
            "lladdr",
            br_mac.trim(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        lab.vm1.run(&[
            "ip",
            "addr",
            "add",
            &format!("{SPOOF_IP}/24"),
            "dev",
            "eth0",
        ]);
        lab
    }
}

// ---------------------------------------------------------------- probes

#[derive(Clone, Copy, PartialEq, Debug)]
enum Exp {
    Open,
    Blocked,
}

struct Cell {
    from: String,
    to: String,
    expected: Exp,
    observed: Exp,
    detail: String,
}

enum Probe<'a> {
    Tcp {
        ns: &'a NetNs,
        dst: &'a str,
        port: u16,
        src: Option<&'a str>,
    },
    Ping {
        ns: &'a NetNs,
        dst: &'a str,
    },
}

impl Probe<'_> {
    fn spawn(&self) -> ChildGuard {
        let mut c = match self {
            Probe::Tcp { ns, dst, port, src } => {
                let mut c = ns.cmd("python3");
                c.args(["-c", &py(PY_CONNECT), dst, &port.to_string()]);
                if let Some(s) = src {
                    c.arg(s);
                }
                c
            }
            Probe::Ping { ns, dst } => {
                let mut c = ns.cmd("python3");
                c.args(["-c", &py(PY_PING), dst]);
                c
            }
        };
        ChildGuard::new(
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn probe"),
        )
    }
}

/// Run probes concurrently (each bounded by its own 1 s timeout).
fn run_probes(cells: Vec<(String, String, Exp, Probe)>) -> Vec<Cell> {
    let mut running: Vec<_> = cells
        .into_iter()
        .map(|(f, t, e, p)| (f, t, e, p.spawn()))
        .collect();
    running
        .iter_mut()
        .map(|(from, to, expected, g)| {
            let st = g.wait();
            let err = g.stderr_text();
            let observed = match st.code() {
                Some(0) => Exp::Open,
                Some(1) => Exp::Blocked,
                _ => panic!("probe {from} -> {to} failed to run ({st}): {err}"),
            };
            Cell {
                from: from.clone(),
                to: to.clone(),
                expected: *expected,
                observed,
                detail: err.trim().to_owned(),
            }
        })
        .collect()
}

fn tcp<'a>(
    from: &str,
    to: &str,
    e: Exp,
    ns: &'a NetNs,
    dst: &'a str,
    port: u16,
    src: Option<&'a str>,
) -> (String, String, Exp, Probe<'a>) {
    (from.into(), to.into(), e, Probe::Tcp { ns, dst, port, src })
}

/// The whole matrix. Expectations are those of the rules; `run_matrix`'s
/// caller decides what to assert.
fn run_matrix(lab: &Lab) -> Vec<Cell> {
    use Exp::*;
    let gw_allowed = format!("gateway {GW}:{ALLOWED_TCP} (allowed)");
    let mut cells = run_probes(vec![
        tcp(
            "vm1",
            &gw_allowed,
            Open,
            &lab.vm1,
            GW,
            ALLOWED_TCP,
            Some(VM1.ip),
        ),
        tcp("vm2", &gw_allowed, Open, &lab.vm2, GW, ALLOWED_TCP, None),
        tcp(
            "vm1",
            &format!("gateway {GW}:{OTHER_TCP} (not allowed)"),
            Blocked,
            &lab.vm1,
            GW,
            OTHER_TCP,
            Some(VM1.ip),
        ),
        (
            "vm1".into(),
            format!("gateway {GW} ICMP echo"),
            Open,
            Probe::Ping {
                ns: &lab.vm1,
                dst: GW,
            },
        ),
        tcp(
            "vm1",
            &format!("vm2 {}:{SRV}", VM2.ip),
            Blocked,
            &lab.vm1,
            VM2.ip,
            SRV,
            Some(VM1.ip),
        ),
        tcp(
            "vm2",
            &format!("vm1 {}:{SRV}", VM1.ip),
            Blocked,
            &lab.vm2,
            VM1.ip,
            SRV,
            None,
        ),
        tcp(
            "vm1",
            &format!("outside {OUTSIDE}:{SRV}"),
            Blocked,
            &lab.vm1,
            OUTSIDE,
            SRV,
            Some(VM1.ip),
        ),
        tcp(
            "outside",
            &format!("vm1 {}:{SRV}", VM1.ip),
            Blocked,
            &lab.outside,
            VM1.ip,
            SRV,
            None,
        ),
        tcp(
            &format!("vm1 spoofing src {SPOOF_IP}"),
            &gw_allowed,
            Blocked,
            &lab.vm1,
            GW,
            ALLOWED_TCP,
            Some(SPOOF_IP),
        ),
        tcp(
            "rogue (undeclared port)",
            &gw_allowed,
            Blocked,
            &lab.rogue,
            GW,
            ALLOWED_TCP,
            None,
        ),
        tcp(
            "rogue (undeclared port)",
            &format!("vm1 {}:{SRV}", VM1.ip),
            Blocked,
            &lab.rogue,
            VM1.ip,
            SRV,
            None,
        ),
        tcp(
            "host",
            &format!("vm1 {}:{SRV}", VM1.ip),
            Open,
            &lab.host,
            VM1.ip,
            SRV,
            None,
        ),
        tcp(
            "host",
            &format!("vm2 {}:{SRV}", VM2.ip),
            Open,
            &lab.host,
            VM2.ip,
            SRV,
            None,
        ),
        (
            "host".into(),
            format!("vm1 {} ICMP echo", VM1.ip),
            Open,
            Probe::Ping {
                ns: &lab.host,
                dst: VM1.ip,
            },
        ),
    ]);

    // ARP spoofing: vm1 (own MAC) claims vm2's IP in an ARP request to the
    // gateway. Observed "open" when the host's neighbour table took the claim.
    lab.host.run(&["ip", "neigh", "flush", "dev", BRIDGE]);
    lab.vm1
        .run(&["python3", "-c", &py(PY_ARP), "eth0", VM1.mac, VM2.ip, GW]);
    std::thread::sleep(Duration::from_millis(300));
    let neigh = lab
        .host
        .run(&["ip", "neigh", "show", VM2.ip, "dev", BRIDGE]);
    cells.push(Cell {
        from: format!("vm1 ARP claiming {}", VM2.ip),
        to: "gateway neighbour table".into(),
        expected: Blocked,
        observed: if neigh.contains(VM1.mac) {
            Open
        } else {
            Blocked
        },
        detail: format!("host neigh: {:?}", neigh.trim()),
    });

    // MAC spoofing: vm1 changes its MAC; the host must re-learn it by ARP.
    lab.vm1
        .run(&["ip", "link", "set", "eth0", "address", SPOOF_MAC]);
    lab.host.run(&["ip", "neigh", "flush", "dev", BRIDGE]);
    cells.extend(run_probes(vec![tcp(
        &format!("vm1 with MAC {SPOOF_MAC}"),
        &gw_allowed,
        Blocked,
        &lab.vm1,
        GW,
        ALLOWED_TCP,
        Some(VM1.ip),
    )]));
    lab.vm1
        .run(&["ip", "link", "set", "eth0", "address", VM1.mac]);
    cells
}

fn show(e: Exp) -> &'static str {
    match e {
        Exp::Open => "open",
        Exp::Blocked => "blocked",
    }
}

fn print_matrix(title: &str, cells: &[Cell], expect_all_open: bool) {
    println!("== {title}");
    println!(
        "{:<28} {:<36} {:<9} {:<9}",
        "from", "to", "expected", "observed"
    );
    for c in cells {
        let exp = if expect_all_open {
            Exp::Open
        } else {
            c.expected
        };
        let mark = if exp == c.observed { "ok" } else { "MISMATCH" };
        println!(
            "{:<28} {:<36} {:<9} {:<9} {mark} {}",
            c.from,
            c.to,
            show(exp),
            show(c.observed),
            if mark == "ok" { "" } else { &c.detail }
        );
    }
}

fn assert_cells(cells: &[Cell], expect_all_open: bool) {
    let bad: Vec<String> = cells
        .iter()
        .filter(|c| {
            c.observed
                != if expect_all_open {
                    Exp::Open
                } else {
                    c.expected
                }
        })
        .map(|c| {
            format!(
                "{} -> {}: observed {} ({})",
                c.from,
                c.to,
                show(c.observed),
                c.detail
            )
        })
        .collect();
    assert!(bad.is_empty(), "cells not as expected:\n{}", bad.join("\n"));
}

fn full_rules() -> String {
    ruleset(&[&VM1, &VM2], &[ALLOWED_TCP as u32], &[5353])
}

// ---------------------------------------------------------------- tests

/// Production shape: rules loaded and the TAPs are isolated bridge ports.
#[test]
fn isolation_matrix() {
    if !prerequisites("isolation_matrix") {
        return;
    }
    let rules = full_rules();
    let lab = Lab::new(Some(&rules), true);
    let cells = run_matrix(&lab);
    print_matrix("rules loaded, isolated ports", &cells, false);
    assert_cells(&cells, false);
}

/// The rules alone (no isolated flag on the ports) give the same matrix:
/// VM-to-VM is dropped by the bridge forward chain, not only by the flag.
#[test]
fn isolation_matrix_rules_without_isolated_flag() {
    if !prerequisites("isolation_matrix_rules_without_isolated_flag") {
        return;
    }
    let rules = full_rules();
    let lab = Lab::new(Some(&rules), false);
    let cells = run_matrix(&lab);
    print_matrix("rules loaded, ports NOT isolated", &cells, false);
    assert_cells(&cells, false);
}

/// Control: with no rules and no isolated flag every cell passes, so each
/// "blocked" observation above is the rules' doing, not a broken probe.
#[test]
fn probes_are_real_without_rules() {
    if !prerequisites("probes_are_real_without_rules") {
        return;
    }
    let lab = Lab::new(None, false);
    let cells = run_matrix(&lab);
    print_matrix(
        "NO rules, ports NOT isolated (every cell must be open)",
        &cells,
        true,
    );
    assert_cells(&cells, true);
}

/// The generated text is accepted by nft, for 3 VMs and for none: checked
/// with `nft -c` and also loaded (twice: reloading replaces the tables) in a
/// throwaway namespace, since `-c` does not ask the kernel about every
/// expression.
#[test]
fn ruleset_parses() {
    if !prerequisites("ruleset_parses") {
        return;
    }
    let vm3 = VmDecl {
        name: "a-long-name-0",
        tap: "mcp-a-long-1f2e",
        ip: "10.99.0.254",
        mac: "02:12:34:56:78:9a",
    };
    for (label, vms, tcp, udp) in [
        ("3 VMs", vec![&VM1, &VM2, &vm3], vec![80, 443], vec![53]),
        ("0 VMs", vec![], vec![], vec![]),
    ] {
        let text = ruleset(&vms, &tcp, &udp);
        let f = TempFile::new(&text);
        let ns = NetNs::new("nftchk");
        ns.run(&["nft", "-c", "-f", f.path()]);
        ns.run(&["nft", "-f", f.path()]);
        ns.run(&["nft", "-f", f.path()]);
        let listed = ns.run(&["nft", "list", "tables"]);
        assert!(
            listed.contains("table bridge mcp-unikernel\n")
                && listed.contains("table inet mcp-unikernel-host"),
            "{label}: tables after load: {listed}"
        );
        for v in &vms {
            assert!(
                text.contains(&format!("iifname \"{}\" jump vm-{}", v.tap, v.name)),
                "{label}: no jump for {}",
                v.name
            );
        }
        // The per-table split the NixOS module uses holds the same chains.
        let tables = nix_eval(&format!("({}).tables", nix_expr(&vms, &tcp, &udp))).unwrap();
        assert_eq!(tables["mcp-unikernel"]["family"], "bridge");
        assert_eq!(tables["mcp-unikernel-host"]["family"], "inet");
        for t in ["mcp-unikernel", "mcp-unikernel-host"] {
            let content = tables[t]["content"].as_str().unwrap();
            let first = content.lines().next().unwrap();
            assert!(
                text.contains(&format!("  {first}")),
                "{label}: {t} content not in ruleset"
            );
        }
        println!(
            "ruleset_parses: {label}: ok ({} lines)",
            text.lines().count()
        );
    }
}

/// Bad values are rejected at evaluation, naming the offending value.
#[test]
fn nix_rejects_bad_values() {
    if !prerequisites("nix_rejects_bad_values") {
        return;
    }
    let bad_ip = VmDecl {
        name: "vm1",
        tap: "mcp-vm1",
        ip: "10.99.0.300",
        mac: "02:00:00:00:00:01",
    };
    let bad_tap = VmDecl {
        name: "vm1",
        tap: "mcp-much-too-long0",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:01",
    };
    let bad_mac = VmDecl {
        name: "vm1",
        tap: "mcp-vm1",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:0G",
    };
    let dup = VmDecl {
        name: "vm2",
        tap: "mcp-vm2",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:02",
    };
    for (vms, needle) in [
        (vec![&bad_ip], "10.99.0.300"),
        (vec![&bad_tap], "mcp-much-too-long0"),
        (vec![&bad_mac], "02:00:00:00:00:0G"),
        (vec![&VM1, &dup], "duplicate ip"),
    ] {
        let err = nix_eval(&format!("({}).ruleset", nix_expr(&vms, &[80], &[]))).expect_err(needle);
        assert!(err.contains(needle), "error should name {needle}: {err}");
    }
    let err =
        nix_eval(&format!("({}).ruleset", nix_expr(&[&VM1], &[70000], &[]))).expect_err("port");
    assert!(err.contains("70000"), "{err}");
}

// ---------------------------------------------------------------- real Nanos guests

/// A Nanos VM in the matrix: its declaration for the rules (TAP and MAC as
/// the helper derives them, read back with `check-config`).
fn nanos_decl(sb: &vm::Sandbox, name: &'static str, ip: &'static str) -> VmDecl {
    let out = sb.run(
        None,
        &[
            "check-config",
            sb.config_dir.join(format!("{name}.json")).to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "check-config {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let leak = |k: &str| -> &'static str {
        Box::leak(
            v["network"][k]
                .as_str()
                .unwrap()
                .to_owned()
                .into_boxed_str(),
        )
    };
    VmDecl {
        name,
        tap: leak("tap"),
        ip,
        mac: leak("mac"),
    }
}

/// Ask the guest at `vm_ip` (from the host namespace) to connect to `dst:port`.
fn guest_connect(host: &NetNs, vm_ip: &str, dst: &str, port: u16) -> (Exp, String) {
    let url = format!("http://{vm_ip}:{SRV}/connect/{dst}:{port}");
    let body =
        vm::http_get(host, &url).unwrap_or_else(|| panic!("no answer from the guest at {url}"));
    match body.trim() {
        "open" => (Exp::Open, String::new()),
        b if b.starts_with("blocked") => (Exp::Blocked, b.to_owned()),
        b => panic!("unexpected answer from {url}: {b:?}"),
    }
}

/// Connect from a namespace (exit 0 open, 1 blocked; anything else a broken probe).
fn ns_connect(ns: &NetNs, dst: &str, port: u16) -> (Exp, String) {
    let mut g = Probe::Tcp {
        ns,
        dst,
        port,
        src: None,
    }
    .spawn();
    let st = g.wait();
    let err = g.stderr_text();
    match st.code() {
        Some(0) => (Exp::Open, String::new()),
        Some(1) => (Exp::Blocked, err.trim().to_owned()),
        _ => panic!(
            "probe {} -> {dst}:{port} failed to run ({st}): {err}",
            ns.name
        ),
    }
}

fn nanos_matrix(host: &NetNs, outside: &NetNs, n1: &VmDecl, n2: &VmDecl) -> Vec<Cell> {
    use Exp::*;
    let cell = |from: &str, to: String, expected: Exp, (observed, detail): (Exp, String)| Cell {
        from: from.into(),
        to,
        expected,
        observed,
        detail,
    };
    vec![
        cell(
            "nanos1",
            format!("gateway {GW}:{ALLOWED_TCP} (allowed)"),
            Open,
            guest_connect(host, n1.ip, GW, ALLOWED_TCP),
        ),
        cell(
            "nanos2",
            format!("gateway {GW}:{ALLOWED_TCP} (allowed)"),
            Open,
            guest_connect(host, n2.ip, GW, ALLOWED_TCP),
        ),
        cell(
            "nanos1",
            format!("gateway {GW}:{OTHER_TCP} (not allowed)"),
            Blocked,
            guest_connect(host, n1.ip, GW, OTHER_TCP),
        ),
        cell(
            "nanos1",
            format!("nanos2 {}:{SRV}", n2.ip),
            Blocked,
            guest_connect(host, n1.ip, n2.ip, SRV),
        ),
        cell(
            "nanos2",
            format!("nanos1 {}:{SRV}", n1.ip),
            Blocked,
            guest_connect(host, n2.ip, n1.ip, SRV),
        ),
        cell(
            "nanos1",
            format!("outside {OUTSIDE}:{SRV}"),
            Blocked,
            guest_connect(host, n1.ip, OUTSIDE, SRV),
        ),
        cell(
            "outside",
            format!("nanos1 {}:{SRV}", n1.ip),
            Blocked,
            ns_connect(outside, n1.ip, SRV),
        ),
        cell(
            "host",
            format!("nanos1 {}:{SRV}", n1.ip),
            Open,
            ns_connect(host, n1.ip, SRV),
        ),
        cell(
            "host",
            format!("nanos2 {}:{SRV}", n2.ip),
            Open,
            ns_connect(host, n2.ip, SRV),
        ),
    ]
}

/// The same rules with real Nanos guests (MCP_NANOS_DIR): two VMs started by
/// the helper on their TAPs (isolated bridge ports) in a host namespace that
/// holds the bridge, the rules and a routed "outside" namespace. Each guest
/// runs tests/net-probe, so the VM-side connections come from Nanos's own
/// network stack. Spoofed frames cannot be sent from a Nanos guest (no raw
/// sockets); those cells are covered by `isolation_matrix` above. Control:
/// with the tables deleted and the ports' isolated flag off, every cell opens.
#[test]
fn isolation_matrix_nanos_guests() {
    let test = "isolation_matrix_nanos_guests";
    if !prerequisites(test) {
        return;
    }
    let (dir, ops) = match vm::nanos_guest() {
        Ok(vm::Guest::Nanos { dir, ops, .. }) => (dir, ops),
        Ok(_) => unreachable!(),
        Err(e) => return netns::skip(test, &e),
    };
    let probe = match vm::net_probe() {
        Ok(p) => p,
        Err(e) => return netns::skip(test, &e),
    };
    let Some(user) = vm::qemu_user() else {
        return netns::skip(test, "no mcp-qemu user to run QEMU as (.ci/run creates it)");
    };
    let sb = vm::Sandbox::new("isonanos");
    let host = vm::bridge_ns("nhost");
    let outside = NetNs::new("noutside");
    host.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    route_outside(&host, &outside);

    for (name, ip) in [("nanos1", "10.99.0.2"), ("nanos2", "10.99.0.3")] {
        sb.write_config(
            name,
            &serde_json::json!({
                "schema_version": 1,
                "name": name,
                "program": probe,
                "args": ["--listen", format!("0.0.0.0:{SRV}")],
                "memory_mib": 128,
                "accel": vm::accel(),
                "network": { "ip": ip },
                "nanos_dir": dir,
                "ops": ops,
                "qemu_user": user,
                "qemu_group": user,
                "stop_timeout_secs": 20
            }),
        );
    }
    let n1 = nanos_decl(&sb, "nanos1", "10.99.0.2");
    let n2 = nanos_decl(&sb, "nanos2", "10.99.0.3");
    let rules = ruleset(&[&n1, &n2], &[ALLOWED_TCP as u32], &[5353]);
    let f = TempFile::new(&rules);
    host.run(&["nft", "-f", f.path()]);
    // Listeners dropped (killed by PID) before the namespaces, VMs stopped below.
    let _listeners = [
        spawn_listener(&host, GW, ALLOWED_TCP),
        spawn_listener(&host, GW, OTHER_TCP),
        spawn_listener(&outside, OUTSIDE, SRV),
    ];

    let mut vms = Vec::new();
    for d in [&n1, &n2] {
        let log = sb.root.join(format!("{}.log", d.name));
        let f = std::fs::File::create(&log).unwrap();
        let child = sb
            .cmd(Some(&host), &["start", d.name])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn start");
        vms.push((d.name, ChildGuard::new(child), log));
    }
    for (name, _, log) in &vms {
        let ip = if *name == "nanos1" { n1.ip } else { n2.ip };
        let up = vm::wait_http(
            &host,
            &format!("http://{ip}:{SRV}/"),
            "net-probe ready\n",
            Duration::from_secs(60),
        );
        assert!(
            up.is_some(),
            "{name} did not come up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    let cells = nanos_matrix(&host, &outside, &n1, &n2);
    print_matrix("Nanos guests, rules loaded, isolated ports", &cells, false);
    println!("(spoofed IP/MAC/ARP cells: not sendable from a Nanos guest; see isolation_matrix)");
    let with_rules = std::panic::catch_unwind(|| assert_cells(&cells, false));

    // Control: no tables, ports not isolated: every cell must open.
    host.run(&["nft", "delete", "table", "bridge", "mcp-unikernel"]);
    host.run(&["nft", "delete", "table", "inet", "mcp-unikernel-host"]);
    for d in [&n1, &n2] {
        host.run(&[
            "ip",
            "link",
            "set",
            "dev",
            d.tap,
            "type",
            "bridge_slave",
            "isolated",
            "off",
        ]);
    }
    let open = nanos_matrix(&host, &outside, &n1, &n2);
    print_matrix(
        "Nanos guests, NO rules, ports NOT isolated (every cell must be open)",
        &open,
        true,
    );
    let control = std::panic::catch_unwind(|| assert_cells(&open, true));

    for (name, mut guard, _) in vms {
        let out = sb.run(Some(&host), &["stop", name]);
        assert!(
            out.status.success(),
            "stop {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard.wait();
        sb.run(Some(&host), &["cleanup", name]);
    }
    if let Err(e) = with_rules {
        std::panic::resume_unwind(e);
    }
    if let Err(e) = control {
        std::panic::resume_unwind(e);
    }
}
