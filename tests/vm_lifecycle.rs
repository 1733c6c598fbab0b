//! A real guest through the real helper: start → HTTP at its bridge IP →
//! status → refuse a second start → stop → cleanup; the cached-image path and
//! rebuild on a one-byte change; kill -9 of QEMU then start again.
//!
//! The guest is the **Linux stand-in for Nanos** (Debian cloud kernel + busybox
//! initramfs, direct kernel boot, see tests/guest/): no Nanos kernel exists in
//! CI. The helper, TAP, bridge, QEMU, QMP and PID paths are the real ones.
//! With MCP_NANOS_DIR set, tests/nanos_e2e.rs runs the same steps on Nanos.

mod common;

use std::fs;
use std::process::Child;
use std::time::{Duration, Instant};

use common::netns::{ChildGuard, NetNs};
use common::vm::{self, Guest, Sandbox};

const BOOT_LIMIT: Duration = Duration::from_secs(90);

struct Running {
    guard: ChildGuard,
    log: std::path::PathBuf,
}

fn spawn_start(sb: &Sandbox, ns: &NetNs, name: &str) -> Running {
    let log = sb.root.join(format!(
        "{name}-{}.log",
        Instant::now().elapsed().as_nanos()
    ));
    let f = fs::File::create(&log).unwrap();
    let child: Child = sb
        .cmd(Some(ns), &["start", name])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .expect("spawn start");
    Running {
        guard: ChildGuard::new(child),
        log,
    }
}

fn log_of(r: &Running) -> String {
    fs::read_to_string(&r.log).unwrap_or_default()
}

fn setup(test: &str, nanos: bool) -> Option<(Sandbox, NetNs, Guest)> {
    vm::vm_setup(test, nanos)
}

