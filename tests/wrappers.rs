//! The helper's wrappers around rtnetlink, the TUN ioctls, qapi and pidfds,
//! against the real kernel and real QEMU processes (as root):
//!
//! - a bridge that vanishes between `check_bridge` and `attach_isolated` is
//!   named in the error; a TAP is removed only when owned by the given uid;
//! - a QMP socket replaced by a symlink to another VM's socket is refused
//!   (SO_PEERCRED is not the validated PID), and `stop` then ends the right
//!   QEMU through its pidfd, never the other one;
//! - `stop` names the QMP SHUTDOWN reason (`host-qmp-quit` when the guest
//!   ignores the power button).
//!
//! Network tests run in a namespace of their own: the test binary re-runs
//! itself (one test, `--exact`) under `ip netns exec`, which also mounts that
//! namespace's /sys.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{require_root_or_skip, ChildGuard, NetNs};
use common::vm::{self, Sandbox};
use mcp_unikernel::launch::{self, LaunchRecord};
use mcp_unikernel::paths::{Roots, VmPaths};
use mcp_unikernel::qmp::{QmpError, Session};
use mcp_unikernel::tap::{self, NetError, Removed};

const IN_NETNS: &str = "MCP_WRAPPERS_IN_NETNS";

/// Run `test` (this test binary, that one test) inside a fresh namespace;
/// returns false in the parent, true in the child (which runs the body).
fn in_own_netns(test: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let ns = NetNs::new("wrap");
    let out = ns
        .cmd(std::env::current_exe().unwrap().to_str().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, &ns.name)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "{test} in {} failed:\n{text}",
        ns.name
    );
    assert!(text.contains("1 passed"), "{text}");
    false
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sys(iface: &str, file: &str) -> String {
    fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

const NOBODY: u32 = 65534;

#[test]
fn bridge_vanishing_between_check_and_attach_is_named() {
    let test = "bridge_vanishing_between_check_and_attach_is_named";
    if !require_root_or_skip(test) || !in_own_netns(test) {
        return;
    }
    ip(&["link", "add", "mcpt-brv", "type", "bridge"]);
    tap::check_bridge("mcpt-brv").expect("bridge passes the check");
    assert_eq!(
        tap::ensure("mcpt-tapv", NOBODY, NOBODY).unwrap(),
        tap::TapOutcome::Created
    );
    ip(&["link", "del", "mcpt-brv"]);
    let e = tap::attach_isolated("mcpt-tapv", "mcpt-brv").unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, NetError::BridgeVanished { .. }), "{text}");
    assert!(
        text.contains("\"mcpt-brv\"") && text.contains("does not exist"),
        "{text}"
    );
    assert_eq!(sys("mcpt-tapv", "master"), "", "attached to something");

    // An interface of that name that is not a bridge is refused as such.
    ip(&[
        "link", "add", "mcpt-brv", "type", "veth", "peer", "name", "mcpt-brp",
    ]);
    let e = tap::attach_isolated("mcpt-tapv", "mcpt-brv").unwrap_err();
    assert!(matches!(e, NetError::NotABridge(_)), "{e}");

    // And with a bridge: a port, isolated, up (in that order, each acked).
    ip(&["link", "del", "mcpt-brv"]);
    ip(&["link", "add", "mcpt-brv", "type", "bridge"]);
    tap::attach_isolated("mcpt-tapv", "mcpt-brv").unwrap();
    assert!(
        fs::read_link("/sys/class/net/mcpt-tapv/master")
            .unwrap()
            .ends_with("mcpt-brv"),
        "not a port of the bridge"
    );
    assert_eq!(sys("mcpt-tapv", "brport/isolated"), "1");
    let flags = u32::from_str_radix(sys("mcpt-tapv", "flags").trim_start_matches("0x"), 16);
    assert_eq!(flags.unwrap() & 1, 1, "not up");
    assert_eq!(
        tap::remove_owned("mcpt-tapv", NOBODY).unwrap(),
        Removed::Removed
    );
}

