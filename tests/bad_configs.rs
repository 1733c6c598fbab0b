//! Bad input: every bad config makes `start` (and `check-config`) exit
//! non-zero with one line naming the field and the value, and leaves no TAP,
//! dir or file behind. Runs inside a namespace with the bridge present, so a
//! TAP would be created if validation let the config through.

mod common;

use std::fs;
use std::path::Path;

use common::vm::{self, Sandbox};
use serde_json::{json, Value};

struct Case {
    what: &'static str,
    /// The name passed to `start` (usually the config's own name).
    name: &'static str,
    edit: fn(&mut Value, &Path),
    field: &'static str,
    value: &'static str,
}

fn good(dir: &Path) -> Value {
    json!({
        "schema_version": 1,
        "name": "web",
        "program": "/bin/true",
        "network": { "ip": "10.99.0.2" },
        "volumes": [ { "source": dir.join("vol"), "target": "/srv/www" } ],
        "accel": "tcg"
    })
}

fn cases() -> Vec<Case> {
    vec![
        // The guest's resolver and time source: only the gateway is reachable.
        Case {
            what: "nameserver other than the gateway (unreachable from the bridge)",
            name: "web",
            edit: |c, _| c["network"]["nameservers"] = json!(["8.8.8.8"]),
            field: "network.nameservers[0]",
            value: "8.8.8.8",
        },
        Case {
            what: "NTP server other than the gateway",
            name: "web",
            edit: |c, _| c["network"]["ntp_servers"] = json!(["10.99.0.1", "10.99.0.9"]),
            field: "network.ntp_servers[1]",
            value: "10.99.0.9",
        },
        Case {
            what: "ntp klib without NTP servers (would use pool.ntp.org)",
            name: "web",
            edit: |c, _| c["klibs"] = json!(["tls", "ntp"]),
            field: "klibs[1]",
            value: "ntp",
        },
        Case {
            what: "nameserver for a user-mode guest (restrict=on reaches nothing)",
            name: "web",
            edit: |c, _| {
                c["network"] = json!({"mode": "user", "nameservers": ["10.0.2.3"]});
            },
            field: "network.nameservers[0]",
            value: "10.0.2.3",
        },
        Case {
            what: "malformed IP",
            name: "web",
            edit: |c, _| c["network"]["ip"] = "10.99.0.300".into(),
            field: "network.ip",
            value: "10.99.0.300",
        },
        Case {
            what: "IP equal to the gateway",
            name: "web",
            edit: |c, _| c["network"]["ip"] = "10.99.0.1".into(),
            field: "network.ip",
            value: "10.99.0.1",
        },
        Case {
            what: "IP outside the subnet",
            name: "web",
            edit: |c, _| c["network"]["ip"] = "10.98.0.2".into(),
            field: "network.ip",
            value: "10.98.0.2",
        },
        Case {
            what: "network address",
            name: "web",
            edit: |c, _| c["network"]["ip"] = "10.99.0.0".into(),
            field: "network.ip",
            value: "10.99.0.0",
        },
        Case {
            what: "broadcast address",
            name: "web",
            edit: |c, _| c["network"]["ip"] = "10.99.0.255".into(),
            field: "network.ip",
            value: "10.99.0.255",
        },
        Case {
            what: "duplicate IP with another config",
            name: "web",
            edit: |_, d| {
                let mut other = good(d);
                other["name"] = "other".into();
                fs::write(d.join("etc/other.json"), other.to_string()).unwrap();
            },
            field: "network.ip",
            value: "10.99.0.2",
        },
        Case {
            what: "missing program",
            name: "web",
            edit: |c, _| {
                c.as_object_mut().unwrap().remove("program");
            },
            field: "program",
            value: "null",
        },
        Case {
            what: "program not an ELF",
            name: "web",
            edit: |c, d| {
                fs::write(d.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
                c["program"] = d.join("script.sh").display().to_string().into();
            },
            field: "program",
            value: "script.sh",
        },
        Case {
            what: "program does not exist",
            name: "web",
            edit: |c, _| c["program"] = "/nonexistent/server".into(),
            field: "program",
            value: "/nonexistent/server",
        },
        Case {
            what: "relative program",
            name: "web",
            edit: |c, _| c["program"] = "bin/server".into(),
            field: "program",
            value: "bin/server",
        },
        Case {
            what: "relative volume target",
            name: "web",
            edit: |c, _| c["volumes"][0]["target"] = "srv/www".into(),
            field: "volumes[0].target",
            value: "srv/www",
        },
        Case {
            what: "`..` in volume target",
            name: "web",
            edit: |c, _| c["volumes"][0]["target"] = "/srv/../etc".into(),
            field: "volumes[0].target",
            value: "/srv/../etc",
        },
        Case {
            what: "missing volume source",
            name: "web",
            edit: |c, _| c["volumes"][0]["source"] = "/nonexistent/vol".into(),
            field: "volumes[0].source",
            value: "/nonexistent/vol",
        },
        Case {
            what: "volume source is a file",
            name: "web",
            edit: |c, _| c["volumes"][0]["source"] = "/bin/true".into(),
            field: "volumes[0].source",
            value: "/bin/true",
        },
        Case {
            what: "name with /",
            name: "web",
            edit: |c, _| c["name"] = "we/b".into(),
            field: "name",
            value: "we/b",
        },
        Case {
            what: "name argument with /",
            name: "a/b",
            edit: |_, _| {},
            field: "name (argument)",
            value: "a/b",
        },
        Case {
            what: "name too long",
            name: "web",
            edit: |c, _| c["name"] = "x".repeat(65).into(),
            field: "name",
            value: "xxxxxxxxxxxxxxxx",
        },
        Case {
            what: "name does not match the file",
            name: "web",
            edit: |c, _| c["name"] = "api".into(),
            field: "name",
            value: "api",
        },
        Case {
            what: "zero memory",
            name: "web",
            edit: |c, _| c["memory_mib"] = 0.into(),
            field: "memory_mib",
            value: "0",
        },
        Case {
            what: "zero vcpus",
            name: "web",
            edit: |c, _| c["vcpus"] = 0.into(),
            field: "vcpus",
            value: "0",
        },
        Case {
            what: "unknown field",
            name: "web",
            edit: |c, _| c["memroy_mib"] = 64.into(),
            field: "memroy_mib",
            value: "memroy_mib",
        },
        Case {
            what: "unknown nested field",
            name: "web",
            edit: |c, _| c["network"]["adress"] = "x".into(),
            field: "network",
            value: "adress",
        },
        Case {
            what: "wrong type",
            name: "web",
            edit: |c, _| c["vcpus"] = "two".into(),
            field: "vcpus",
            value: "two",
        },
        Case {
            what: "unknown accel",
            name: "web",
            edit: |c, _| c["accel"] = "hvf".into(),
            field: "accel",
            value: "hvf",
        },
        Case {
            what: "unknown network mode",
            name: "web",
            edit: |c, _| c["network"]["mode"] = "macvtap".into(),
            field: "network.mode",
            value: "macvtap",
        },
        Case {
            what: "multicast MAC",
            name: "web",
            edit: |c, _| c["network"]["mac"] = "01:00:5e:00:00:01".into(),
            field: "network.mac",
            value: "01:00:5e:00:00:01",
        },
        Case {
            what: "TAP name too long",
            name: "web",
            edit: |c, _| c["network"]["tap"] = "tap-name-too-long".into(),
            field: "network.tap",
            value: "tap-name-too-long",
        },
        Case {
            what: "bridge-only IP in user mode",
            name: "web",
            edit: |c, _| c["network"]["mode"] = "user".into(),
            field: "network.ip",
            value: "10.99.0.2",
        },
        Case {
            what: "port forwards in bridge mode",
            name: "web",
            edit: |c, _| c["network"]["ports"] = json!([{"host": 8080, "guest": 80}]),
            field: "network.ports",
            value: "1 forward",
        },
        Case {
            what: "bad env name",
            name: "web",
            edit: |c, _| c["env"] = json!({"BAD-NAME": "1"}),
            field: "env.BAD-NAME",
            value: "BAD-NAME",
        },
        Case {
            what: "future schema version",
            name: "web",
            edit: |c, _| c["schema_version"] = 2.into(),
            field: "schema_version",
            value: "2",
        },
        Case {
            what: "ops_extra overrides Dirs",
            name: "web",
            edit: |c, _| c["ops_extra"] = json!({"Dirs": ["/etc"]}),
            field: "ops_extra.Dirs",
            value: "/etc",
        },
        Case {
            what: "QEMU option smuggled in the TAP name",
            name: "web",
            edit: |c, _| c["network"]["tap"] = "a,vhost=on".into(),
            field: "network.tap",
            value: "a,vhost=on",
        },
        Case {
            what: "bridge name systemd would escape",
            name: "web",
            edit: |c, _| c["network"]["bridge"] = "br@mcp".into(),
            field: "network.bridge",
            value: "br@mcp",
        },
        Case {
            what: "QEMU user shared with another VM",
            name: "web",
            edit: |_, d| {
                let mut other = good(d);
                other["name"] = "other".into();
                other["network"]["ip"] = "10.99.0.3".into();
                fs::write(d.join("etc/other.json"), other.to_string()).unwrap();
            },
            field: "qemu_user",
            value: "mcp-qemu",
        },
        Case {
            what: "QEMU as root",
            name: "web",
            edit: |c, _| c["qemu_user"] = "root".into(),
            field: "qemu_user",
            value: "root",
        },
        Case {
            what: "ops_extra reading host dirs directly",
            name: "web",
            edit: |c, _| c["ops_extra"] = json!({"LocalFilesParentDirectory": "/"}),
            field: "ops_extra.LocalFilesParentDirectory",
            value: "/",
        },
        Case {
            what: "ops_extra TargetRoot",
            name: "web",
            edit: |c, _| c["ops_extra"] = json!({"targetroot": "/"}),
            field: "ops_extra.targetroot",
            value: "/",
        },
        Case {
            what: "manifest option outside the allowlist",
            name: "web",
            edit: |c, _| c["ops_extra"] = json!({"ManifestPassthrough": {"telnet_mgmt": "t"}}),
            field: "ops_extra.ManifestPassthrough.telnet_mgmt",
            value: "t",
        },
        Case {
            what: "volume target with a newline",
            name: "web",
            edit: |c, _| c["volumes"][0]["target"] = "/srv/w\nw".into(),
            field: "volumes[0].target",
            value: "/srv/w",
        },
        Case {
            what: "volume limit zero",
            name: "web",
            edit: |c, _| c["volume_limit_mib"] = 0.into(),
            field: "volume_limit_mib",
            value: "0",
        },
        Case {
            what: "nanos_dir without kernel.img",
            name: "web",
            edit: |c, d| c["nanos_dir"] = d.join("vol").display().to_string().into(),
            field: "nanos_dir",
            value: "vol",
        },
    ]
}

/// readiness, health and credentials (issue 14).
fn ready_cases() -> Vec<Case> {
    vec![
        Case {
            what: "readiness with two probes",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"tcp": 8080, "http": {"port": 8080}}),
            field: "readiness",
            value: "tcp and http",
        },
        Case {
            what: "readiness probe port 0",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"tcp": 0}),
            field: "readiness.tcp",
            value: "0",
        },
        Case {
            what: "readiness port over 65535",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"tcp": 70000}),
            field: "readiness.tcp",
            value: "70000",
        },
        Case {
            what: "HTTP probe path with a space",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"http": {"port": 8080, "path": "/a b"}}),
            field: "readiness.http.path",
            value: "/a b",
        },
        Case {
            what: "HTTP probe path injecting a header",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"http": {"port": 8080, "path": "/\r\nX-Evil: 1"}}),
            field: "readiness.http.path",
            value: "X-Evil",
        },
        Case {
            what: "readiness timeout zero",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"tcp": 8080, "timeout_secs": 0}),
            field: "readiness.timeout_secs",
            value: "0",
        },
        Case {
            what: "unknown readiness field",
            name: "web",
            edit: |c, _| c["readiness"] = json!({"tcp": 8080, "udp": 53}),
            field: "readiness",
            value: "udp",
        },
        Case {
            what: "health without readiness",
            name: "web",
            edit: |c, _| c["health"] = json!({"interval_secs": 5}),
            field: "health",
            value: "readiness",
        },
        Case {
            what: "health probe longer than its interval",
            name: "web",
            edit: |c, _| {
                c["readiness"] = json!({"tcp": 8080});
                c["health"] = json!({"interval_secs": 2, "timeout_secs": 9});
            },
            field: "health.timeout_secs",
            value: "9",
        },
        Case {
            what: "credential name with a slash",
            name: "web",
            edit: |c, _| c["credentials"] = json!(["../etc/shadow"]),
            field: "credentials[0]",
            value: "../etc/shadow",
        },
        Case {
            what: "credential name with a colon",
            name: "web",
            edit: |c, _| c["credentials"] = json!(["tls:key"]),
            field: "credentials[0]",
            value: "tls:key",
        },
        Case {
            what: "credentials target relative",
            name: "web",
            edit: |c, _| {
                c["credentials"] = json!(["k"]);
                c["credentials_target"] = "run/secrets".into();
            },
            field: "credentials_target",
            value: "run/secrets",
        },
        Case {
            what: "credentials target inside a volume",
            name: "web",
            edit: |c, _| {
                c["credentials"] = json!(["k"]);
                c["credentials_target"] = "/srv/www/keys".into();
            },
            field: "credentials_target",
            value: "/srv/www/keys",
        },
    ]
}

fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e);
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            v.push(p.display().to_string());
            if p.is_dir() {
                v.extend(walk(&p));
            }
        }
    }
    v
}

#[test]
fn bad_configs_fail_cleanly_naming_field_and_value() {
    if !common::netns::require_root_or_skip("bad_configs_fail_cleanly_naming_field_and_value") {
        return;
    }
    let ns = vm::bridge_ns("badcfg");
    let links_before = vm::links(&ns);
    let mut cases = cases();
    cases.extend(ready_cases());
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let sb = Sandbox::new("badcfg");
        fs::create_dir_all(sb.root.join("vol")).unwrap();
        fs::write(sb.root.join("vol/index.html"), "hi").unwrap();
        let mut cfg = good(&sb.root);
        (case.edit)(&mut cfg, &sb.root);
        let file = sb.write_config("web", &cfg);
        let before = snapshot(&sb.root);

        let out = sb.run(Some(&ns), &["start", case.name]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut problems = Vec::new();
        if out.status.success() {
            problems.push("start exited 0".to_owned());
        }
        if lines.len() != 1 {
            problems.push(format!("{} stderr lines", lines.len()));
        }
        if !(stderr.contains(&format!("`{}`", case.field)) || stderr.contains(case.field)) {
            problems.push(format!("field {:?} not named", case.field));
        }
        if !stderr.contains(case.value) {
            problems.push(format!("value {:?} not named", case.value));
        }
        if snapshot(&sb.root) != before {
            problems.push("files or dirs were created".into());
        }
        if vm::links(&ns) != links_before {
            problems.push("a network interface was created".into());
        }
        // check-config on the same file agrees (except the name-argument case).
        if case.name == "web"
            && !matches!(
                case.what,
                "duplicate IP with another config" | "QEMU user shared with another VM"
            )
        {
            let cc = sb.run(None, &["check-config", file.to_str().unwrap()]);
            if cc.status.success() && case.what != "name does not match the file" {
                problems.push("check-config accepted it".into());
            }
        }
        println!("{:<36} -> {}", case.what, lines.first().unwrap_or(&""));
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} (stderr: {stderr})",
                case.what,
                problems.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "bad configs mishandled:\n{}",
        failures.join("\n")
    );
}

