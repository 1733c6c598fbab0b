//! The systemd tier: the shipped units (systemd/*.in, placeholders
//! substituted) plus the per-instance drop-ins nixos/lib/units.nix renders
//! for the test's configuration (as the NixOS module does for a container
//! host: no device BindsTo=), run by a real systemd 252 as PID 1 in a
//! throwaway systemd-nspawn container (tests/common/container.rs) with the
//! real helper, QEMU, nft rules from nixos/lib/nftables.nix, a bridge made by
//! a stand-in for NixOS's networking.bridges units and a per-VM system user.
//! The guest is the Linux stand-in for Nanos (tests/guest/), or Nanos with
//! MCP_NANOS_DIR. Each test boots its own container; everything in it (QEMU,
//! TAPs, bridge, tables) ends with the container. docs/systemd.md describes
//! what each test guards.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::container::{install_shipped_units, nix_eval, nix_str, prerequisites, Bind, Container};
use common::netns::skip;
use common::vm;

/// Recorded `systemd-analyze security` exposure levels (systemd 252, this
/// rootfs, a bridged instance with its drop-in); docs/systemd.md records the
/// same figures as "`UNIT`: exposure N.N". Lower is better; a change to the
/// units may lower them (then record the new figures), never raise them.
const RECORDED_EXPOSURE: [(&str, f64); 3] = [
    ("mcp-unikernel@.service", 2.6),
    ("mcp-unikernel-build@.service", 2.2),
    ("mcp-unikernel-firewall.service", 1.7),
];

const HELPER_INSIDE: &str = "/usr/local/bin/mcp-unikernel";
const NFT_INSIDE: &str = "/usr/sbin/nft";
const BOOT_LIMIT: Duration = Duration::from_secs(90);
const BRIDGE: &str = "mcp-br0";
const GATEWAY: &str = "10.99.0.1";
/// The stand-in for NixOS's networking.bridges / networking.interfaces units.
const NETDEV_UNIT: &str = "mcp-br0-netdev.service";
const ADDRESS_UNIT: &str = "network-addresses-mcp-br0.service";
const FIREWALL_UNIT: &str = "mcp-unikernel-firewall.service";
const ANCHOR_UNIT: &str = "mcp-test-anchor.service";

/// The helper under test: this build's binary (MCP_SYSTEMD_HELPER overrides
/// it, e.g. to try another build of the helper against the same units).
fn helper_bin() -> PathBuf {
    std::env::var_os("MCP_SYSTEMD_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(vm::BIN))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Standin,
    Nanos,
}

/// What the guest artifacts are on the host; bound read-only into the
/// container under /opt/mcp-test (and /opt/nanos, ops for Nanos).
struct Artifacts {
    kind: Kind,
    binds: Vec<Bind>,
}

fn artifacts(test: &str, kind: Kind) -> Option<Artifacts> {
    let mut binds = vec![Bind::ro(helper_bin(), HELPER_INSIDE)];
    match kind {
        Kind::Standin => match vm::standin_guest() {
            Ok(g) => {
                binds.push(Bind::ro(g.kernel, "/opt/mcp-test/vmlinuz"));
                binds.push(Bind::ro(g.initrd, "/opt/mcp-test/initrd.cpio.gz"));
                binds.push(Bind::ro(g.file_server, "/opt/mcp-test/file-server"));
            }
            Err(e) => {
                skip(test, &e);
                return None;
            }
        },
        Kind::Nanos => match vm::nanos_guest() {
            Ok(vm::Guest::Nanos {
                dir,
                ops,
                file_server,
            }) => {
                let ops = which(&ops).unwrap_or_else(|| PathBuf::from(ops));
                binds.push(Bind::ro(dir, "/opt/nanos"));
                binds.push(Bind::ro(ops, "/usr/local/bin/ops"));
                binds.push(Bind::ro(file_server, "/opt/mcp-test/file-server"));
            }
            Ok(_) => unreachable!(),
            Err(e) => {
                skip(test, &e);
                return None;
            }
        },
    }
    Some(Artifacts { kind, binds })
}

fn which(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// One unikernel of a test's configuration.
#[derive(Clone)]
struct VmSpec {
    name: &'static str,
    ip: &'static str,
    args: Vec<String>,
    /// Extra kernel command line (stand-in guest), e.g. `mcp.ignore_power`.
    append: &'static str,
    stop_timeout: u32,
    restart: &'static str,
    bridge: &'static str,
    /// Replaces the program (a path inside the container).
    program: Option<&'static str>,
    /// QEMU user-mode networking with this host port forwarded to the
    /// guest's 8080 (instead of a TAP on the bridge).
    user_port: Option<u16>,
}

impl VmSpec {
    fn web(name: &'static str, ip: &'static str) -> VmSpec {
        VmSpec {
            name,
            ip,
            args: ["--listen", "0.0.0.0:8080", "--file", "/srv/www/index.html"]
                .map(String::from)
                .to_vec(),
            append: "",
            stop_timeout: 20,
            restart: "on-failure",
            bridge: BRIDGE,
            program: None,
            user_port: None,
        }
    }
    fn args(mut self, args: &[&str]) -> VmSpec {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    fn unit(&self) -> String {
        format!("mcp-unikernel@{}.service", self.name)
    }
    fn build_unit(&self) -> String {
        format!("mcp-unikernel-build@{}.service", self.name)
    }
    fn user(&self) -> String {
        format!("mcp-vm-{}", self.name)
    }
    fn content(&self) -> String {
        format!("hello from {} under systemd\n", self.name)
    }
    fn url(&self) -> String {
        match self.user_port {
            Some(p) => format!("http://127.0.0.1:{p}/"),
            None => format!("http://{}:8080/", self.ip),
        }
    }
}

/// A container holding the shipped units, the drop-ins, the instance
/// configs, the firewall files, the bridge units and the VM users.
struct Tier {
    c: Container,
    kind: Kind,
    vms: Vec<VmSpec>,
}

fn instance_json(kind: Kind, v: &VmSpec) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "schema_version": 1,
        "name": v.name,
        "program": v.program.unwrap_or("/opt/mcp-test/file-server"),
        "args": v.args,
        "memory_mib": 128,
        "vcpus": 1,
        "accel": vm::accel(),
        "network": {
            "mode": "bridge",
            "bridge": v.bridge,
            "ip": v.ip,
            "prefix_length": 24,
            "gateway": GATEWAY,
        },
        "volumes": [ { "source": format!("/srv/{}", v.name), "target": "/srv/www" } ],
        "qemu": "qemu-system-x86_64",
        "qemu_user": v.user(),
        "qemu_group": v.user(),
        "stop_timeout_secs": v.stop_timeout,
    });
    if let Some(port) = v.user_port {
        cfg["network"] = serde_json::json!({
            "mode": "user",
            "ports": [ { "host": port, "guest": 8080 } ],
        });
    }
    match kind {
        Kind::Standin => {
            let append = format!("quiet {}", v.append);
            cfg["direct_boot"] = serde_json::json!({
                "kernel": "/opt/mcp-test/vmlinuz",
                "initrd": "/opt/mcp-test/initrd.cpio.gz",
                "append": append.trim(),
            });
        }
        Kind::Nanos => {
            cfg["nanos_dir"] = "/opt/nanos".into();
            cfg["ops"] = "/usr/local/bin/ops".into();
        }
    }
    cfg
}

