//! The systemd tier for issue 14 (readiness, health, dependsOn, credentials):
//! the shipped units plus the drop-ins nixos/lib/units.nix renders, and the
//! activation snippet nixos/lib/credentials.nix renders, under a real
//! systemd 252 in a throwaway systemd-nspawn container per test
//! (tests/common/tier.rs), with real guests: the Linux stand-in for Nanos,
//! or Nanos with MCP_NANOS_DIR. docs/systemd.md lists what each test guards.

mod common;

use std::time::{Duration, Instant};

use common::tier::{qemus, Kind, Tier, VmSpec, HELPER_INSIDE};
use serde_json::json;

fn tcp_ready(timeout: u64) -> Option<serde_json::Value> {
    Some(json!({ "tcp": 8080, "timeout_secs": timeout }))
}

// ------------------------------------------------------------- readiness

/// `systemctl start` returns only once the guest answers: the very first
/// HTTP request after it returns is served, status says `ready`.
#[test]
fn systemd_readiness_gates_start_until_guest_answers() {
    readiness_gates_start(
        "systemd_readiness_gates_start_until_guest_answers",
        Kind::Standin,
    );
}

#[test]
fn systemd_nanos_readiness_gates_start_until_guest_answers() {
    readiness_gates_start(
        "systemd_nanos_readiness_gates_start_until_guest_answers",
        Kind::Nanos,
    );
}

fn readiness_gates_start(test: &str, kind: Kind) {
    let mut tcp = VmSpec::web("web", "10.99.0.2");
    tcp.readiness = tcp_ready(60);
    let mut http = VmSpec::web("page", "10.99.0.3");
    http.readiness = Some(json!({
        "http": { "port": 8080, "path": "/index.html", "expect_status": 200 },
        "timeout_secs": 60,
    }));
    let Some(t) = Tier::new(test, kind, &[tcp.clone(), http.clone()]) else {
        return;
    };
    for v in [&tcp, &http] {
        let took = t.start_ok(v);
        // No polling: the unit is active only once the guest answered.
        let first = t.c.http_get(&v.url());
        assert_eq!(
            first.as_deref(),
            Some(v.content().as_str()),
            "{}: systemctl start returned after {took:?}, but the guest did not answer yet:\n{}",
            v.unit(),
            t.c.journal(&v.unit())
        );
        let j = t.c.journal(&v.unit());
        assert!(
            j.contains(&format!("{}: ready after", v.name)),
            "no readiness line:\n{j}"
        );
        assert_eq!(t.c.prop(&v.unit(), "ActiveState"), "active");
        let st = t.status_json(v);
        assert_eq!(st["health"], "ready", "{st}");
        // systemd's start timeout leaves room for the probe's.
        assert_eq!(t.c.prop(&v.unit(), "TimeoutStartUSec"), "1min 30s");
        // Five starts that each wait for the probe still end a loop.
        assert_eq!(t.c.prop(&v.unit(), "StartLimitIntervalUSec"), "7min 30s");
        println!(
            "{test}: {} active (guest answering) after {took:?}",
            v.unit()
        );
    }
    if kind == Kind::Standin {
        // With readiness the VM unit may open IPv4 sockets to its own IP.
        let out =
            t.c.run(&["systemd-analyze", "security", "--no-pager", &tcp.unit()]);
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(l) = text.lines().find(|l| l.contains("Overall exposure level")) {
            println!("{test}: {} (readiness drop-in): {}", tcp.unit(), l.trim());
        }
    }
    let _ = t.stop(&tcp);
    let _ = t.stop(&http);
}

