//! A guest's resolver (issue 15, part 3): with `network.nameservers` = the
//! gateway, a real guest resolves a name through a DNS server this test runs
//! on the gateway address inside the test namespace; with no nameservers its
//! /etc/resolv.conf names none (never ops's default 8.8.8.8) and no query
//! reaches any server. The guest runs tests/net-probe (`/resolve/NAME` is
//! getaddrinfo inside the guest, `/read/etc/resolv.conf` its file).
//!
//! The Linux stand-in in CI; Nanos (an image built by real ops, whose own
//! /etc/resolv.conf the helper's staged file replaces) with MCP_NANOS_DIR.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::netns::{self, ChildGuard, NetNs};
use common::vm::{self, Guest, Sandbox};

const GW: &str = "10.99.0.1";
const IP: &str = "10.99.0.2";
const ANSWER: &str = "10.99.0.77";

/// A DNS server on GW:53/udp: A records for *.probe.test, NXDOMAIN for the
/// rest; prints one line per query it gets (`query NAME from IP`).
const DNS_SERVER: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("listening", flush=True)
answer = socket.inet_aton(sys.argv[2])
while True:
    q, peer = s.recvfrom(1500)
    tid, flags, qd = struct.unpack("!HHH", q[:6])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype, = struct.unpack("!H", q[i + 1:i + 3])
    question = q[12:i + 5]
    name = ".".join(labels).lower()
    print("query %s type %d from %s" % (name, qtype, peer[0]), flush=True)
    ok = name.endswith(".probe.test")
    ans = b""
    if ok and qtype == 1:
        ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + answer
    rcode = 0 if ok else 3
    hdr = struct.pack("!HHHHHH", tid, 0x8180 | rcode, 1, 1 if ans else 0, 0, 0)
    s.sendto(hdr + question + ans, peer)
"#;

fn setup(test: &str, nanos: bool) -> Option<(Sandbox, NetNs, Guest, std::path::PathBuf)> {
    let (sb, ns, guest) = vm::vm_setup(test, nanos)?;
    match vm::net_probe() {
        Ok(p) => Some((sb, ns, guest, p)),
        Err(e) => {
            netns::skip(test, &e);
            None
        }
    }
}

fn probe_config(
    guest: &Guest,
    probe: &Path,
    vol: &Path,
    nameservers: &[&str],
) -> serde_json::Value {
    let mut cfg = guest.config("dns", IP, vol);
    cfg["program"] = serde_json::json!(probe);
    cfg["args"] = serde_json::json!(["--listen", "0.0.0.0:8080"]);
    cfg["network"]["nameservers"] = serde_json::json!(nameservers);
    cfg
}

/// Start the VM, wait for net-probe, run `f`, stop and clean up (also when
/// `f` panics).
fn with_vm(sb: &Sandbox, ns: &NetNs, f: impl FnOnce()) {
    let log = sb.root.join("dns-start.log");
    let out = fs::File::create(&log).unwrap();
    let child = sb
        .cmd(Some(ns), &["start", "dns"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn start");
    let mut guard = ChildGuard::new(child);
    let up = vm::wait_http(
        ns,
        &format!("http://{IP}:8080/"),
        "net-probe ready\n",
        Duration::from_secs(90),
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(
            up.is_some(),
            "net-probe did not come up: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        f()
    }));
    let _ = sb.run(Some(ns), &["stop", "dns"]);
    guard.wait();
    let _ = sb.run(Some(ns), &["cleanup", "dns"]);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}

/// The servers a resolv.conf names (as glibc reads it).
fn nameservers(conf: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next().unwrap_or("").to_owned())
        })
        .collect()
}

fn get(ns: &NetNs, path: &str, secs: u32) -> String {
    let out = ns
        .cmd("curl")
        .args([
            "-s",
            "--max-time",
            &secs.to_string(),
            &format!("http://{IP}:8080{path}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn guest_resolves_through_the_gateway_only(test: &str, nanos: bool) {
    let Some((sb, ns, guest, probe)) = setup(test, nanos) else {
        return;
    };
    let vol = sb.root.join("empty");
    fs::create_dir_all(&vol).unwrap();
    let dns_log = sb.root.join("dns-server.log");
    let mut dns = ChildGuard::new(
        ns.cmd("python3")
            .args(["-u", "-c", DNS_SERVER, GW, ANSWER])
            .stdout(fs::File::create(&dns_log).unwrap())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the DNS server"),
    );
    let t0 = std::time::Instant::now();
    while !fs::read_to_string(&dns_log)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(dns.try_wait().is_none(), "the DNS server exited");
        assert!(t0.elapsed() < Duration::from_secs(10), "DNS server not up");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 1. nameservers = [ gateway ]: resolved through the test's server.
    sb.write_config("dns", &probe_config(&guest, &probe, &vol, &[GW]));
    with_vm(&sb, &ns, || {
        let conf = get(&ns, "/read/etc/resolv.conf", 10);
        println!("{} guest /etc/resolv.conf:\n{conf}", guest.label());
        assert_eq!(nameservers(&conf), [GW], "{conf}");
        let r = get(&ns, "/resolve/svc.probe.test", 30);
        println!("resolve svc.probe.test: {}", r.trim());
        assert_eq!(r.trim(), format!("resolved {ANSWER}"));
        let log = fs::read_to_string(&dns_log).unwrap();
        assert!(
            log.contains(&format!("query svc.probe.test type 1 from {IP}")),
            "the query did not come from the guest to the gateway: {log}"
        );
    });

    // 2. nameservers = [ ]: no resolver at all, nothing asked.
    let before = fs::read_to_string(&dns_log).unwrap().lines().count();
    sb.write_config("dns", &probe_config(&guest, &probe, &vol, &[]));
    with_vm(&sb, &ns, || {
        let conf = get(&ns, "/read/etc/resolv.conf", 10);
        println!(
            "{} guest /etc/resolv.conf without nameservers:\n{conf}",
            guest.label()
        );
        assert!(nameservers(&conf).is_empty(), "{conf}");
        // glibc then asks 127.0.0.1: the stand-in refuses at once (ICMP),
        // in a Nanos guest nothing answers and the lookup outlasts the 15 s
        // curl allows. Either way no name resolves and no query leaves.
        let r = get(&ns, "/resolve/svc.probe.test", 15);
        println!("resolve svc.probe.test: {:?}", r.trim());
        assert!(r.is_empty() || r.starts_with("failed: "), "{r}");
        assert_eq!(get(&ns, "/", 5), "net-probe ready\n");
    });
    let log = fs::read_to_string(&dns_log).unwrap();
    assert_eq!(
        log.lines().count(),
        before,
        "a guest without nameservers sent DNS queries: {log}"
    );
    dns.kill_now();
    dns.wait();
}

#[test]
fn standin_guest_resolves_through_the_gateway_only() {
    guest_resolves_through_the_gateway_only(
        "standin_guest_resolves_through_the_gateway_only",
        false,
    );
}

#[test]
fn nanos_guest_resolves_through_the_gateway_only() {
    guest_resolves_through_the_gateway_only("nanos_guest_resolves_through_the_gateway_only", true);
}