fn wait_exit(guard: &mut ChildGuard, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = guard.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn standin_guest_serves_volume_and_stops_cleanly() {
    serves_volume_and_stops_cleanly("standin_guest_serves_volume_and_stops_cleanly", false);
}

/// The acceptance on a real Nanos guest built by real `ops`.
#[test]
fn nanos_guest_serves_volume_and_stops_cleanly() {
    serves_volume_and_stops_cleanly("nanos_guest_serves_volume_and_stops_cleanly", true);
}

fn serves_volume_and_stops_cleanly(test: &str, nanos: bool) {
    let Some((sb, ns, guest)) = setup(test, nanos) else {
        return;
    };
    let limit = if nanos {
        Duration::from_secs(30)
    } else {
        BOOT_LIMIT
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "hello from the volume v1\n").unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));

    let mut r = spawn_start(&sb, &ns, "web");
    let took = vm::wait_http(
        &ns,
        "http://10.99.0.2:8080/",
        "hello from the volume v1\n",
        limit,
    );
    assert!(
        took.is_some(),
        "no HTTP answer from the {} guest; log:\n{}",
        guest.label(),
        log_of(&r)
    );
    println!(
        "{} guest served its volume file {:?} after start (accel {})",
        guest.label(),
        took.unwrap(),
        vm::accel()
    );

    // status: running, with QEMU's PID (the helper exec'd QEMU in place).
    let st = sb.status_json(Some(&ns), "web");
    assert_eq!(st["running"], true, "{st}");
    let pid = r.guard.id() as i32;
    assert_eq!(st["pid"], pid, "{st}");
    assert_eq!(st["ip"], "10.99.0.2");
    assert_eq!(st["tap"], "mcp-web");
    // The TAP is an isolated port of the bridge, up (set over rtnetlink).
    let sys = |f: &str| {
        ns.run(&["cat", &format!("/sys/class/net/mcp-web/{f}")])
            .trim()
            .to_owned()
    };
    assert_eq!(
        sys("brport/isolated"),
        "1",
        "TAP not an isolated bridge port"
    );
    assert!(ns
        .run(&["readlink", "/sys/class/net/mcp-web/master"])
        .trim()
        .ends_with("/mcp-br0"));
    assert_eq!(
        u32::from_str_radix(sys("flags").trim_start_matches("0x"), 16).unwrap() & 1,
        1,
        "TAP not up"
    );
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().contains("qemu-system"),
        "main PID is {exe:?}"
    );

    // Privileges: QEMU is not root, has no effective capabilities, seccomp on.
    let uid = vm::proc_status(pid, "Uid").unwrap();
    assert!(
        !uid.starts_with("0\t") && !uid.starts_with("0 "),
        "QEMU uid: {uid}"
    );
    assert_eq!(vm::proc_status(pid, "CapEff").unwrap(), "0000000000000000");
    assert_eq!(vm::proc_status(pid, "Seccomp").unwrap(), "2");
    for p in [sb.runtime_dir.join("web"), sb.state_dir.join("web")] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&p).unwrap().permissions());
        assert_eq!(
            mode & 0o004,
            0,
            "{} readable by others ({mode:o})",
            p.display()
        );
    }

    // A second start is refused while the first QEMU runs; still one QEMU.
    let second = sb.run(Some(&ns), &["start", "web"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(vm::http_get(&ns, "http://10.99.0.2:8080/").is_some());

    // stop: through the guest's power-down (or quit), reported which.
    let out = sb.run(Some(&ns), &["stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    if nanos {
        // Nanos handles the ACPI power button.
        assert!(said.contains("powered down"), "{said}");
    } else {
        assert!(
            said.contains("powered down") || said.contains("quit"),
            "{said}"
        );
    }
    // It names the QMP event that ended QEMU: SHUTDOWN with its reason
    // (guest-shutdown: the guest powered off; host-qmp-quit: quit), or, for a
    // guest that leaves through isa-debug-exit, POWERDOWN and no SHUTDOWN.
    assert!(
        said.contains("; QMP event SHUTDOWN reason guest-shutdown")
            || said.contains("; QMP event SHUTDOWN reason host-qmp-quit")
            || said.contains("; QMP event POWERDOWN, then QEMU exited without a SHUTDOWN event"),
        "stop did not name the QMP event: {said}"
    );
    println!("stop: {}", said.trim());
    let status =
        wait_exit(&mut r.guard, Duration::from_secs(30)).expect("QEMU still running after stop");
    assert!(
        vm::clean_qemu_exit(status),
        "QEMU exit status {status:?} (clean: 0, or 1/31 through isa-debug-exit)"
    );

    let out = sb.run(Some(&ns), &["cleanup", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!vm::links(&ns).contains("mcp-web"), "TAP left behind");
    let again = sb.run(Some(&ns), &["cleanup", "web"]);
    assert!(
        again.status.success(),
        "cleanup twice: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let st = sb.status_json(Some(&ns), "web");
    assert_eq!(st["running"], false);

    // Nothing changed: no rebuild. One byte changed: rebuild, new contents.
    let mut r2 = spawn_start(&sb, &ns, "web");
    assert!(
        vm::wait_http(
            &ns,
            "http://10.99.0.2:8080/",
            "hello from the volume v1\n",
            limit
        )
        .is_some(),
        "{}",
        log_of(&r2)
    );
    assert!(
        log_of(&r2).contains("reusing the last good image"),
        "{}",
        log_of(&r2)
    );
    assert!(
        !log_of(&r2).contains("ops build done"),
        "ops build ran again: {}",
        log_of(&r2)
    );
    sb.run(Some(&ns), &["stop", "web"]);
    wait_exit(&mut r2.guard, Duration::from_secs(30)).expect("second run did not stop");
    sb.run(Some(&ns), &["cleanup", "web"]);

    fs::write(vol.join("index.html"), "hello from the volume v2\n").unwrap();
    let mut r3 = spawn_start(&sb, &ns, "web");
    assert!(
        vm::wait_http(
            &ns,
            "http://10.99.0.2:8080/",
            "hello from the volume v2\n",
            limit
        )
        .is_some(),
        "{}",
        log_of(&r3)
    );
    assert!(log_of(&r3).contains("image built"), "{}", log_of(&r3));
    sb.run(Some(&ns), &["stop", "web"]);
    wait_exit(&mut r3.guard, Duration::from_secs(30)).expect("third run did not stop");
    sb.run(Some(&ns), &["cleanup", "web"]);
}

#[test]
fn kill_9_then_start_serves_again_without_tap_busy() {
    let test = "kill_9_then_start_serves_again_without_tap_busy";
    let Some((sb, ns, guest)) = setup(test, false) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "still here\n").unwrap();
    sb.write_config("crashy", &guest.config("crashy", "10.99.0.3", &vol));

    let mut r = spawn_start(&sb, &ns, "crashy");
    assert!(
        vm::wait_http(&ns, "http://10.99.0.3:8080/", "still here\n", BOOT_LIMIT).is_some(),
        "{}",
        log_of(&r)
    );
    // kill -9 the QEMU we started (our own child, by PID).
    r.guard.kill_now();
    assert!(wait_exit(&mut r.guard, Duration::from_secs(10)).is_some());
    assert!(
        vm::links(&ns).contains("mcp-crashy"),
        "the TAP should be left behind by kill -9"
    );

    // No cleanup in between, as after a crash: start must cope.
    let mut r2 = spawn_start(&sb, &ns, "crashy");
    assert!(
        vm::wait_http(&ns, "http://10.99.0.3:8080/", "still here\n", BOOT_LIMIT).is_some(),
        "did not serve again after kill -9; log:\n{}",
        log_of(&r2)
    );
    let log = log_of(&r2);
    assert!(
        !log.contains("is busy") && !log.contains("resource busy"),
        "{log}"
    );
    sb.run(Some(&ns), &["stop", "crashy"]);
    wait_exit(&mut r2.guard, Duration::from_secs(30)).expect("did not stop");
    sb.run(Some(&ns), &["cleanup", "crashy"]);
    assert!(!vm::links(&ns).contains("mcp-crashy"));
}

#[test]
fn missing_bridge_is_a_clear_error_with_no_side_effects() {
    let test = "missing_bridge_is_a_clear_error_with_no_side_effects";
    let Some((sb, _ns, guest)) = setup(test, false) else {
        return;
    };
    let bare = NetNs::new("nobr");
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    let before = vm::links(&bare);
    let out = sb.run(Some(&bare), &["start", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bridge") && err.contains("mcp-br0") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(vm::links(&bare), before);
    assert!(!sb.state_dir.exists(), "state created despite the error");
}

#[test]
fn user_mode_port_forward_reaches_the_guest() {
    let test = "user_mode_port_forward_reaches_the_guest";
    let Some((sb, _bridge_ns, guest)) = setup(test, false) else {
        return;
    };
    // No bridge, no TAP: QEMU's user-mode network with one port forward, in a
    // namespace of its own so the forward listens on that namespace's loopback.
    let ns = NetNs::new("usernet");
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "via hostfwd\n").unwrap();
    let mut cfg = guest.config("fwd", "10.99.0.2", &vol);
    cfg["network"] = serde_json::json!({
        "mode": "user",
        "ports": [ { "host": 18080, "guest": 8080 } ]
    });
    sb.write_config("fwd", &cfg);
    let before = vm::links(&ns);
    let mut r = spawn_start(&sb, &ns, "fwd");
    assert!(
        vm::wait_http(&ns, "http://127.0.0.1:18080/", "via hostfwd\n", BOOT_LIMIT).is_some(),
        "no answer through the port forward; log:\n{}",
        log_of(&r)
    );
    assert_eq!(vm::links(&ns), before, "user mode created an interface");
    let st = sb.status_json(Some(&ns), "fwd");
    assert_eq!(st["running"], true, "{st}");
    assert!(st["tap"].is_null(), "{st}");
    sb.run(Some(&ns), &["stop", "fwd"]);
    wait_exit(&mut r.guard, Duration::from_secs(30)).expect("did not stop");
    let out = sb.run(Some(&ns), &["cleanup", "fwd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