/// nixos/lib/units.nix for `v` (the module's call for a container host:
/// the rules unit and the bridge address unit, no device BindsTo=), plus
/// nixos/lib/nftables.nix for all VMs, in one evaluation.
fn render(vms: &[VmSpec], json_paths: &[String]) -> serde_json::Value {
    let root = Path::new(common::container::ROOT);
    let lib = |f: &str| root.join("nixos/lib").join(f).display().to_string();
    let units: Vec<String> = vms
        .iter()
        .zip(json_paths)
        .map(|(v, json)| {
            // A bridged VM needs its rules and the bridge's address; a
            // user-mode VM neither, but IP sockets.
            let (requires, after) = match v.user_port {
                None => (
                    format!("{} {}", nix_str(FIREWALL_UNIT), nix_str(ADDRESS_UNIT)),
                    nix_str(NETDEV_UNIT),
                ),
                Some(_) => (String::new(), String::new()),
            };
            format!(
                "{{ name = {}; value = import {} {{ name = {}; restart = {}; stopTimeout = {}; \
                 restartTriggers = [ {} ]; requires = [ {requires} ]; after = [ {after} ]; \
                 userNetwork = {}; }}; }}",
                nix_str(v.name),
                lib("units.nix"),
                nix_str(v.name),
                nix_str(v.restart),
                v.stop_timeout,
                nix_str(json),
                v.user_port.is_some(),
            )
        })
        .collect();
    let nft_vms: Vec<String> = vms
        .iter()
        .filter(|v| v.user_port.is_none())
        .map(|v| {
            format!(
                "{{ name = {n}; tap = d.tapName {n}; ip = {}; mac = d.mac {n}; }}",
                nix_str(v.ip),
                n = nix_str(v.name)
            )
        })
        .collect();
    let expr = format!(
        "let d = import {derive}; n = import {nft} {{ bridge = {br}; gateway = {gw}; \
         prefixLength = 24; vms = [ {vms} ]; }}; in {{ units = builtins.listToAttrs [ {units} ]; \
         ruleset = n.ruleset; removal = n.removal or null; }}",
        derive = lib("derive.nix"),
        nft = lib("nftables.nix"),
        br = nix_str(BRIDGE),
        gw = nix_str(GATEWAY),
        vms = nft_vms.join(" "),
        units = units.join(" "),
    );
    nix_eval(&expr)
}

/// nftables.nix `removal` (both tables deleted if present); the same text
/// here while the module's version of nftables.nix has none yet.
const REMOVAL_FALLBACK: &str = "add table bridge mcp-unikernel\ndelete table bridge mcp-unikernel\n\
                                add table inet mcp-unikernel-host\ndelete table inet mcp-unikernel-host\n";

/// The stand-in for the units NixOS makes from networking.bridges and
/// networking.interfaces (scripted networking): the bridge, then its address.
fn bridge_units() -> (String, String) {
    let netdev = format!(
        "[Unit]\nDescription=Bridge {BRIDGE} (stand-in for NixOS networking.bridges)\n\
         Before=network.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/usr/sbin/ip link add {BRIDGE} type bridge\n\
         ExecStart=/usr/sbin/ip link set {BRIDGE} up\n\
         ExecStop=/usr/sbin/ip link del {BRIDGE}\n"
    );
    let address = format!(
        "[Unit]\nDescription=Address of {BRIDGE} (stand-in for NixOS networking.interfaces)\n\
         Requires={NETDEV_UNIT}\nAfter={NETDEV_UNIT}\nBefore=network.target\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/usr/sbin/ip addr add {GATEWAY}/24 dev {BRIDGE}\n\
         ExecStop=-/usr/sbin/ip addr del {GATEWAY}/24 dev {BRIDGE}\n"
    );
    (netdev, address)
}

