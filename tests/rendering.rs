//! QEMU command lines and ops configs rendered for sample configs, compared
//! with expected files in tests/expected/ (as libvirt does for its QEMU
//! command lines). `MCP_BLESS=1 cargo test --test rendering` rewrites them;
//! review the diff before committing.

use std::fs;
use std::path::{Path, PathBuf};

use mcp_unikernel::config::parse_and_validate;
use mcp_unikernel::opsconfig;
use mcp_unikernel::paths::{Roots, VmPaths};
use mcp_unikernel::qemu::{self, Boot};
use serde_json::json;

fn expected(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/expected")
        .join(name)
}

fn compare(name: &str, actual: &str) {
    let path = expected(name);
    if std::env::var_os("MCP_BLESS").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (MCP_BLESS=1 creates it)", path.display()));
    assert_eq!(actual, want, "{name} differs from tests/expected/{name}");
}

fn roots() -> Roots {
    Roots {
        config_dir: "/etc/mcp-unikernel".into(),
        state_dir: "/var/lib/mcp-unikernel".into(),
        runtime_dir: "/run/mcp-unikernel".into(),
    }
}

fn argv_text(argv: &[String]) -> String {
    // One option (with its value) per line, like libvirt's .args files.
    let mut out = String::new();
    for a in argv {
        if a.starts_with('-') && !out.is_empty() {
            out.push_str(" \\\n");
        } else if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(a);
    }
    out.push('\n');
    out
}

#[test]
fn bridge_kvm_nanos() {
    let cfg = json!({
        "schema_version": 1, "name": "mcat", "program": "/bin/true",
        "args": ["-config", "/srv/mcat/mcat.toml"], "env": {"RUST_LOG": "info"},
        "memory_mib": 256, "vcpus": 2,
        "network": {"ip": "10.99.0.2", "nameservers": ["10.99.0.1"], "ntp_servers": ["10.99.0.1"]},
        "volumes": [{"source": "/tmp", "target": "/srv/mcat"}],
        "klibs": ["ntp"],
        "ops_extra": {"Debugflags": ["trace"], "ManifestPassthrough": {"futex_trace": "t"}}
    });
    let v = parse_and_validate(Path::new("mcat.json"), &cfg.to_string()).unwrap();
    let paths = VmPaths::new(&roots(), "mcat");
    let argv = qemu::argv(&v, &paths, &Boot::Disk(paths.image_dir().join("disk.img")));
    compare("bridge-kvm-nanos.args", &argv_text(&argv));
    let dirs = ["bin".to_owned(), "lib".to_owned(), "srv".to_owned()];
    let ops = serde_json::to_string_pretty(&opsconfig::render(&v, &dirs)).unwrap() + "\n";
    compare("bridge-kvm-nanos.ops.json", &ops);
}

#[test]
fn user_mode_tcg_ports() {
    let cfg = json!({
        "schema_version": 1, "name": "api", "program": "/bin/true", "accel": "tcg",
        "network": {"mode": "user", "ports": [
            {"host": 8080, "guest": 80},
            {"host": 5353, "guest": 53, "protocol": "udp", "host_address": "127.0.0.2"}
        ]},
        "nanos_dir": null
    });
    let v = parse_and_validate(Path::new("api.json"), &cfg.to_string()).unwrap();
    let paths = VmPaths::new(&roots(), "api");
    let argv = qemu::argv(&v, &paths, &Boot::Disk(paths.image_dir().join("disk.img")));
    compare("user-tcg-ports.args", &argv_text(&argv));
    let ops =
        serde_json::to_string_pretty(&opsconfig::render(&v, &["bin".to_owned()])).unwrap() + "\n";
    compare("user-tcg-ports.ops.json", &ops);
}

#[test]
fn direct_boot_standin() {
    let cfg = json!({
        "schema_version": 1, "name": "a-rather-long-unikernel-name", "program": "/bin/true",
        "accel": "tcg", "memory_mib": 64,
        "network": {"ip": "192.168.50.7", "prefix_length": 28, "gateway": "192.168.50.1", "bridge": "br-test"},
        "direct_boot": {"kernel": "/bin/true", "initrd": "/bin/true", "append": "quiet"}
    });
    let v = parse_and_validate(Path::new("x.json"), &cfg.to_string()).unwrap();
    let paths = VmPaths::new(&roots(), "a-rather-long-unikernel-name");
    let boot = Boot::Direct {
        kernel: "/boot/vmlinuz".into(),
        initrd: paths.image_dir().join("initrd.img"),
        append: "quiet".into(),
    };
    compare(
        "direct-boot-standin.args",
        &argv_text(&qemu::argv(&v, &paths, &boot)),
    );
}

/// The guest's resolver and time source (issue 15, part 3): the gateway
/// when the module allowed UDP 53 / 123 to it, otherwise none — stated
/// explicitly (the staged /etc/resolv.conf replaces ops's, which would say
/// 8.8.8.8; `ntp_servers` is always written with the ntp klib).
#[test]
fn dns_and_ntp_cases() {
    let cases = [
        (
            "dns-ntp-gateway",
            json!({"ip": "10.99.0.2", "nameservers": ["10.99.0.1"], "ntp_servers": ["10.99.0.1"]}),
            json!(["ntp"]),
        ),
        (
            "dns-gateway-no-ntp",
            json!({"ip": "10.99.0.2", "nameservers": ["10.99.0.1"]}),
            json!([]),
        ),
        ("dns-none", json!({"ip": "10.99.0.2"}), json!([])),
        ("dns-none-user-mode", json!({"mode": "user"}), json!([])),
    ];
    for (name, network, klibs) in cases {
        let cfg = json!({
            "schema_version": 1, "name": "dns", "program": "/bin/true",
            "network": network, "klibs": klibs
        });
        let v = parse_and_validate(Path::new("dns.json"), &cfg.to_string()).unwrap();
        let ops = serde_json::to_string_pretty(&opsconfig::render(&v, &["etc".to_owned()]))
            .unwrap()
            + "\n";
        compare(&format!("{name}.ops.json"), &ops);
        compare(&format!("{name}.resolv.conf"), &opsconfig::resolv_conf(&v));
    }
}
