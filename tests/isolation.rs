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
//!
//! Besides TCP/ICMP, the matrix has layer-2 cells: ARP asked from a VM
//! namespace for the gateway and for the host's other addresses (a second
//! address on the bridge, the address on `out0`), ARP the host itself sends
//! naming another of its addresses, link-local multicast frames (LLDP, 802.1X,
//! an STP BPDU) sent with raw sockets and looked for on the host (packet
//! sockets for the frame's protocol, and the bridge's own STP root), and a
//! bridge port no VM declares, also impersonating a VM's MAC and IPv4.

mod common;

use common::nix::nix_eval;

use common::netns::{self, ChildGuard, NetNs};
use common::vm;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BRIDGE: &str = "mcp-br0";
const GW: &str = "10.99.0.1";
const ALLOWED_TCP: u16 = 8080;
const OTHER_TCP: u16 = 9090;
/// A gateway port only vm1 may reach (vm1's own `allowedTCPPorts`).
const ONLY_VM1_TCP: u16 = 7070;
const SRV: u16 = 8080;
const OUTSIDE_HOST: &str = "192.168.77.1";
const OUTSIDE: &str = "192.168.77.2";
const SPOOF_IP: &str = "10.99.0.50";
const SPOOF_MAC: &str = "02:00:00:00:00:99";
/// A second host address on the bridge (not the gateway): ARP for it must go unanswered.
const OTHER_BR_IP: &str = "10.99.0.200";

struct VmDecl {
    name: &'static str,
    tap: &'static str,
    ip: &'static str,
    mac: &'static str,
    /// Gateway TCP ports only this VM may reach (its own `allowedTCPPorts`).
    own_tcp: &'static [u16],
}

const VM1: VmDecl = VmDecl {
    name: "vm1",
    tap: "mcp-vm1",
    ip: "10.99.0.2",
    mac: "02:00:00:00:00:01",
    own_tcp: &[ONLY_VM1_TCP],
};
const VM2: VmDecl = VmDecl {
    name: "vm2",
    tap: "mcp-vm2",
    ip: "10.99.0.3",
    mac: "02:00:00:00:00:02",
    own_tcp: &[],
};
/// Attached to the bridge, but not declared to the rules.
const ROGUE: VmDecl = VmDecl {
    name: "rogue",
    tap: "rogue0",
    ip: "10.99.0.9",
    mac: "02:00:00:00:00:09",
    own_tcp: &[],
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

/// Ask IFACE's segment who has TARGET (ARP request from sender MAC/IP) and
/// wait 1 s for the answer addressed to that MAC. Exit 0 answered, 1 not.
const PY_ARP_ASK: &str = r#"
import socket, sys, time
ifc, sha, spa, tpa = sys.argv[1:5]
mac = bytes.fromhex(sha.replace(":", ""))
ip = socket.inet_aton
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind((ifc, 0x0806))
s.send(b"\xff" * 6 + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + ip(spa) + b"\x00" * 6 + ip(tpa))
end = time.time() + 1.0
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try: d = s.recv(2048)
    except socket.timeout: break
    if len(d) >= 42 and d[20:22] == b"\x00\x02" and d[28:32] == ip(tpa) and d[32:38] == mac:
        print("answered by", d[22:28].hex(":")); sys.exit(0)
print("no answer for", tpa, file=sys.stderr); sys.exit(1)
"#;

/// Send one link-local multicast frame on IFACE from MAC: `lldp` (LLDPDU to
/// 01:80:c2:00:00:0e), `eapol` (802.1X EAPOL-Start to 01:80:c2:00:00:03) or
/// `stp` (a configuration BPDU to 01:80:c2:00:00:00 claiming to be the root
/// bridge with priority 0 and bridge MAC = MAC).
const PY_L2_SEND: &str = r#"
import socket, struct, sys
ifc, kind, src = sys.argv[1:4]
m = lambda s: bytes.fromhex(s.replace(":", ""))
mac = m(src)
if kind == "stp":
    bid = struct.pack("!H", 0) + mac
    bpdu = struct.pack("!HBBB", 0, 0, 0, 0) + bid + struct.pack("!I", 0) + bid + struct.pack("!HHHHH", 0x8001, 0, 20 * 256, 2 * 256, 15 * 256)
    llc = b"\x42\x42\x03" + bpdu
    frame = m("01:80:c2:00:00:00") + mac + struct.pack("!H", len(llc)) + llc
elif kind == "lldp":
    tlv = lambda t, v: struct.pack("!H", (t << 9) | len(v)) + v
    frame = m("01:80:c2:00:00:0e") + mac + b"\x88\xcc" + tlv(1, b"\x04" + mac) + tlv(2, b"\x05eth0") + tlv(3, b"\x00\x78") + b"\x00\x00"
elif kind == "eapol":
    frame = m("01:80:c2:00:00:03") + mac + b"\x88\x8e" + b"\x01\x01\x00\x00"
else:
    sys.exit(3)
frame += b"\0" * max(0, 60 - len(frame))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((ifc, 0)); s.send(frame)
"#;

/// A packet socket for ethertype PROTO on every interface of the namespace
/// (as an L2 daemon opens one: LLDP, 802.1X, ARP), which is fed after the
/// TAP's ingress and the bridge have had their say. Prints "ready", then
/// exits 0 as soon as a frame whose bytes at OFFSET equal HEX arrives, 1
/// after SECS without one.
const PY_WATCH: &str = r#"
import socket, sys, time
proto, off, want, secs = int(sys.argv[1], 16), int(sys.argv[2]), bytes.fromhex(sys.argv[3].replace(":", "")), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
print("ready", flush=True); end = time.time() + secs
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try: d, a = s.recvfrom(4096)
    except socket.timeout: break
    if d[off:off + len(want)] == want: print("seen on", a[0]); sys.exit(0)
print("not seen", file=sys.stderr); sys.exit(1)
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
    nix_expr_with(vms, tcp, udp, "")
}