impl Tier {
    /// Prerequisites, guest artifacts, then a booted container set up for
    /// `vms`; None (reported skipped) when something is missing.
    fn new(test: &str, kind: Kind, vms: &[VmSpec]) -> Option<Tier> {
        let rootfs = prerequisites(test)?;
        let art = artifacts(test, kind)?;
        let binds = art.binds;
        let c = Container::boot(test, &rootfs, |dir| {
            let units = dir.join("units");
            let names = install_shipped_units(&units, HELPER_INSIDE, NFT_INSIDE);
            assert_eq!(
                names,
                [
                    "mcp-unikernel-build@.service",
                    "mcp-unikernel-firewall.service",
                    "mcp-unikernel-gc.service",
                    "mcp-unikernel-health@.service",
                    "mcp-unikernel-health@.timer",
                    "mcp-unikernel@.service",
                    "mcp-unikernels.target"
                ]
            );
            let mut b = vec![Bind::ro(units, "/usr/local/lib/systemd/system")];
            b.extend(binds);
            b
        });
        let t = Tier {
            c,
            kind: art.kind,
            vms: vms.to_vec(),
        };
        t.configure();
        Some(t)
    }

    fn configure(&self) {
        let c = &self.c;
        // What the module would write: instance JSONs (their store paths are
        // the restart triggers; here the /etc path stands in), drop-ins,
        // firewall files; plus users and the bridge units.
        let jsons: Vec<String> = self
            .vms
            .iter()
            .map(|v| format!("/etc/mcp-unikernel/{}.json", v.name))
            .collect();
        let r = render(&self.vms, &jsons);
        // NixOS has a kvm group (the module puts VM users into it); a Debian
        // container without udev has none.
        if !c.run(&["getent", "group", "kvm"]).status.success() {
            c.ok(&["groupadd", "--system", "kvm"]);
        }
        for (v, path) in self.vms.iter().zip(&jsons) {
            self.write_config(v, path);
            let u = &r["units"][v.name];
            assert_eq!(u["vmUnit"], v.unit().as_str());
            assert_eq!(u["buildUnit"], v.build_unit().as_str());
            c.write(
                &format!("/etc/systemd/system/{}.d/overrides.conf", v.unit()),
                u["vmDropin"].as_str().unwrap(),
                0o644,
            );
            c.write(
                &format!("/etc/systemd/system/{}.d/overrides.conf", v.build_unit()),
                u["buildDropin"].as_str().unwrap(),
                0o644,
            );
            c.ok(&[
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "--groups",
                "kvm",
                &v.user(),
            ]);
            // Owned by another user and private to it (as a service's config
            // dir often is): the build reads it as root without owning it.
            let dir = format!("/srv/{}", v.name);
            c.write(&format!("{dir}/index.html"), &v.content(), 0o600);
            c.ok(&["chown", "-R", "nobody:nogroup", &dir]);
            c.ok(&["chmod", "0700", &dir]);
        }
        c.write(
            "/etc/mcp-unikernel/firewall.nft",
            r["ruleset"].as_str().unwrap(),
            0o644,
        );
        c.write(
            "/etc/mcp-unikernel/firewall-remove.nft",
            r["removal"].as_str().unwrap_or(REMOVAL_FALLBACK),
            0o644,
        );
        let (netdev, address) = bridge_units();
        c.write(
            &format!("/etc/systemd/system/{NETDEV_UNIT}"),
            &netdev,
            0o644,
        );
        c.write(
            &format!("/etc/systemd/system/{ADDRESS_UNIT}"),
            &address,
            0o644,
        );
        // systemd unloads an inactive unit nothing refers to, and with it its
        // ExecMainStatus/NRestarts. On NixOS mcp-unikernels.target (active,
        // Wants= each instance) keeps them loaded; here an active unit that
        // is only ordered after them does, without pulling anything in.
        let after: Vec<String> = self
            .vms
            .iter()
            .flat_map(|v| [v.unit(), v.build_unit()])
            .collect();
        c.write(
            &format!("/etc/systemd/system/{ANCHOR_UNIT}"),
            &format!(
                "[Unit]\nDescription=Keeps the test's instances loaded\nAfter={}\n\n\
                 [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
                after.join(" ")
            ),
            0o644,
        );
        c.ok(&["systemctl", "daemon-reload"]);
        c.ok(&["systemctl", "start", ANCHOR_UNIT]);
        // Every unit loads without complaint (a typo in a shipped file or a
        // drop-in shows up as "Unknown key" / a bad-setting load state).
        let mut units = vec![FIREWALL_UNIT.to_owned(), "mcp-unikernels.target".to_owned()];
        for v in &self.vms {
            units.extend([v.unit(), v.build_unit()]);
        }
        for unit in &units {
            assert_eq!(self.c.prop(unit, "LoadState"), "loaded", "{unit}");
        }
        // The instances carry their drop-ins.
        for v in &self.vms {
            let dropins = self.c.prop(&v.unit(), "DropInPaths");
            assert!(
                dropins.contains("overrides.conf"),
                "{}: {dropins}",
                v.unit()
            );
        }
        let warnings = c.text(&["journalctl", "--no-pager", "-o", "cat", "-p", "warning"]);
        for line in warnings.lines() {
            assert!(
                !line.contains("/mcp-unikernel") && !line.contains("/mcp-br0"),
                "systemd complained about a unit file: {line}"
            );
        }
    }

    fn write_config(&self, v: &VmSpec, path: &str) {
        let json = serde_json::to_string_pretty(&instance_json(self.kind, v)).unwrap();
        self.c.write(path, &json, 0o644);
    }

    /// `systemctl start UNIT` (blocking: waits for the start job).
    fn start(&self, v: &VmSpec) -> std::process::Output {
        self.c
            .run(&["timeout", "300", "systemctl", "start", &v.unit()])
    }

    fn start_ok(&self, v: &VmSpec) {
        let out = self.start(v);
        assert!(
            out.status.success(),
            "systemctl start {} failed: {}\n{}",
            v.unit(),
            String::from_utf8_lossy(&out.stderr),
            self.c.journal(&v.unit())
        );
    }