#[test]
fn tap_is_removed_only_when_owned_by_the_uid() {
    let test = "tap_is_removed_only_when_owned_by_the_uid";
    if !require_root_or_skip(test) || !in_own_netns(test) {
        return;
    }
    tap::ensure("mcpt-tapo", NOBODY, NOBODY).unwrap();
    assert_eq!(tap::owner("mcpt-tapo").unwrap(), Some(NOBODY));
    let e = tap::remove_owned("mcpt-tapo", 4242).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, NetError::ForeignOwner { .. }), "{text}");
    assert!(
        text.contains("mcpt-tapo") && text.contains("65534") && text.contains("4242"),
        "{text}"
    );
    assert!(tap::iface_exists("mcpt-tapo"), "a foreign TAP was removed");
    assert_eq!(
        tap::remove_owned("mcpt-tapo", NOBODY).unwrap(),
        Removed::Removed
    );
    assert!(!tap::iface_exists("mcpt-tapo"));
    assert_eq!(
        tap::remove_owned("mcpt-tapo", NOBODY).unwrap(),
        Removed::Absent
    );

    // A TAP with no owner (-1) is nobody's: refused too.
    ip(&["tuntap", "add", "dev", "mcpt-tapn", "mode", "tap"]);
    assert_eq!(tap::owner("mcpt-tapn").unwrap(), None);
    let e = tap::remove_owned("mcpt-tapn", NOBODY).unwrap_err();
    assert!(e.to_string().contains("no user"), "{e}");
    assert!(tap::iface_exists("mcpt-tapn"));
    // Not a TAP at all: refused, left alone.
    ip(&[
        "link", "add", "mcpt-dum", "type", "veth", "peer", "name", "mcpt-dup",
    ]);
    let e = tap::remove_owned("mcpt-dum", NOBODY).unwrap_err();
    assert!(matches!(e, NetError::NotATap(_)), "{e}");
    assert!(tap::iface_exists("mcpt-dum"));
}

// ---- QMP against real QEMU processes -------------------------------------

/// Start time read here, independently of src/procinfo.rs.
fn start_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn roots(sb: &Sandbox) -> Roots {
    Roots {
        config_dir: sb.config_dir.clone(),
        state_dir: sb.state_dir.clone(),
        runtime_dir: sb.runtime_dir.clone(),
    }
}

/// A QEMU with no guest at all (`-machine none`: the power button does
/// nothing), its QMP socket and pidfile where the helper looks for them, and
/// a launch record naming it, so `stop`/`status` validate it.
struct PlainQemu {
    guard: ChildGuard,
    pid: u32,
    socket: PathBuf,
}

fn plain_qemu(sb: &Sandbox, name: &str) -> PlainQemu {
    let paths = VmPaths::new(&roots(sb), name);
    fs::create_dir_all(paths.vm_dir()).unwrap();
    let socket = paths.qmp_socket();
    let child = Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .arg("-pidfile")
        .arg(paths.pidfile())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn qemu-system-x86_64");
    let guard = ChildGuard::new(child);
    let pid = guard.id();
    let t0 = Instant::now();
    while !(socket.exists() && paths.pidfile().exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "QEMU made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = LaunchRecord {
        name: name.into(),
        pid: pid as i32,
        start_ticks: start_ticks(pid),
        boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
            .into(),
        // A test-run QEMU: root's.
        uid: 0,
        tap: None,
        ip: None,
        image_hash: "h".into(),
        started_unix: 0,
    };
    launch::write_record(&paths, &rec).unwrap();
    PlainQemu { guard, pid, socket }
}

fn alive(q: &mut PlainQemu) -> bool {
    q.guard.try_wait().is_none()
}