/// As `nix_expr`, with `extra` (e.g. `tapIngressHooks = false;`) added to the arguments.
fn nix_expr_with(vms: &[&VmDecl], tcp: &[u32], udp: &[u32], extra: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/lib/nftables.nix");
    let vms: Vec<String> = vms
        .iter()
        .map(|v| {
            let own: Vec<String> = v.own_tcp.iter().map(|p| p.to_string()).collect();
            format!(
                r#"{{ name = "{}"; tap = "{}"; ip = "{}"; mac = "{}"; allowedTCPPorts = {}; }}"#,
                v.name,
                v.tap,
                v.ip,
                v.mac,
                nix_list(&own)
            )
        })
        .collect();
    let ports = |ps: &[u32]| nix_list(&ps.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    format!(
        r#"import {} {{ bridge = "{BRIDGE}"; gateway = "{GW}"; prefixLength = 24; allowedTCPPorts = {}; allowedUDPPorts = {}; vms = {}; {extra} }}"#,
        path.display(),
        ports(tcp),
        ports(udp),
        nix_list(&vms)
    )
}

/// One string output (`ruleset`, `removal`) of the function for EXPR.
fn nix_text(expr: &str, output: &str) -> String {
    let v = nix_eval(&format!("({expr}).{output}")).unwrap_or_else(|e| panic!("nix eval: {e}"));
    v.as_str()
        .unwrap_or_else(|| panic!("{output} is a string"))
        .to_owned()
}

fn ruleset(vms: &[&VmDecl], tcp: &[u32], udp: &[u32]) -> String {
    nix_text(&nix_expr(vms, tcp, udp), "ruleset")
}

/// The `removal` text (deletes every table of ours, harmless when absent).
fn removal() -> String {
    nix_text(&nix_expr(&[], &[], &[]), "removal")
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
        // Another host address on the bridge, for the ARP cells (the gateway
        // stays the primary address, so the host's own traffic uses it).
        h.run(&[
            "ip",
            "addr",
            "add",
            &format!("{OTHER_BR_IP}/24"),
            "dev",
            BRIDGE,
        ]);
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
        let listeners: [(&NetNs, &str, u16); 6] = [
            (&lab.host, GW, ALLOWED_TCP),
            (&lab.host, GW, OTHER_TCP),
            (&lab.host, GW, ONLY_VM1_TCP),
            (&lab.vm1, VM1.ip, SRV),
            (&lab.vm2, VM2.ip, SRV),
            (&lab.outside, OUTSIDE, SRV),
        ];
        let servers = listeners
            .iter()
            .map(|(ns, addr, port)| spawn_listener(ns, addr, *port))
            .collect();
        lab.servers = servers;

        // vm1 and rogue know the gateway's MAC statically, and the host knows
        // rogue's, so the spoofed-source-IP cell and rogue's IP cells send IPv4
        // right away: they test the IPv4 rules, not ARP (ARP has its own cells).
        let br_mac = bridge_mac(&lab.host);
        for ns in [&lab.vm1, &lab.rogue] {
            ns.run(&[
                "ip",
                "neigh",
                "replace",
                GW,
                "lladdr",
                &br_mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        lab.host.run(&[
            "ip",
            "neigh",
            "replace",
            ROGUE.ip,
            "lladdr",
            ROGUE.mac,
            "dev",
            BRIDGE,
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

/// Exit 0 → open, 1 → blocked; anything else is a broken probe (panic).
fn verdict(what: &str, st: std::process::ExitStatus, out: &str, err: &str) -> (Exp, String) {
    match st.code() {
        Some(0) => (Exp::Open, out.trim().to_owned()),
        Some(1) => (Exp::Blocked, err.trim().to_owned()),
        _ => panic!("probe {what} failed to run ({st}): {out} {err}"),
    }
}

/// ARP request from `ns`'s eth0 (sender MAC/IP as given) for `target`:
/// open when an answer comes back within 1 s.
fn arp_ask(ns: &NetNs, sha: &str, spa: &str, target: &str) -> (Exp, String) {
    let out = ns.try_run(&["python3", "-c", &py(PY_ARP_ASK), "eth0", sha, spa, target]);
    verdict(
        &format!("ARP ask from {} for {target}", ns.name),
        out.status,
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
}

/// Start a PY_WATCH listener in `watcher` (ethertype `proto`, bytes `hex` at
/// `offset`, for `secs`), run `action` once it listens, and report whether
/// the listener saw such a frame.
fn watch(
    watcher: &NetNs,
    proto: &str,
    offset: usize,
    hex: &str,
    secs: f64,
    action: impl FnOnce(),
) -> (Exp, String) {
    let mut child = watcher
        .cmd("python3")
        .args([
            "-c",
            &py(PY_WATCH),
            proto,
            &offset.to_string(),
            hex,
            &secs.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watcher");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut g = ChildGuard::new(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    if line.trim() != "ready" {
        let st = g.wait();
        panic!(
            "watcher in {} did not start ({st}): {line} {}",
            watcher.name,
            g.stderr_text()
        );
    }
    action();
    let st = g.wait();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
    let err = g.stderr_text();
    verdict(&format!("watch in {}", watcher.name), st, &rest, &err)
}

/// A link-local frame (`kind` for PY_L2_SEND) from `ns`'s eth0 with `mac`.
fn l2_send(ns: &NetNs, kind: &str, mac: &str) {
    ns.run(&["python3", "-c", &py(PY_L2_SEND), "eth0", kind, mac]);
}

fn cell(from: &str, to: &str, expected: Exp, (observed, detail): (Exp, String)) -> Cell {
    Cell {
        from: from.into(),
        to: to.into(),
        expected,
        observed,
        detail,
    }
}

/// Run `f` with `ns`'s eth0 temporarily given `mac` and `ip`, then give
/// eth0 back its own MAC (`own_mac`) and drop `ip`.
fn as_other_identity<T>(
    ns: &NetNs,
    own_mac: &str,
    mac: &str,
    ip: &str,
    f: impl FnOnce() -> T,
) -> T {
    let cidr = format!("{ip}/24");
    ns.run(&["ip", "link", "set", "eth0", "address", mac]);
    ns.run(&["ip", "addr", "add", &cidr, "dev", "eth0"]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ns.run(&["ip", "addr", "del", &cidr, "dev", "eth0"]);
    ns.run(&["ip", "link", "set", "eth0", "address", own_mac]);
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn bridge_mac(host: &NetNs) -> String {
    host.run(&["cat", &format!("/sys/class/net/{BRIDGE}/address")])
        .trim()
        .to_owned()
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
        // Per-VM egress: vm1's own port is open to vm1 only.
        tcp(
            "vm1",
            &format!("gateway {GW}:{ONLY_VM1_TCP} (vm1's own port)"),
            Open,
            &lab.vm1,
            GW,
            ONLY_VM1_TCP,
            Some(VM1.ip),
        ),
        tcp(
            "vm2",
            &format!("gateway {GW}:{ONLY_VM1_TCP} (vm1's own port)"),
            Blocked,
            &lab.vm2,
            GW,
            ONLY_VM1_TCP,
            None,
        ),
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

    // Undeclared port impersonating vm1 (vm1's MAC and IPv4 in the ARP
    // request): a VM's MAC is accepted on its own TAP only. (Without rules
    // this teaches the bridge vm1's MAC on rogue0; vm1's own ARP cells
    // right after re-teach it.)
    cells.push(cell(
        "rogue ARP as vm1 (its MAC+IP)",
        &format!("gateway {GW} answers"),
        Blocked,
        arp_ask(&lab.rogue, VM1.mac, VM1.ip, GW),
    ));
    cells.push(cell(
        "rogue (undeclared port) ARP",
        &format!("gateway {GW} answers"),
        Blocked,
        arp_ask(&lab.rogue, ROGUE.mac, ROGUE.ip, GW),
    ));
    // ARP from a VM: answered for the gateway, for no other host address.
    cells.push(cell(
        "vm1 ARP",
        &format!("gateway {GW} answers"),
        Open,
        arp_ask(&lab.vm1, VM1.mac, VM1.ip, GW),
    ));
    cells.push(cell(
        "vm1 ARP",
        &format!("host {OTHER_BR_IP} (bridge, not gw) answers"),
        Blocked,
        arp_ask(&lab.vm1, VM1.mac, VM1.ip, OTHER_BR_IP),
    ));
    cells.push(cell(
        "vm1 ARP",
        &format!("host {OUTSIDE_HOST} (out0) answers"),
        Blocked,
        arp_ask(&lab.vm1, VM1.mac, VM1.ip, OUTSIDE_HOST),
    ));

    // ARP the host sends: a connection from another host address makes the
    // kernel ask for vm1 with that address as the sender (arp_announce=0).
    // Observed in vm1: an ARP frame whose sender IP (offset 28) is it.
    let out0_hex: String = OUTSIDE_HOST
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    lab.host.run(&["ip", "neigh", "flush", "dev", BRIDGE]);
    cells.push(cell(
        &format!("host ARP naming {OUTSIDE_HOST}"),
        "seen by vm1",
        Blocked,
        watch(&lab.vm1, "0806", 28, &out0_hex, 1.5, || {
            lab.host.try_run(&[
                "python3",
                "-c",
                &py(PY_CONNECT),
                VM1.ip,
                &SRV.to_string(),
                OUTSIDE_HOST,
            ]);
        }),
    ));

    // Link-local multicast from a VM, looked for on the host by a packet
    // socket for the frame's ethertype (what an LLDP or 802.1X daemon uses):
    // LLDP is consumed by the bridge as link-local (no bridge hook sees it),
    // EAPOL goes through the bridge's input hook.
    let vm1_mac_hex = VM1.mac.replace(':', "");
    cells.push(cell(
        "vm1 LLDP (01:80:c2:00:00:0e)",
        "host LLDP socket",
        Blocked,
        watch(&lab.host, "88cc", 6, &vm1_mac_hex, 1.0, || {
            l2_send(&lab.vm1, "lldp", VM1.mac)
        }),
    ));
    cells.push(cell(
        "vm1 802.1X EAPOL (01:80:c2:00:00:03)",
        "host 802.1X socket",
        Blocked,
        watch(&lab.host, "888e", 6, &vm1_mac_hex, 1.0, || {
            l2_send(&lab.vm1, "eapol", VM1.mac)
        }),
    ));

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

    // Undeclared port taking vm1's MAC and IPv4 for TCP to the gateway
    // (the host's IP check accepts vm1's pair; only its TAP may carry it).
    // The host knows vm1's MAC already (as it would), so its SYN-ACK needs
    // no ARP and follows the bridge's learning to whichever port sent the SYN.
    lab.host.run(&[
        "ip",
        "neigh",
        "replace",
        VM1.ip,
        "lladdr",
        VM1.mac,
        "dev",
        BRIDGE,
        "nud",
        "permanent",
    ]);
    let imp = as_other_identity(&lab.rogue, ROGUE.mac, VM1.mac, VM1.ip, || {
        run_probes(vec![tcp(
            "rogue as vm1 (its MAC+IP)",
            &gw_allowed,
            Blocked,
            &lab.rogue,
            GW,
            ALLOWED_TCP,
            Some(VM1.ip),
        )])
    });
    lab.host.run(&["ip", "neigh", "del", VM1.ip, "dev", BRIDGE]);
    cells.extend(imp);

    // STP, last (it turns the host bridge's STP on): a BPDU from vm1 claiming
    // to be the root bridge. Observed "open" when the host bridge took vm1 as
    // its root (the kernel's STP consumed the BPDU).
    let root_file = format!("/sys/class/net/{BRIDGE}/bridge/root_id");
    lab.host.run(&[
        "ip",
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "1",
    ]);
    let claimed = format!("0000.{vm1_mac_hex}");
    l2_send(&lab.vm1, "stp", VM1.mac);
    std::thread::sleep(Duration::from_millis(300));
    let root = lab.host.run(&["cat", &root_file]).trim().to_owned();
    lab.host.run(&[
        "ip",
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
    ]);
    cells.push(Cell {
        from: "vm1 STP BPDU (01:80:c2:00:00:00)".into(),
        to: "host bridge STP root".into(),
        expected: Blocked,
        observed: if root == claimed { Open } else { Blocked },
        detail: format!("root_id {root} (vm1 claimed {claimed})"),
    });
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
        "{:<36} {:<44} {:<9} {:<9}",
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
            "{:<36} {:<44} {:<9} {:<9} {mark} {}",
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

/// Our tables (family, name) as `nft list tables` prints them.
const TABLES: [(&str, &str); 4] = [
    ("bridge", "mcp-unikernel"),
    ("inet", "mcp-unikernel-host"),
    ("arp", "mcp-unikernel-arp"),
    ("netdev", "mcp-unikernel-taps"),
];

fn listed_tables(ns: &NetNs) -> Vec<String> {
    ns.run(&["nft", "list", "tables"])
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The generated text is accepted by nft, for 3 VMs and for none, with and
/// without the TAP ingress table: checked with `nft -c` and also loaded
/// (twice: reloading replaces the tables) in a throwaway namespace, since
/// `-c` does not ask the kernel about every expression. `removal` deletes
/// exactly our tables, leaves others alone, and loads when they are absent.
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
        own_tcp: &[],
    };
    let removal = removal();
    let rm = TempFile::new(&removal);
    for (label, vms, tcp, udp, extra) in [
        ("3 VMs", vec![&VM1, &VM2, &vm3], vec![80, 443], vec![53], ""),
        (
            "3 VMs, tapIngressHooks = false",
            vec![&VM1, &VM2, &vm3],
            vec![80],
            vec![],
            "tapIngressHooks = false;",
        ),
        ("0 VMs", vec![], vec![], vec![], ""),
    ] {
        let expr = nix_expr_with(&vms, &tcp, &udp, extra);
        let text = nix_text(&expr, "ruleset");
        let with_taps = !vms.is_empty() && extra.is_empty();
        let expected: Vec<String> = TABLES
            .iter()
            .filter(|(f, _)| *f != "netdev" || with_taps)
            .map(|(f, n)| format!("table {f} {n}"))
            .collect();
        let f = TempFile::new(&text);
        let ns = NetNs::new("nftchk");
        // Removal first: harmless with none of our tables present.
        ns.run(&["nft", "-f", rm.path()]);
        ns.run(&["nft", "add", "table", "inet", "someone-else"]);
        ns.run(&["nft", "-c", "-f", f.path()]);
        ns.run(&["nft", "-f", f.path()]);
        ns.run(&["nft", "-f", f.path()]);
        let mut listed = listed_tables(&ns);
        listed.sort();
        let mut want = expected.clone();
        want.push("table inet someone-else".into());
        want.sort();
        assert_eq!(listed, want, "{label}: tables after load");
        for v in &vms {
            assert!(
                text.contains(&format!("iifname \"{}\" jump vm-{}", v.tap, v.name)),
                "{label}: no jump for {}",
                v.name
            );
        }
        assert!(
            !text.contains("meta mark") && !text.contains("mark set"),
            "{label}: the rules touch the packet mark"
        );
        // The per-table split the NixOS module uses holds the same chains.
        let tables = nix_eval(&format!("({expr}).tables")).unwrap();
        let mut names: Vec<String> = tables
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, t)| format!("table {} {n}", t["family"].as_str().unwrap()))
            .collect();
        names.sort();
        let mut sorted = expected.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{label}: tables output");
        for (_, t) in TABLES.iter().filter(|(f, _)| *f != "netdev" || with_taps) {
            let content = tables[t]["content"].as_str().unwrap();
            let first = content.lines().next().unwrap();
            assert!(
                text.contains(&format!("  {first}")),
                "{label}: {t} content not in ruleset"
            );
        }
        // Removal deletes ours, keeps the other table, and runs again cleanly.
        ns.run(&["nft", "-f", rm.path()]);
        assert_eq!(
            listed_tables(&ns),
            vec!["table inet someone-else".to_owned()],
            "{label}: after removal"
        );
        ns.run(&["nft", "-f", rm.path()]);
        println!(
            "ruleset_parses: {label}: ok ({} lines, tables: {})",
            text.lines().count(),
            expected.join(", ")
        );
    }
    // A ruleset without the TAP table also deletes one left by a previous load.
    let ns = NetNs::new("nftchk");
    let with = TempFile::new(&ruleset(&[&VM1], &[], &[]));
    let without = TempFile::new(&nix_text(
        &nix_expr_with(&[&VM1], &[], &[], "tapIngressHooks = false;"),
        "ruleset",
    ));
    ns.run(&["nft", "-f", with.path()]);
    ns.run(&["nft", "-f", without.path()]);
    assert!(
        !listed_tables(&ns).contains(&"table netdev mcp-unikernel-taps".to_owned()),
        "TAP table left behind: {:?}",
        listed_tables(&ns)
    );
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
        own_tcp: &[],
    };
    let bad_tap = VmDecl {
        name: "vm1",
        tap: "mcp-much-too-long0",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:01",
        own_tcp: &[],
    };
    let bad_mac = VmDecl {
        name: "vm1",
        tap: "mcp-vm1",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:0G",
        own_tcp: &[],
    };
    let dup = VmDecl {
        name: "vm2",
        tap: "mcp-vm2",
        ip: "10.99.0.2",
        mac: "02:00:00:00:00:02",
        own_tcp: &[],
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
    let err = nix_eval(&format!(
        "({}).ruleset",
        nix_expr_with(&[&VM1], &[], &[], r#"tapIngressHooks = "yes";"#)
    ))
    .expect_err("tapIngressHooks");
    assert!(err.contains("tapIngressHooks"), "{err}");
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
        own_tcp: &[],
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
            format!("gateway {GW}:{ONLY_VM1_TCP} (nanos1's own port)"),
            Open,
            guest_connect(host, n1.ip, GW, ONLY_VM1_TCP),
        ),
        cell(
            "nanos2",
            format!("gateway {GW}:{ONLY_VM1_TCP} (nanos1's own port)"),
            Blocked,
            guest_connect(host, n2.ip, GW, ONLY_VM1_TCP),
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
    // One uid per VM (the helper refuses a QEMU user shared by two configs).
    for user in ["mcpt-a", "mcpt-b"] {
        if std::process::Command::new("id")
            .arg(user)
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return netns::skip(
                test,
                &format!("no user {user} to run QEMU as (.ci/run creates it)"),
            );
        }
    }
    let sb = vm::Sandbox::new("isonanos");
    let host = vm::bridge_ns("nhost");
    let outside = NetNs::new("noutside");
    host.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    route_outside(&host, &outside);

    for (name, ip, user) in [
        ("nanos1", "10.99.0.2", "mcpt-a"),
        ("nanos2", "10.99.0.3", "mcpt-b"),
    ] {
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
    let n1 = VmDecl {
        own_tcp: &[ONLY_VM1_TCP],
        ..nanos_decl(&sb, "nanos1", "10.99.0.2")
    };
    let n2 = nanos_decl(&sb, "nanos2", "10.99.0.3");
    let rules = ruleset(&[&n1, &n2], &[ALLOWED_TCP as u32], &[5353]);
    let f = TempFile::new(&rules);
    host.run(&["nft", "-f", f.path()]);
    // Listeners dropped (killed by PID) before the namespaces, VMs stopped below.
    let _listeners = [
        spawn_listener(&host, GW, ALLOWED_TCP),
        spawn_listener(&host, GW, OTHER_TCP),
        spawn_listener(&host, GW, ONLY_VM1_TCP),
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
    let rm = TempFile::new(&removal());
    host.run(&["nft", "-f", rm.path()]);
    assert!(
        listed_tables(&host).is_empty(),
        "tables left after removal: {:?}",
        listed_tables(&host)
    );
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