    fn wait_http(&self, v: &VmSpec) -> Duration {
        let t0 = Instant::now();
        let served = self.c.wait_until(BOOT_LIMIT, || {
            self.c.http_get(&v.url()).as_deref() == Some(&v.content())
        });
        assert!(
            served,
            "no HTTP answer from {} within {BOOT_LIMIT:?}; {}={}\n{}",
            v.url(),
            v.unit(),
            self.c.prop(&v.unit(), "ActiveState"),
            self.c.journal(&v.unit())
        );
        t0.elapsed()
    }

    fn main_pid(&self, v: &VmSpec) -> i32 {
        self.c.prop(&v.unit(), "MainPID").parse().unwrap()
    }

    /// A field of /proc/PID/status inside the container.
    fn proc_status(&self, pid: i32, key: &str) -> String {
        let s = self.c.ok(&["cat", &format!("/proc/{pid}/status")]);
        s.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{key}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    }

    fn status_json(&self, v: &VmSpec) -> serde_json::Value {
        let out = self.c.ok(&[HELPER_INSIDE, "status", v.name, "--json"]);
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        all[0].clone()
    }

    /// `systemctl stop` with its wall time.
    fn stop(&self, v: &VmSpec) -> (std::process::Output, Duration) {
        let t0 = Instant::now();
        let out = self
            .c
            .run(&["timeout", "300", "systemctl", "stop", &v.unit()]);
        (out, t0.elapsed())
    }

    fn console_up_line(&self, v: &VmSpec) -> String {
        match self.kind {
            Kind::Standin => format!("mcp-guest: net up {}", v.ip),
            Kind::Nanos => format!("en1: assigned {}", v.ip),
        }
    }

    /// Files (and dirs) under the VM's runtime dir with their inode numbers.
    fn runtime_files(&self, v: &VmSpec) -> String {
        self.c.ok(&[
            "find",
            &format!("/run/mcp-unikernel/{}", v.name),
            "-mindepth",
            "1",
            "-printf",
            "%P %i %U\n",
        ])
    }
}

/// QEMU processes in the container.
fn qemus(t: &Tier) -> Vec<String> {
    t.c.text(&["ps", "-eo", "pid=,comm="])
        .lines()
        .filter(|l| l.contains("qemu-system"))
        .map(str::to_owned)
        .collect()
}

fn props(t: &Tier, unit: &str, names: &[&str]) -> String {
    names
        .iter()
        .map(|p| format!("{p}={}", t.c.prop(unit, p)))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- (1) start

#[test]
fn systemd_start_serves_http_as_unprivileged_qemu() {
    start_serves_http(
        "systemd_start_serves_http_as_unprivileged_qemu",
        Kind::Standin,
    );
}

/// The same on a real Nanos guest built by real ops inside the build unit.
#[test]
fn systemd_nanos_start_serves_http() {
    start_serves_http("systemd_nanos_start_serves_http", Kind::Nanos);
}

fn start_serves_http(test: &str, kind: Kind) {
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, kind, std::slice::from_ref(&web)) else {
        return;
    };
    let t0 = Instant::now();
    t.start_ok(&web);
    let started = t0.elapsed();
    // The build ran first, as its own unit, and succeeded.
    assert_eq!(t.c.prop(&web.build_unit(), "Result"), "success");
    assert_eq!(
        t.c.prop(&web.build_unit(), "ExecMainStatus"),
        "0",
        "{}",
        t.c.journal(&web.build_unit())
    );
    // The rules are loaded (the VM requires them) and the bridge is up.
    assert_eq!(t.c.prop(FIREWALL_UNIT, "ActiveState"), "active");
    let tables = t.c.ok(&["nft", "list", "tables"]);
    assert!(tables.contains("table bridge mcp-unikernel"), "{tables}");
    assert!(tables.contains("table inet mcp-unikernel-host"), "{tables}");

    let took = t.wait_http(&web);
    println!("{test}: systemctl start {started:?}, first HTTP 200 {took:?} later");

    // MainPID is QEMU, unprivileged and confined.
    let pid = t.main_pid(&web);
    assert!(pid > 1, "MainPID {pid}");
    let exe = t.c.ok(&["readlink", &format!("/proc/{pid}/exe")]);
    assert!(exe.contains("qemu-system"), "MainPID {pid} is {exe}");
    let uid = t.proc_status(pid, "Uid");
    let vm_uid = t.c.ok(&["id", "-u", &web.user()]).trim().to_owned();
    assert!(
        uid.split_whitespace().all(|u| u == vm_uid),
        "QEMU uids {uid}, expected the VM's own uid {vm_uid} (real, effective, saved, fs)"
    );
    assert_ne!(vm_uid, "0");
    let groups = t.proc_status(pid, "Groups");
    let kvm_gid = t.c.ok(&["getent", "group", "kvm"]);
    let kvm_gid = kvm_gid.split(':').nth(2).unwrap().to_owned();
    assert!(
        groups.split_whitespace().any(|g| g == kvm_gid),
        "QEMU lost the VM user's supplementary group kvm ({kvm_gid}): Groups {groups:?}"
    );
    assert_eq!(t.proc_status(pid, "CapEff"), "0000000000000000");
    assert_eq!(t.proc_status(pid, "CapPrm"), "0000000000000000");
    assert_eq!(t.proc_status(pid, "Seccomp"), "2");
    assert_eq!(t.proc_status(pid, "NoNewPrivs"), "1");
    // The guest's serial console is in the unit's journal.
    let up = t.console_up_line(&web);
    assert!(
        t.c.wait_until(Duration::from_secs(10), || t
            .c
            .journal(&web.unit())
            .contains(&up)),
        "no `{up}` in journalctl -u {}:\n{}",
        web.unit(),
        t.c.journal(&web.unit())
    );
    assert_eq!(t.c.prop(&web.unit(), "NRestarts"), "0");
    let (out, _) = t.stop(&web);
    assert!(out.status.success());
}

// ---------------------------------------------------------- (2) failed build