fn wait_gone(q: &mut PlainQemu, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if !alive(q) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A config whose only job here is a 1 s stop timeout.
fn stop_config(sb: &Sandbox, name: &str) {
    let www = sb.root.join("www");
    fs::create_dir_all(&www).unwrap();
    let mut cfg = serde_json::json!({
        "schema_version": 1, "name": name, "program": "/bin/true",
        "memory_mib": 128, "accel": "tcg", "network": { "ip": "10.99.0.2" },
        "volumes": [ { "source": www, "target": "/srv/www" } ],
        "direct_boot": { "kernel": "/bin/true", "initrd": "/bin/true" },
        "stop_timeout_secs": 1
    });
    if let Some(u) = vm::qemu_user() {
        cfg["qemu_user"] = u.clone().into();
        cfg["qemu_group"] = u.into();
    }
    sb.write_config(name, &cfg);
}

fn replace_with_symlink(link: &Path, target: &Path) {
    fs::remove_file(link).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn qmp_session_with_the_right_peer_works_and_a_swapped_socket_is_refused() {
    let test = "qmp_session_with_the_right_peer_works_and_a_swapped_socket_is_refused";
    if !require_root_or_skip(test) {
        return;
    }
    let sb = Sandbox::new("qmppeer");
    let mut a = plain_qemu(&sb, "a");
    let mut b = plain_qemu(&sb, "b");

    let mut s = Session::connect(&a.socket, a.pid as i32, Duration::from_secs(5))
        .expect("QMP session with A");
    let st = s.query_status().unwrap();
    println!("A: query-status {st:?}");
    drop(s);

    // A's QEMU user swaps its socket for a symlink to B's.
    replace_with_symlink(&a.socket, &b.socket);
    let e = Session::connect(&a.socket, a.pid as i32, Duration::from_secs(5))
        .err()
        .expect("connected through the symlink to B");
    let text = e.to_string();
    assert!(
        matches!(e, QmpError::WrongPeer { peer, .. } if peer == b.pid as i32),
        "{text}"
    );
    assert!(text.contains(&a.pid.to_string()), "{text}");
    assert!(alive(&mut a) && alive(&mut b));
    // B still answers, on its own socket.
    let mut sb_ = Session::connect(&b.socket, b.pid as i32, Duration::from_secs(5)).unwrap();
    sb_.query_status().unwrap();
}

#[test]
fn stop_with_a_swapped_qmp_socket_ends_only_its_own_qemu() {
    let test = "stop_with_a_swapped_qmp_socket_ends_only_its_own_qemu";
    if !require_root_or_skip(test) {
        return;
    }
    let sb = Sandbox::new("qmpswap");
    stop_config(&sb, "a");
    let mut a = plain_qemu(&sb, "a");
    let mut b = plain_qemu(&sb, "b");
    replace_with_symlink(&a.socket, &b.socket);

    let out = sb.run(None, &["stop", "a"]);
    let said = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{log}");
    println!("stop: {}\nlog: {}", said.trim(), log.trim());
    // Had stop talked to B, B would have got system_powerdown and, after the
    // 1 s stop timeout, quit.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(&mut b), "B ended by A's stop: {said}{log}");
    assert!(wait_gone(&mut a, Duration::from_secs(5)), "A still runs");
    assert!(said.contains("SIGTERM"), "{said}");
    assert!(
        log.contains("not by this VM's QEMU") && log.contains(&b.pid.to_string()),
        "{log}"
    );
    let mut s = Session::connect(&b.socket, b.pid as i32, Duration::from_secs(5)).unwrap();
    assert!(s.query_status().is_ok());
}

#[test]
fn stop_names_the_shutdown_reason_when_qemu_quits() {
    let test = "stop_names_the_shutdown_reason_when_qemu_quits";
    if !require_root_or_skip(test) {
        return;
    }
    let sb = Sandbox::new("qmpquit");
    stop_config(&sb, "a");
    let mut a = plain_qemu(&sb, "a");
    // No guest to press the power button for: after the 1 s stop timeout,
    // `quit`, which QEMU reports as SHUTDOWN reason host-qmp-quit.
    let out = sb.run(None, &["stop", "a"]);
    let said = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}{log}");
    println!("stop: {}\nlog: {}", said.trim(), log.trim());
    assert!(said.contains("quit over QMP"), "{said}");
    assert!(
        said.contains("QMP event SHUTDOWN reason host-qmp-quit"),
        "{said}"
    );
    // ...and in the log (the journal under systemd).
    assert!(log.contains("host-qmp-quit"), "{log}");
    assert!(wait_gone(&mut a, Duration::from_secs(5)));
}