#[test]
fn good_config_passes_check_config_with_derived_values() {
    let sb = Sandbox::new("goodcfg");
    fs::create_dir_all(sb.root.join("vol")).unwrap();
    let file = sb.write_config("web", &good(&sb.root));
    let out = sb.run(None, &["check-config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["network"]["tap"], "mcp-web");
    assert_eq!(v["network"]["netmask"], "255.255.255.0");
    let mac = v["network"]["mac"].as_str().unwrap();
    assert!(mac.starts_with("02:") && mac.len() == 17, "{mac}");
    // check-config touched nothing.
    assert!(!sb.state_dir.exists() && !sb.runtime_dir.exists());
}

#[test]
fn runtime_dir_too_deep_for_a_unix_socket_is_refused_before_anything() {
    if !common::netns::require_root_or_skip(
        "runtime_dir_too_deep_for_a_unix_socket_is_refused_before_anything",
    ) {
        return;
    }
    let ns = vm::bridge_ns("deeprun");
    let sb = Sandbox::new("deeprun");
    fs::create_dir_all(sb.root.join("vol")).unwrap();
    sb.write_config("web", &good(&sb.root));
    let deep = sb.root.join("r".repeat(100));
    let out = ns
        .cmd(vm::BIN)
        .args(["--config-dir", sb.config_dir.to_str().unwrap()])
        .args(["--state-dir", sb.state_dir.to_str().unwrap()])
        .args(["--runtime-dir", deep.to_str().unwrap()])
        .args(["start", "web"])
        .env("MCP_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("too deep") && err.contains("107"), "{err}");
    assert!(
        !deep.exists() && !sb.state_dir.exists(),
        "created dirs despite the error"
    );
}