#[test]
fn systemd_failed_build_fails_systemctl_start() {
    let test = "systemd_failed_build_fails_systemctl_start";
    let mut web = VmSpec::web("web", "10.99.0.2");
    web.program = Some("/opt/mcp-test/not-an-elf");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.c.write(
        "/opt/mcp-test/not-an-elf",
        "#!/bin/sh\necho I am a script\n",
        0o755,
    );
    let out = t.start(&web);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "systemctl start succeeded although the build fails:\n{}",
        t.c.journal(&web.build_unit())
    );
    assert!(err.contains("dependency"), "systemctl start said: {err}");
    assert_eq!(t.c.prop(&web.build_unit(), "ActiveState"), "failed");
    let build_log = t.c.journal(&web.build_unit());
    assert!(
        build_log.contains("ELF") && build_log.contains("not-an-elf"),
        "the build's journal does not give the reason:\n{build_log}"
    );
    // The VM's ExecStart never ran: no QEMU, no TAP, no restart loop.
    std::thread::sleep(Duration::from_secs(3));
    let j = t.c.journal(&web.unit());
    assert!(j.contains("Dependency failed"), "{j}");
    assert!(!j.contains("Started mcp-unikernel@web.service"), "{j}");
    assert!(!j.contains("Scheduled restart job"), "{j}");
    assert!(qemus(&t).is_empty(), "{:?}", qemus(&t));
    assert!(!t.c.text(&["ip", "-o", "link"]).contains("mcp-web"));
    assert_eq!(
        t.c.prop(&web.unit(), "ExecMainStartTimestampMonotonic"),
        "0"
    );
    assert_eq!(t.c.prop(&web.unit(), "NRestarts"), "0");
    assert_ne!(t.c.prop(&web.unit(), "ActiveState"), "active");
}

// ---------------------------------------------------------------- (3) stop

#[test]
fn systemd_stop_powers_guest_down_within_timeout() {
    stop_powers_guest_down(
        "systemd_stop_powers_guest_down_within_timeout",
        Kind::Standin,
    );
}

/// Nanos handles the ACPI power button itself (SIGTERM to the program).
#[test]
fn systemd_nanos_stop_powers_guest_down_within_timeout() {
    stop_powers_guest_down(
        "systemd_nanos_stop_powers_guest_down_within_timeout",
        Kind::Nanos,
    );
}

fn stop_powers_guest_down(test: &str, kind: Kind) {
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, kind, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    let timeout = t.c.prop(&web.unit(), "TimeoutStopUSec");
    assert_eq!(timeout, "1min 5s", "TimeoutStopSec = stopTimeout 20 + 45");
    let (out, took) = t.stop(&web);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = t.c.journal(&web.unit());
    assert!(
        j.contains("guest powered down (ACPI power button)"),
        "the journal does not say the guest powered down:\n{j}"
    );
    assert!(
        took < Duration::from_secs(20),
        "stop took {took:?} (guest power-down, well inside the timeout)"
    );
    if kind == Kind::Standin {
        assert!(
            j.contains("mcp-guest: ACPI power button"),
            "the guest never saw the power button:\n{j}"
        );
    }
    // systemd itself signalled nothing, and the run counts as a success:
    // QEMU exited 1 = program exited 0 (isa-debug-exit).
    assert!(!j.contains("stop-sigterm"), "{j}");
    assert_eq!(
        props(
            &t,
            &web.unit(),
            &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]
        ),
        "ActiveState=inactive Result=success ExecMainCode=1 ExecMainStatus=1",
        "QEMU did not exit (0 << 1) | 1 = 1 (program exited 0), counted as success:\n{j}"
    );
    // ExecStopPost (cleanup) removed the TAP; systemd the runtime dir.
    assert!(!t.c.text(&["ip", "-o", "link"]).contains("mcp-web"));
    assert!(!t.c.path("/run/mcp-unikernel/web").exists());
    println!("{test}: systemctl stop took {took:?}");
}

#[test]
fn systemd_stop_quits_qemu_when_guest_ignores_power_button() {
    let test = "systemd_stop_quits_qemu_when_guest_ignores_power_button";
    let mut web = VmSpec::web("web", "10.99.0.2");
    web.append = "mcp.ignore_power";
    web.stop_timeout = 3;
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    let (out, took) = t.stop(&web);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = t.c.journal(&web.unit());
    assert!(j.contains("ACPI power button ignored"), "{j}");
    assert!(
        j.contains("QEMU quit over QMP after the guest ignored the power button"),
        "the journal does not say QEMU was quit:\n{j}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(3 + 45),
        "stop took {took:?}: stopTimeout 3 s, then quit, inside TimeoutStopSec 48 s"
    );
    assert!(!j.contains("stop-sigterm"), "{j}");
    assert_eq!(
        props(
            &t,
            &web.unit(),
            &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]
        ),
        "ActiveState=inactive Result=success ExecMainCode=1 ExecMainStatus=0",
        "QEMU did not exit 0 on quit:\n{j}"
    );
    println!("{test}: systemctl stop took {took:?}");
}

/// The last fallback: no QMP (its socket gone), so the helper signals QEMU,
/// which runs as another uid: that needs CAP_KILL in the bounding set.
#[test]
fn systemd_stop_signals_qemu_when_qmp_is_gone() {
    let test = "systemd_stop_signals_qemu_when_qmp_is_gone";
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    let gone = t.c.ok(&[
        "find",
        "/run/mcp-unikernel/web",
        "-name",
        "qmp.sock",
        "-print",
        "-delete",
    ]);
    assert!(gone.contains("qmp.sock"), "no QMP socket found to remove");
    let (out, took) = t.stop(&web);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = t.c.journal(&web.unit());
    assert!(
        j.contains("QEMU ended by SIGTERM (QMP unavailable)"),
        "the helper did not end QEMU with its own signal:\n{j}"
    );
    // The helper's ExecStop succeeded; systemd did not have to step in.
    assert!(
        !j.contains("Control process exited"),
        "ExecStop failed:\n{j}"
    );
    assert!(!j.contains("stop-sigterm"), "{j}");
    assert_eq!(
        props(
            &t,
            &web.unit(),
            &["ActiveState", "Result", "ExecMainCode", "ExecMainStatus"]
        ),
        "ActiveState=inactive Result=success ExecMainCode=1 ExecMainStatus=0",
        "QEMU did not exit 0 on SIGTERM:\n{j}"
    );
    println!("{test}: systemctl stop took {took:?}");
}