/// A guest that never opens the probed port fails `systemctl start` within
/// the readiness timeout, with one line naming the probe and the last error;
/// QEMU and the TAP are gone.
#[test]
fn systemd_readiness_timeout_fails_start() {
    let test = "systemd_readiness_timeout_fails_start";
    // The server listens on 8081; the probe asks 8080.
    let mut web = VmSpec::web("web", "10.99.0.2").args(&[
        "--listen",
        "0.0.0.0:8081",
        "--file",
        "/srv/www/index.html",
    ]);
    web.readiness = tcp_ready(8);
    web.restart = "no";
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    let t0 = Instant::now();
    let mut job =
        t.c.cmd(&["timeout", "300", "systemctl", "start", &web.unit()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    // While the start waits for the probe, status (read-only) says so.
    let starting = t.c.wait_until(Duration::from_secs(8), || {
        let out = t.c.run(&[HELPER_INSIDE, "status", "web", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v[0]["health"] == "starting")
    });
    let status = job.wait().unwrap();
    let took = t0.elapsed();
    assert!(starting, "status never showed `starting` during the start");
    let j = t.c.journal(&web.unit());
    assert!(
        !status.success(),
        "systemctl start succeeded for a guest that never answers:\n{j}"
    );
    assert!(
        took >= Duration::from_secs(8) && took < Duration::from_secs(8 + 15),
        "the start failed after {took:?}, not within the 8 s timeout (+ stop)"
    );
    let lines: Vec<&str> = j.lines().filter(|l| l.contains("never answered")).collect();
    assert_eq!(lines.len(), 1, "not exactly one line:\n{j}");
    assert!(
        lines[0]
            .contains("web: not ready within 8 s: tcp 10.99.0.2:8080 never answered; last error: "),
        "{}",
        lines[0]
    );
    // The guest itself was up (its server on 8081 is what the probe missed).
    assert!(j.contains("mcp-guest: net up 10.99.0.2"), "{j}");
    assert_eq!(t.c.prop(&web.unit(), "ActiveState"), "failed");
    let settled =
        t.c.wait_until(Duration::from_secs(30), || qemus(&t).is_empty());
    assert!(settled, "QEMU left running: {:?}", qemus(&t));
    assert!(!t.c.text(&["ip", "-o", "link"]).contains("mcp-web"));
    println!("{test}: systemctl start failed after {took:?} (timeout 8 s)");
}

// ---------------------------------------------------------------- health

/// A guest whose server stops answering (net-probe's GET /close) is seen
/// `unhealthy` by status, restarted after `failures` probes, the journal of
/// the VM says why, and it serves again; the timer is back for the new run.
#[test]
fn systemd_health_restarts_guest_that_stops_answering() {
    health_restarts(
        "systemd_health_restarts_guest_that_stops_answering",
        Kind::Standin,
    );
}

#[test]
fn systemd_nanos_health_restarts_guest_that_stops_answering() {
    health_restarts(
        "systemd_nanos_health_restarts_guest_that_stops_answering",
        Kind::Nanos,
    );
}

fn health_restarts(test: &str, kind: Kind) {
    let mut web = VmSpec::probe("web", "10.99.0.2");
    web.readiness = Some(json!({ "http": { "port": 8080 }, "timeout_secs": 60 }));
    web.health = Some((2, 2, 1));
    let Some(t) = Tier::new(test, kind, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    assert_eq!(t.c.prop(&web.health_timer(), "ActiveState"), "active");
    let pid = t.main_pid(&web);
    // Healthy probes change nothing.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(t.main_pid(&web), pid, "restarted while healthy");
    let st = t.status_json(&web);
    assert_eq!(st["health"], "ready", "{st}");
    assert_eq!(st["health_failures"], 0, "{st}");

    let url = format!("{}close", web.url());
    assert_eq!(t.c.http_get(&url).as_deref(), Some("closing\n"));
    let t0 = Instant::now();
    // status (read-only) sees it unhealthy before the restart.
    let mut seen_unhealthy = None;
    let restarted = t.c.wait_until(Duration::from_secs(60), || {
        if seen_unhealthy.is_none() {
            let st = t.status_json(&web);
            if st["health"] == "unhealthy" {
                seen_unhealthy = Some(st);
            }
        }
        let now = t.main_pid(&web);
        now != pid && now != 0 && t.c.prop(&web.unit(), "ActiveState") == "active"
    });
    let j = t.c.journal(&web.unit());
    assert!(
        restarted,
        "not restarted within 60 s:\n{j}\n{}",
        t.c.journal(&web.health_unit())
    );
    let took = t0.elapsed();
    let st = seen_unhealthy.expect("status never showed `unhealthy`");
    assert_eq!(st["health_failures"], 1, "{st}");
    // The first failure races the close (refused, reset or timed out).
    let e = st["last_probe_error"].as_str().unwrap_or("");
    assert!(
        ["refused", "reset", "timed out"]
            .iter()
            .any(|w| e.contains(w)),
        "{st}"
    );
    // The reason, in the VM's own journal (and the probe unit's).
    let why = |j: &str| {
        j.lines().any(|l| {
            l.contains("web: unhealthy: 2 consecutive health probes failed (last: http://10.99.0.2:8080/ (expecting 200): ")
                && l.ends_with("); restarting mcp-unikernel@web.service")
        })
    };
    assert!(why(&j), "the VM's journal does not say why:\n{j}");
    assert!(why(&t.c.journal(&web.health_unit())));
    // Serving again, ready, counted from zero, probed again.
    assert_eq!(
        t.c.http_get(&web.url()).as_deref(),
        Some("net-probe ready\n")
    );
    let st = t.status_json(&web);
    assert_eq!(st["health"], "ready", "{st}");
    assert_eq!(t.c.prop(&web.health_timer(), "ActiveState"), "active");
    assert!(
        t.c.wait_until(Duration::from_secs(10), || t.status_json(&web)
            ["health_failures"]
            == 0),
        "the new QEMU is not probed"
    );
    println!("{test}: server closed -> VM restarted and active again after {took:?}");

    // No resident helper between probes (a probe in progress lives < 1 s).
    let ps = t.c.text(&["ps", "-eo", "etimes=,comm="]);
    let resident: Vec<&str> = ps
        .lines()
        .filter(|l| l.ends_with(" mcp-unikernel"))
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                >= Some(3)
        })
        .collect();
    assert!(resident.is_empty(), "{resident:?}");
    // The probes ran without a warning (QEMU's own dir is not theirs to read).
    let hj = t.c.journal(&web.health_unit());
    assert!(!hj.contains("WARN QEMU"), "{hj}");
    let _ = t.stop(&web);
    assert_eq!(t.c.prop(&web.health_timer(), "ActiveState"), "inactive");
    if kind == Kind::Standin {
        health_exposure(&t, test, &web);
    }
}

/// `systemd-analyze security` of the probe unit, against the figure
/// docs/systemd.md records (lower is better; never worse).
const RECORDED_HEALTH_EXPOSURE: f64 = 1.9;

fn health_exposure(t: &Tier, test: &str, web: &VmSpec) {
    let out = t.c.run(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        &web.health_unit(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: f64 = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {text}"));
    println!("{test}: {}: exposure {v:.1}", web.health_unit());
    assert!(
        v <= RECORDED_HEALTH_EXPOSURE,
        "exposure {v} worse than the recorded {RECORDED_HEALTH_EXPOSURE}:\n{text}"
    );
    let docs = std::fs::read_to_string(
        std::path::Path::new(common::container::ROOT).join("docs/systemd.md"),
    )
    .unwrap();
    let line = format!("`mcp-unikernel-health@.service`: exposure {RECORDED_HEALTH_EXPOSURE:.1}");
    assert!(
        docs.contains(&line),
        "docs/systemd.md does not record {line:?}"
    );
}

// -------------------------------------------------------------- dependsOn

/// B dependsOn A (A has readiness): starting B starts A first, and B's start
/// begins only after A answered.
#[test]
fn systemd_depends_on_orders_two_guests() {
    let test = "systemd_depends_on_orders_two_guests";
    let mut a = VmSpec::web("a", "10.99.0.2");
    a.readiness = tcp_ready(60);
    let mut b = VmSpec::web("b", "10.99.0.3");
    b.depends_on = vec!["a"];
    let Some(t) = Tier::new(test, Kind::Standin, &[a.clone(), b.clone()]) else {
        return;
    };
    t.start_ok(&b);
    assert_eq!(t.c.prop(&a.unit(), "ActiveState"), "active");
    let a_ready = t.mono(&a.unit(), "ActiveEnterTimestampMonotonic");
    let a_began = t.mono(&a.unit(), "InactiveExitTimestampMonotonic");
    let b_began = t.mono(&b.unit(), "InactiveExitTimestampMonotonic");
    assert!(
        a_began > 0 && a_ready > a_began && b_began >= a_ready,
        "B began at {b_began} µs, A began {a_began}, answered at {a_ready}:\n{}",
        t.c.journal(&a.unit())
    );
    assert!(t.c.journal(&a.unit()).contains("a: ready after"));
    t.wait_http(&b, &b.url(), &b.content());
    println!(
        "{test}: A answered {:.2} s after it began; B began {:.3} s after that",
        (a_ready - a_began) as f64 / 1e6,
        (b_began - a_ready) as f64 / 1e6
    );
    // Requires=: stopping A stops B.
    let _ = t.stop(&a);
    assert_eq!(t.c.prop(&b.unit(), "ActiveState"), "inactive");
}

// ------------------------------------------------------------ credentials

const SECRET_A: &str = "mcp-secret-A-7f3c9e1d2b4a6f80";
const SECRET_B: &str = "mcp-secret-B-0a1b2c3d4e5f6a7b";

fn with_secret(name: &'static str, ip: &'static str) -> VmSpec {
    let mut v =
        VmSpec::web(name, ip).args(&["--listen", "0.0.0.0:8080", "--file", "/run/secrets/tls.key"]);
    v.credentials = vec![("tls.key", format!("/etc/host-secrets/{name}-tls.key"))];
    v
}

/// The credential reaches the guest (served by the example server from the
/// credentials dir) and is nowhere else: not in the JSON, the drop-ins, the
/// journal, or any file outside the VM's own state dir; where it is, only
/// root and the VM's group can read it.
#[test]
fn systemd_credential_reaches_guest_and_nowhere_else() {
    credential_reaches_guest(
        "systemd_credential_reaches_guest_and_nowhere_else",
        Kind::Standin,
    );
}

#[test]
fn systemd_nanos_credential_reaches_guest_and_nowhere_else() {
    credential_reaches_guest(
        "systemd_nanos_credential_reaches_guest_and_nowhere_else",
        Kind::Nanos,
    );
}

fn credential_reaches_guest(test: &str, kind: Kind) {
    let web = with_secret("web", "10.99.0.2");
    let Some(t) = Tier::new(test, kind, std::slice::from_ref(&web)) else {
        return;
    };
    t.c.write("/etc/host-secrets/web-tls.key", SECRET_A, 0o600);
    t.start_ok(&web);
    t.wait_http(&web, &web.url(), SECRET_A);
    let build = t.c.journal(&web.build_unit());
    assert!(build.contains("image"), "{build}");
    // Its credentials dir went away with the build unit.
    let left = t.c.text(&["find", "/run/credentials", "-mindepth", "1"]);
    assert!(
        !left.contains("mcp-unikernel"),
        "left in /run/credentials:\n{left}"
    );
    // Nowhere in the journal (every field of every entry).
    assert!(
        !t.journal_export().contains(SECRET_A),
        "the secret is in the journal"
    );
    // Names only in the JSON; nothing of it in the drop-ins.
    let jtext = t.c.ok(&["cat", "/etc/mcp-unikernel/web.json"]);
    assert!(
        jtext.contains("\"tls.key\"") && !jtext.contains(SECRET_A),
        "{jtext}"
    );
    assert!(
        !jtext.contains("/etc/host-secrets"),
        "host path in the JSON: {jtext}"
    );
    // Every file holding it: the host file, and the VM's own state dir only.
    let holders = t.c.text(&[
        "grep",
        "-rlF",
        "--devices=skip",
        SECRET_A,
        "/",
        "--exclude-dir=proc",
        "--exclude-dir=sys",
        "--exclude-dir=dev",
    ]);
    let mut in_state = 0;
    for f in holders.lines() {
        if f == "/etc/host-secrets/web-tls.key" {
            continue;
        }
        assert!(
            f.starts_with("/var/lib/mcp-unikernel/web/"),
            "the secret is in {f} (outside the VM's state):\n{holders}"
        );
        in_state += 1;
        // root-owned, readable by the VM's group at most, never by others.
        let st = t.c.ok(&["stat", "-c", "%U %G %a", f]);
        let mut it = st.split_whitespace();
        let (u, g, mode) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(u, "root", "{f}: {st}");
        assert_eq!(g, web.user(), "{f}: {st}");
        assert_eq!(mode & 0o027, 0, "{f} is {st}");
    }
    assert!(in_state >= 1, "the secret is not in the image?\n{holders}");
    // The staged tree and image dirs are not open to others.
    for d in [
        "/var/lib/mcp-unikernel/web/image",
        "/var/lib/mcp-unikernel/web/staging",
    ] {
        let st = t.c.ok(&["stat", "-c", "%a", d]);
        let mode = u32::from_str_radix(st.trim(), 8).unwrap();
        assert_eq!(mode & 0o007, 0, "{d} is {st}");
    }
    println!(
        "{test}: secret served by the guest; held by {in_state} file(s) in its state dir only"
    );
    let _ = t.stop(&web);
}

/// A missing credential file fails the start with one line naming it.
#[test]
fn systemd_missing_credential_fails_start_naming_it() {
    let test = "systemd_missing_credential_fails_start_naming_it";
    let mut web = with_secret("web", "10.99.0.2");
    web.credentials = vec![("tls.key", "/etc/host-secrets/not-there.key".into())];
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    let out = t.start(&web);
    assert!(!out.status.success(), "started without its credential");
    let j = t.c.journal(&web.build_unit());
    let lines: Vec<&str> = j.lines().filter(|l| l.contains("not-there.key")).collect();
    assert_eq!(
        lines,
        ["error: credential tls.key: its host file /etc/host-secrets/not-there.key is missing (LoadCredential= had nothing to load)"],
        "{j}"
    );
    assert!(qemus(&t).is_empty());
}

/// Changing one VM's credential file: the activation snippet (what
/// nixos-rebuild switch runs) lists that VM only; restarting what it lists,
/// as switch-to-configuration does, rebuilds it with the new content and
/// leaves the other VM's QEMU alone. Unchanged files list nothing.
#[test]
fn systemd_changed_credential_restarts_only_that_vm() {
    let test = "systemd_changed_credential_restarts_only_that_vm";
    let a = with_secret("a", "10.99.0.2");
    let b = with_secret("b", "10.99.0.3");
    let Some(t) = Tier::new(test, Kind::Standin, &[a.clone(), b.clone()]) else {
        return;
    };
    t.c.write("/etc/host-secrets/a-tls.key", SECRET_A, 0o600);
    t.c.write("/etc/host-secrets/b-tls.key", SECRET_B, 0o600);
    t.start_ok(&a);
    t.start_ok(&b);
    t.wait_http(&a, &a.url(), SECRET_A);
    t.wait_http(&b, &b.url(), SECRET_B);
    let (pid_a, pid_b) = (t.main_pid(&a), t.main_pid(&b));
    t.c.write("/run/mcp-activate.sh", &t.activation_script, 0o755);
    let activate = || -> Vec<String> {
        let _ = std::fs::remove_file(t.c.path("/run/nixos/activation-restart-list"));
        let out =
            t.c.run(&["env", "NIXOS_ACTION=switch", "bash", "/run/mcp-activate.sh"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !err.contains(SECRET_A) && !err.contains("new-secret"),
            "{err}"
        );
        t.c.text(&["cat", "/run/nixos/activation-restart-list"])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Nothing changed (also: sops-nix rewrites files with the same content).
    t.c.write("/etc/host-secrets/a-tls.key", SECRET_A, 0o600);
    assert_eq!(activate(), Vec::<String>::new());

    let new = "mcp-new-secret-A-5566778899aabbcc";
    t.c.write("/etc/host-secrets/a-tls.key", new, 0o600);
    // Baked at build time: the running guest still serves the old one.
    assert_eq!(t.c.http_get(&a.url()).as_deref(), Some(SECRET_A));
    let list = activate();
    assert_eq!(list, [a.unit()], "the activation snippet listed {list:?}");
    // What switch-to-configuration does with the list.
    let t0 = Instant::now();
    for unit in &list {
        t.c.ok(&["systemctl", "restart", unit]);
    }
    t.wait_http(&a, &a.url(), new);
    println!(
        "{test}: credential changed -> serving the new one {:?} after the restart began",
        t0.elapsed()
    );
    assert_ne!(t.main_pid(&a), pid_a);
    assert_eq!(t.main_pid(&b), pid_b, "the other VM was restarted");
    assert_eq!(t.c.http_get(&b.url()).as_deref(), Some(SECRET_B));
    assert!(t.c.journal(&a.build_unit()).contains("built"));
    // And again nothing to do.
    assert_eq!(activate(), Vec::<String>::new());
    // A VM that is not running is never listed (it rebuilds when it starts).
    let _ = t.stop(&b);
    t.c.write(
        "/etc/host-secrets/b-tls.key",
        "changed while stopped",
        0o600,
    );
    assert_eq!(activate(), Vec::<String>::new());
    let _ = t.c.run(&[HELPER_INSIDE, "status"]);
    let _ = t.stop(&a);
}

// ------------------------------------------------------------- units.nix

/// nixos/lib/units.nix and credentials.nix refuse bad issue-14 values,
/// naming them (no container).
#[test]
fn systemd_ready_nix_libs_reject_bad_values() {
    let test = "systemd_ready_nix_libs_reject_bad_values";
    if std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_err()
    {
        common::netns::skip(test, "nix-instantiate not found");
        return;
    }
    let lib = |f: &str| {
        std::path::Path::new(common::container::ROOT)
            .join("nixos/lib")
            .join(f)
            .display()
            .to_string()
    };
    let eval = |expr: String| {
        std::process::Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--expr", &expr])
            .env(
                "NIX_CONFIG",
                "substituters =\nexperimental-features = nix-command flakes\nbuild-users-group =",
            )
            .output()
            .unwrap()
    };
    let units = |args: &str| format!("import {} {{ name = \"web\"; {args} }}", lib("units.nix"));
    let creds = |args: &str| format!("import {} {{ {args} }}", lib("credentials.nix"));
    for (expr, named) in [
        (
            units(r#"readiness = { timeout = 5; address = "10.99.0.2"; };"#),
            "helper",
        ),
        (
            units(r#"helper = "/h"; readiness = { timeout = 5; address = "10.99.0.300"; };"#),
            "\"10.99.0.300\"",
        ),
        (
            units(r#"helper = "/h"; readiness = { timeout = 0; address = "10.99.0.2"; };"#),
            "readiness.timeout",
        ),
        (
            units(r#"health = { interval = 5; timeout = 1; };"#),
            "health (needs readiness)",
        ),
        (units(r#"dependsOn = [ "web" ];"#), "the unikernel itself"),
        (units(r#"dependsOn = [ "Bad" ];"#), "\"Bad\""),
        (units(r#"credentials = { "a:b" = "/x"; };"#), "\"a:b\""),
        (units(r#"credentials = { k = "/x y"; };"#), "\"/x y\""),
        (units(r#"credentials = { k = "x"; };"#), "credentials.k"),
        (creds(r#"helper = "h"; unikernels = { };"#), "helper"),
        (
            creds(r#"helper = "/h"; unikernels = { web = { "a/b" = "/x"; }; };"#),
            "\"a/b\"",
        ),
    ] {
        let out = eval(expr.clone());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expr} accepted");
        assert!(
            err.contains(named),
            "{expr}: error does not name {named}: {err}"
        );
    }
    // Without the new arguments nothing changes (the exact text of before).
    let out = eval(units("stopTimeout = 10;"));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["vmDropin"],
        "[Unit]\n\n[Service]\nRestart=on-failure\nTimeoutStopSec=55\n"
    );
    assert_eq!(v["healthDropin"], serde_json::Value::Null);
    let out = eval(creds(r#"helper = "/h"; unikernels = { web = { }; };"#));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"activationScript":""}"#
    );
}