// ------------------------------------------------------ (4) SIGKILL → restart

#[test]
fn systemd_sigkill_of_qemu_restarts_and_status_trusts_new_qemu() {
    let test = "systemd_sigkill_of_qemu_restarts_and_status_trusts_new_qemu";
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    let old = t.main_pid(&web);
    t.c.ok(&[
        "systemctl",
        "kill",
        "--kill-whom=main",
        "-s",
        "SIGKILL",
        &web.unit(),
    ]);
    let restarted = t.c.wait_until(BOOT_LIMIT, || {
        let p = t.main_pid(&web);
        p > 1 && p != old && t.c.prop(&web.unit(), "ActiveState") == "active"
    });
    assert!(
        restarted,
        "not restarted after SIGKILL: {}\n{}",
        props(
            &t,
            &web.unit(),
            &["ActiveState", "SubState", "Result", "NRestarts"]
        ),
        t.c.journal(&web.unit())
    );
    assert_eq!(t.c.prop(&web.unit(), "NRestarts"), "1");
    t.wait_http(&web);
    let new = t.main_pid(&web);
    let j = t.c.journal(&web.unit());
    assert!(j.contains("status=9/KILL"), "{j}");
    // status, run outside the unit, trusts the new QEMU (and only it).
    let st = t.status_json(&web);
    assert_eq!(
        st["running"], true,
        "status does not trust the new QEMU: {st}"
    );
    assert_eq!(st["pid"], new, "{st}");
    assert!(st["stale"].is_null(), "{st}");
    let (out, _) = t.stop(&web);
    assert!(out.status.success());
    assert!(t.c.journal(&web.unit()).contains("guest powered down"));
}

// ------------------------------------------------------- (5) program exit code

#[test]
fn systemd_program_exit_nonzero_fails_and_restarts() {
    exit_nonzero_restarts(
        "systemd_program_exit_nonzero_fails_and_restarts",
        Kind::Standin,
    );
}

/// Nanos's `debug_exit` carries the program's exit code to QEMU.
#[test]
fn systemd_nanos_program_exit_nonzero_fails_and_restarts() {
    exit_nonzero_restarts(
        "systemd_nanos_program_exit_nonzero_fails_and_restarts",
        Kind::Nanos,
    );
}

fn exit_nonzero_restarts(test: &str, kind: Kind) {
    // The example server exits 2 on an unknown flag: QEMU exits 5.
    let web = VmSpec::web("web", "10.99.0.2").args(&["--no-such-flag"]);
    let Some(t) = Tier::new(test, kind, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    let restarted = t.c.wait_until(BOOT_LIMIT, || {
        t.c.prop(&web.unit(), "NRestarts")
            .parse::<u32>()
            .unwrap_or(0)
            >= 1
    });
    let j = t.c.journal(&web.unit());
    assert!(
        restarted,
        "a program exiting 2 was not restarted: {}\n{j}",
        props(
            &t,
            &web.unit(),
            &["ActiveState", "Result", "ExecMainStatus"]
        )
    );
    if kind == Kind::Standin {
        assert!(j.contains("program exited with status 2"), "{j}");
    }
    assert!(
        j.contains("Main process exited, code=exited, status=5/"),
        "QEMU did not exit (2 << 1) | 1 = 5:\n{j}"
    );
    assert!(j.contains("Failed with result 'exit-code'"), "{j}");
    let _ = t.stop(&web);
}

#[test]
fn systemd_program_exit_zero_leaves_unit_inactive() {
    let test = "systemd_program_exit_zero_leaves_unit_inactive";
    let web = VmSpec::web("web", "10.99.0.2").args(&["--version"]);
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    let ended = t.c.wait_until(BOOT_LIMIT, || {
        t.c.prop(&web.unit(), "ActiveState") != "active"
            && t.c.prop(&web.unit(), "ActiveState") != "activating"
    });
    assert!(ended, "still running: {}", t.c.journal(&web.unit()));
    // Long enough for a restart (RestartSec=2s) to have happened.
    std::thread::sleep(Duration::from_secs(4));
    let j = t.c.journal(&web.unit());
    assert!(j.contains("program exited with status 0"), "{j}");
    assert_eq!(
        props(
            &t,
            &web.unit(),
            &[
                "ActiveState",
                "Result",
                "ExecMainCode",
                "ExecMainStatus",
                "NRestarts"
            ]
        ),
        "ActiveState=inactive Result=success ExecMainCode=1 ExecMainStatus=1 NRestarts=0",
        "QEMU did not exit (0 << 1) | 1 = 1 (program exited 0), or was restarted:\n{j}"
    );
}

// --------------------------------------------------- (6) config file removed

#[test]
fn systemd_removed_config_restart_is_skipped_not_failed() {
    let test = "systemd_removed_config_restart_is_skipped_not_failed";
    let web = VmSpec::web("web", "10.99.0.2");
    let other = VmSpec::web("other", "10.99.0.3");
    let Some(t) = Tier::new(test, Kind::Standin, &[web.clone(), other.clone()]) else {
        return;
    };
    t.start_ok(&web);
    t.start_ok(&other);
    t.wait_http(&web);
    t.wait_http(&other);
    let other_pid = t.main_pid(&other);
    let state_before =
        t.c.ok(&["find", "/var/lib/mcp-unikernel", "-printf", "%P %i\n"]);

    // What switch-to-configuration does when the unikernel was removed:
    // the JSON (and drop-in) are gone, the instance is restarted.
    fs::remove_file(t.c.path("/etc/mcp-unikernel/web.json")).unwrap();
    let out =
        t.c.run(&["timeout", "120", "systemctl", "restart", &web.unit()]);
    let j = t.c.journal(&web.unit());
    assert!(
        out.status.success(),
        "systemctl restart failed: {}\n{j}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        j.contains("ConditionPathExists=/etc/mcp-unikernel/web.json"),
        "not skipped by its condition:\n{j}"
    );
    assert_eq!(
        props(
            &t,
            &web.unit(),
            &["ActiveState", "ConditionResult", "Result"]
        ),
        "ActiveState=inactive ConditionResult=no Result=success"
    );
    assert_eq!(t.c.prop(&web.build_unit(), "ConditionResult"), "no");
    assert!(!t
        .c
        .run(&["systemctl", "is-failed", "--quiet", &web.unit()])
        .status
        .success());
    // The stop still went through the guest (ExecStop works without config).
    assert!(j.contains("guest powered down"), "{j}");
    // Nothing else touched: the other VM runs on, same QEMU; rules, bridge
    // and the removed VM's state (its last good image) are still there.
    assert_eq!(t.main_pid(&other), other_pid);
    assert_eq!(
        t.c.http_get(&other.url()).as_deref(),
        Some(other.content().as_str())
    );
    assert_eq!(t.c.prop(FIREWALL_UNIT, "ActiveState"), "active");
    assert_eq!(t.c.prop(ADDRESS_UNIT, "ActiveState"), "active");
    let state_after =
        t.c.ok(&["find", "/var/lib/mcp-unikernel", "-printf", "%P %i\n"]);
    let web_files = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("web/image") || l.starts_with("other/"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(web_files(&state_after), web_files(&state_before));
    assert_eq!(t.c.prop(&other.unit(), "NRestarts"), "0");
}

// ------------------------------------------------------- (7) exposure score

#[test]
fn systemd_security_exposure_not_worse_than_recorded() {
    let test = "systemd_security_exposure_not_worse_than_recorded";
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    let score = |unit: &str| -> (f64, String) {
        let out =
            t.c.run(&["systemd-analyze", "security", "--no-pager", unit]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level for {unit}: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let v = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse {line:?}"));
        (v, text)
    };
    let docs =
        fs::read_to_string(Path::new(common::container::ROOT).join("docs/systemd.md")).unwrap();
    for (template, recorded) in RECORDED_EXPOSURE {
        let unit = template.replace("@.", "@web.");
        let (v, text) = score(&unit);
        println!("{test}: {unit}: exposure {v:.1} (recorded {recorded:.1})");
        assert!(
            v <= recorded,
            "exposure of {unit} is {v}, worse than the recorded {recorded}:\n{text}"
        );
        let line = format!("`{template}`: exposure {recorded:.1}");
        assert!(
            docs.contains(&line),
            "docs/systemd.md does not record {line:?}"
        );
    }
}

// -------------------------------------- (8) start limit; status is read-only

#[test]
fn systemd_permanent_failure_stops_at_start_limit() {
    let test = "systemd_permanent_failure_stops_at_start_limit";
    // A bridge that does not exist: every start fails before QEMU runs.
    let mut web = VmSpec::web("web", "10.99.0.2");
    web.bridge = "mcp-br9";
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    let _ = t.start(&web);
    let t0 = Instant::now();
    let limited = t.c.wait_until(Duration::from_secs(60), || {
        t.c.journal(&web.unit())
            .contains("Start request repeated too quickly")
    });
    let j = t.c.journal(&web.unit());
    assert!(
        limited,
        "no start limit after 60 s: {}\n{j}",
        props(&t, &web.unit(), &["ActiveState", "Result", "NRestarts"])
    );
    println!("{test}: start limit hit after {:?}", t0.elapsed());
    assert!(
        j.contains("mcp-br9"),
        "the reason is not in the journal:\n{j}"
    );
    assert!(
        j.contains("Scheduled restart job, restart counter is at 4"),
        "{j}"
    );
    let n = t.c.prop(&web.unit(), "NRestarts");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(t.c.prop(&web.unit(), "NRestarts"), n, "still restarting");
    assert_eq!(t.c.prop(&web.unit(), "ActiveState"), "failed");
}

#[test]
fn systemd_status_from_outside_never_removes_live_files() {
    let test = "systemd_status_from_outside_never_removes_live_files";
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    let before = t.runtime_files(&web);
    for f in ["launch.json", "qemu.pid", "qmp.sock"] {
        assert!(before.contains(f), "no {f} in the runtime dir:\n{before}");
    }
    // And a VM whose records are stale for sure: a copy of web's regular
    // files under another name (its pidfile names a QEMU that is not its).
    t.c.ok(&[
        "sh",
        "-c",
        "cd /run/mcp-unikernel/web && find . -type d -exec mkdir -p ../ghost/{} \\; \
         && find . -type f -exec cp -p {} ../ghost/{} \\;",
    ]);
    let ghost = VmSpec::web("ghost", "10.99.0.9");
    let ghost_before = t.runtime_files(&ghost);
    assert!(ghost_before.contains("launch.json"), "{ghost_before}");
    for args in [
        vec!["status", "web"],
        vec!["status", "web", "--json"],
        vec!["status", "ghost"],
        vec!["status"],
        vec!["list"],
        vec!["list", "--json"],
    ] {
        let mut argv = vec![HELPER_INSIDE];
        argv.extend(args);
        let _ = t.c.run(&argv);
        assert_eq!(
            t.runtime_files(&web),
            before,
            "{argv:?} changed the runtime dir"
        );
        assert_eq!(
            t.runtime_files(&ghost),
            ghost_before,
            "{argv:?} changed a stale VM's runtime dir (only start/cleanup may)"
        );
    }
    let st = t.status_json(&web);
    assert_eq!(
        st["running"], true,
        "status does not trust the running QEMU: {st}"
    );
    // And the unit still stops the guest the normal way.
    let (out, _) = t.stop(&web);
    assert!(out.status.success());
    let j = t.c.journal(&web.unit());
    assert!(j.contains("guest powered down"), "{j}");
}

// ------------------------------------------------------- user-mode network

/// A user-mode VM (QEMU's slirp, port forward on the host's loopback): the
/// template allows no IP sockets, its drop-in (units.nix userNetwork) does.
#[test]
fn systemd_user_mode_port_forward_serves_http() {
    let test = "systemd_user_mode_port_forward_serves_http";
    let mut web = VmSpec::web("web", "");
    web.user_port = Some(18080);
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.start_ok(&web);
    t.wait_http(&web);
    // It needed neither the rules nor the bridge.
    assert_eq!(t.c.prop(FIREWALL_UNIT, "ActiveState"), "inactive");
    let (out, _) = t.stop(&web);
    assert!(out.status.success());
    assert_eq!(t.c.prop(&web.unit(), "Result"), "success");
}

// ------------------------------------------------- rules unit, fail closed

/// The rules unit loads both tables and its stop removes them; a VM whose
/// rules fail to load does not start (no TAP, no QEMU).
#[test]
fn systemd_vm_never_runs_without_its_rules() {
    let test = "systemd_vm_never_runs_without_its_rules";
    let web = VmSpec::web("web", "10.99.0.2");
    let Some(t) = Tier::new(test, Kind::Standin, std::slice::from_ref(&web)) else {
        return;
    };
    t.c.ok(&["systemctl", "start", FIREWALL_UNIT]);
    let tables = t.c.ok(&["nft", "list", "tables"]);
    assert!(tables.contains("mcp-unikernel-host") && tables.contains("bridge mcp-unikernel"));
    t.c.ok(&["systemctl", "stop", FIREWALL_UNIT]);
    let tables = t.c.ok(&["nft", "list", "tables"]);
    assert!(
        !tables.contains("mcp-unikernel"),
        "tables left after stop: {tables}"
    );

    t.c.write(
        "/etc/mcp-unikernel/firewall.nft",
        "this is not nft syntax\n",
        0o644,
    );
    let out = t.start(&web);
    assert!(!out.status.success(), "the VM started without its rules");
    let settled = t.c.wait_until(Duration::from_secs(60), || {
        t.c.text(&["systemctl", "list-jobs", "--no-legend"])
            .trim()
            .is_empty()
    });
    assert!(
        settled,
        "jobs still queued: {}",
        t.c.text(&["systemctl", "list-jobs"])
    );
    assert_eq!(t.c.prop(FIREWALL_UNIT, "ActiveState"), "failed");
    let j = t.c.journal(&web.unit());
    assert!(j.contains("Dependency failed"), "{j}");
    assert!(!j.contains("Started mcp-unikernel@web.service"), "{j}");
    assert!(qemus(&t).is_empty(), "{:?}", qemus(&t));
    assert!(!t.c.text(&["ip", "-o", "link"]).contains("mcp-web"));
}

// ------------------------------------------------------------- units.nix

/// nixos/lib/units.nix refuses bad values, naming them (no container).
#[test]
fn systemd_units_nix_rejects_bad_values() {
    let test = "systemd_units_nix_rejects_bad_values";
    if std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(test, "nix-instantiate not found");
        return;
    }
    let lib = Path::new(common::container::ROOT).join("nixos/lib/units.nix");
    let eval = |args: &str| {
        std::process::Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--expr"])
            .arg(format!("import {} {{ {args} }}", lib.display()))
            .env(
                "NIX_CONFIG",
                "substituters =\nexperimental-features = nix-command flakes\nbuild-users-group =",
            )
            .output()
            .unwrap()
    };
    for (args, named) in [
        (r#"name = "Web";"#, "\"Web\""),
        (r#"name = "-web";"#, "\"-web\""),
        (
            r#"name = "web"; restart = "on-watchdog";"#,
            "\"on-watchdog\"",
        ),
        (r#"name = "web"; after = [ "mcp-br0" ];"#, "\"mcp-br0\""),
        (
            r#"name = "web"; requires = [ "a b.service" ];"#,
            "\"a b.service\"",
        ),
        (
            r#"name = "web"; bindsTo = [ "x.services" ];"#,
            "\"x.services\"",
        ),
        (
            r#"name = "web"; restartTriggers = [ "a\nb" ];"#,
            "\"a\\nb\"",
        ),
        (r#"name = "web"; stopTimeout = 0;"#, "0"),
    ] {
        let out = eval(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args} accepted");
        assert!(
            err.contains(named),
            "{args}: error does not name {named}: {err}"
        );
    }
    let out = eval(
        r#"name = "web"; stopTimeout = 10; buildTimeout = 60; buildNetwork = true; bindsTo = [ "sys-subsystem-net-devices-mcp\\x2dbr0.device" ];"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["vmUnit"], "mcp-unikernel@web.service");
    assert_eq!(v["buildUnit"], "mcp-unikernel-build@web.service");
    assert_eq!(
        v["vmDropin"],
        "[Unit]\nBindsTo=sys-subsystem-net-devices-mcp\\x2dbr0.device\n\
         After=sys-subsystem-net-devices-mcp\\x2dbr0.device\n\n\
         [Service]\nRestart=on-failure\nTimeoutStopSec=55\n"
    );
    assert_eq!(
        v["buildDropin"],
        "[Service]\nTimeoutStartSec=60\nPrivateNetwork=no\n"
    );
}
