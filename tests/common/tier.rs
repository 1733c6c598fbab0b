//! The systemd tier's setup for tests/systemd_ready.rs: a container
//! (container.rs) holding the shipped units (systemd/, placeholders
//! substituted), the drop-ins nixos/lib/units.nix renders for the test's
//! unikernels (as the NixOS module does on a container host: no device
//! BindsTo=), including the readiness, health, dependsOn and credentials
//! lines, the instance JSONs, the firewall files, a stand-in for NixOS's
//! bridge units and a system user per VM. The same shape as the tier in
//! tests/systemd_units.rs, with the issue-14 fields.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::container::{
    install_shipped_units, nix_eval, nix_str, prerequisites, Bind, Container, ROOT,
};
use super::netns::skip;
use super::vm;

pub const HELPER_INSIDE: &str = "/usr/local/bin/mcp-unikernel";
pub const NFT_INSIDE: &str = "/usr/sbin/nft";
pub const SYSTEMCTL_INSIDE: &str = "/usr/bin/systemctl";
pub const BOOT_LIMIT: Duration = Duration::from_secs(90);
pub const BRIDGE: &str = "mcp-br0";
pub const GATEWAY: &str = "10.99.0.1";
pub const NETDEV_UNIT: &str = "mcp-br0-netdev.service";
pub const ADDRESS_UNIT: &str = "network-addresses-mcp-br0.service";
pub const FIREWALL_UNIT: &str = "mcp-unikernel-firewall.service";
pub const ANCHOR_UNIT: &str = "mcp-test-anchor.service";

/// The helper under test (MCP_SYSTEMD_HELPER overrides it).
pub fn helper_bin() -> PathBuf {
    std::env::var_os("MCP_SYSTEMD_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(vm::BIN))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Standin,
    Nanos,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    /// examples/file-server: serves one file.
    FileServer,
    /// tests/net-probe: `GET /close` makes it stop answering.
    NetProbe,
}

#[derive(Clone, Debug)]
pub struct VmSpec {
    pub name: &'static str,
    pub ip: &'static str,
    pub program: Program,
    pub args: Vec<String>,
    pub restart: &'static str,
    pub stop_timeout: u32,
    /// The JSON `readiness` (e.g. `{"tcp": 8080, "timeout_secs": 30}`).
    pub readiness: Option<serde_json::Value>,
    /// (interval, failures, timeout) in seconds.
    pub health: Option<(u64, u32, u64)>,
    pub depends_on: Vec<&'static str>,
    /// (id, host path inside the container).
    pub credentials: Vec<(&'static str, String)>,
}

impl VmSpec {
    pub fn web(name: &'static str, ip: &'static str) -> VmSpec {
        VmSpec {
            name,
            ip,
            program: Program::FileServer,
            args: ["--listen", "0.0.0.0:8080", "--file", "/srv/www/index.html"]
                .map(String::from)
                .to_vec(),
            restart: "on-failure",
            stop_timeout: 20,
            readiness: None,
            health: None,
            depends_on: vec![],
            credentials: vec![],
        }
    }
    pub fn probe(name: &'static str, ip: &'static str) -> VmSpec {
        VmSpec {
            program: Program::NetProbe,
            args: ["--listen", "0.0.0.0:8080"].map(String::from).to_vec(),
            ..VmSpec::web(name, ip)
        }
    }
    pub fn args(mut self, args: &[&str]) -> VmSpec {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn unit(&self) -> String {
        format!("mcp-unikernel@{}.service", self.name)
    }
    pub fn build_unit(&self) -> String {
        format!("mcp-unikernel-build@{}.service", self.name)
    }
    pub fn health_unit(&self) -> String {
        format!("mcp-unikernel-health@{}.service", self.name)
    }
    pub fn health_timer(&self) -> String {
        format!("mcp-unikernel-health@{}.timer", self.name)
    }
    pub fn user(&self) -> String {
        format!("mcp-vm-{}", self.name)
    }
    pub fn content(&self) -> String {
        format!("hello from {} under systemd\n", self.name)
    }
    pub fn url(&self) -> String {
        format!("http://{}:8080/", self.ip)
    }
    fn readiness_timeout(&self) -> Option<u64> {
        self.readiness
            .as_ref()
            .map(|r| r["timeout_secs"].as_u64().unwrap_or(60))
    }
}

pub struct Tier {
    pub c: Container,
    pub kind: Kind,
    pub vms: Vec<VmSpec>,
    /// nixos/lib/credentials.nix's activation snippet for these VMs.
    pub activation_script: String,
}

fn artifacts(test: &str, kind: Kind) -> Option<Vec<Bind>> {
    let mut binds = vec![Bind::ro(helper_bin(), HELPER_INSIDE)];
    let probe = match vm::net_probe() {
        Ok(p) => p,
        Err(e) => {
            skip(test, &e);
            return None;
        }
    };
    binds.push(Bind::ro(probe, "/opt/mcp-test/net-probe"));
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
    Some(binds)
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

pub fn instance_json(kind: Kind, v: &VmSpec) -> serde_json::Value {
    let program = match v.program {
        Program::FileServer => "/opt/mcp-test/file-server",
        Program::NetProbe => "/opt/mcp-test/net-probe",
    };
    let mut cfg = serde_json::json!({
        "schema_version": 1,
        "name": v.name,
        "program": program,
        "args": v.args,
        "memory_mib": 128,
        "vcpus": 1,
        "accel": vm::accel(),
        "network": {
            "mode": "bridge", "bridge": BRIDGE, "ip": v.ip,
            "prefix_length": 24, "gateway": GATEWAY,
        },
        "volumes": [ { "source": format!("/srv/{}", v.name), "target": "/srv/www" } ],
        "qemu": "qemu-system-x86_64",
        "qemu_user": v.user(),
        "qemu_group": v.user(),
        "stop_timeout_secs": v.stop_timeout,
        "readiness": v.readiness,
        "health": v.health.map(|(i, f, t)| serde_json::json!({
            "interval_secs": i, "failures": f, "timeout_secs": t,
        })),
        // Names only, as the module writes them.
        "credentials": v.credentials.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "credentials_target": "/run/secrets",
    });
    match kind {
        Kind::Standin => {
            cfg["direct_boot"] = serde_json::json!({
                "kernel": "/opt/mcp-test/vmlinuz",
                "initrd": "/opt/mcp-test/initrd.cpio.gz",
                "append": "quiet",
            });
        }
        Kind::Nanos => {
            cfg["nanos_dir"] = "/opt/nanos".into();
            cfg["ops"] = "/usr/local/bin/ops".into();
        }
    }
    cfg
}

/// units.nix for each VM, nftables.nix and credentials.nix, in one
/// evaluation (the module's calls for a container host).
fn render(vms: &[VmSpec]) -> serde_json::Value {
    let lib = |f: &str| {
        Path::new(ROOT)
            .join("nixos/lib")
            .join(f)
            .display()
            .to_string()
    };
    let units: Vec<String> = vms
        .iter()
        .map(|v| {
            let readiness = match v.readiness_timeout() {
                Some(t) => format!("{{ timeout = {t}; address = {}; }}", nix_str(v.ip)),
                None => "null".into(),
            };
            let health = match v.health {
                Some((i, _, t)) => format!("{{ interval = {i}; timeout = {t}; }}"),
                None => "null".into(),
            };
            let deps: Vec<String> = v.depends_on.iter().map(|d| nix_str(d)).collect();
            let creds: Vec<String> = v
                .credentials
                .iter()
                .map(|(id, p)| format!("{} = {};", nix_str(id), nix_str(p)))
                .collect();
            format!(
                "{{ name = {n}; value = import {units} {{ name = {n}; restart = {r}; stopTimeout = {st}; \
                 restartTriggers = [ {json} ]; requires = [ {fw} {addr} ]; after = [ {netdev} ]; \
                 helper = {helper}; readiness = {readiness}; health = {health}; \
                 dependsOn = [ {deps} ]; credentials = {{ {creds} }}; }}; }}",
                n = nix_str(v.name),
                units = lib("units.nix"),
                r = nix_str(v.restart),
                st = v.stop_timeout,
                json = nix_str(&format!("/etc/mcp-unikernel/{}.json", v.name)),
                fw = nix_str(FIREWALL_UNIT),
                addr = nix_str(ADDRESS_UNIT),
                netdev = nix_str(NETDEV_UNIT),
                helper = nix_str(HELPER_INSIDE),
                deps = deps.join(" "),
                creds = creds.join(" "),
            )
        })
        .collect();
    let nft_vms: Vec<String> = vms
        .iter()
        .map(|v| {
            format!(
                "{{ name = {n}; tap = d.tapName {n}; ip = {}; mac = d.mac {n}; }}",
                nix_str(v.ip),
                n = nix_str(v.name)
            )
        })
        .collect();
    let creds: Vec<String> = vms
        .iter()
        .map(|v| {
            let c: Vec<String> = v
                .credentials
                .iter()
                .map(|(id, p)| format!("{} = {};", nix_str(id), nix_str(p)))
                .collect();
            format!("{} = {{ {} }};", nix_str(v.name), c.join(" "))
        })
        .collect();
    let expr = format!(
        "let d = import {derive}; n = import {nft} {{ bridge = {br}; gateway = {gw}; \
         prefixLength = 24; vms = [ {vms} ]; }}; in {{ units = builtins.listToAttrs [ {units} ]; \
         ruleset = n.ruleset; removal = n.removal; \
         activation = (import {credlib} {{ helper = {helper}; unikernels = {{ {creds} }}; }}).activationScript; }}",
        derive = lib("derive.nix"),
        nft = lib("nftables.nix"),
        credlib = lib("credentials.nix"),
        br = nix_str(BRIDGE),
        gw = nix_str(GATEWAY),
        vms = nft_vms.join(" "),
        units = units.join(" "),
        helper = nix_str(HELPER_INSIDE),
        creds = creds.join(" "),
    );
    nix_eval(&expr)
}

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
    pub fn new(test: &str, kind: Kind, vms: &[VmSpec]) -> Option<Tier> {
        let rootfs = prerequisites(test)?;
        let binds = artifacts(test, kind)?;
        let c = Container::boot(test, &rootfs, |dir| {
            let units = dir.join("units");
            let names = install_shipped_units(&units, HELPER_INSIDE, NFT_INSIDE);
            for u in [
                "mcp-unikernel-health@.service",
                "mcp-unikernel-health@.timer",
            ] {
                assert!(names.iter().any(|n| n == u), "{u} not shipped: {names:?}");
            }
            let mut b = vec![Bind::ro(units, "/usr/local/lib/systemd/system")];
            b.extend(binds);
            b
        });
        let r = render(vms);
        let mut t = Tier {
            c,
            kind,
            vms: vms.to_vec(),
            activation_script: r["activation"].as_str().unwrap().to_owned(),
        };
        t.configure(&r);
        Some(t)
    }

    fn configure(&mut self, r: &serde_json::Value) {
        let c = &self.c;
        if !c.run(&["getent", "group", "kvm"]).status.success() {
            c.ok(&["groupadd", "--system", "kvm"]);
        }
        let mut loaded = vec![FIREWALL_UNIT.to_owned()];
        let mut anchor_after = vec![];
        for v in &self.vms {
            let json = serde_json::to_string_pretty(&instance_json(self.kind, v)).unwrap();
            c.write(&format!("/etc/mcp-unikernel/{}.json", v.name), &json, 0o644);
            let u = &r["units"][v.name];
            let mut dropins = vec![
                (v.unit(), u["vmDropin"].clone()),
                (v.build_unit(), u["buildDropin"].clone()),
            ];
            loaded.extend([v.unit(), v.build_unit()]);
            anchor_after.extend([v.unit(), v.build_unit()]);
            if v.health.is_some() {
                dropins.push((v.health_unit(), u["healthDropin"].clone()));
                dropins.push((v.health_timer(), u["healthTimerDropin"].clone()));
                loaded.extend([v.health_unit(), v.health_timer()]);
                anchor_after.push(v.health_unit());
            }
            for (unit, text) in dropins {
                c.write(
                    &format!("/etc/systemd/system/{unit}.d/overrides.conf"),
                    text.as_str()
                        .unwrap_or_else(|| panic!("no drop-in text for {unit}")),
                    0o644,
                );
            }
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
            r["removal"].as_str().unwrap(),
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
        // Keeps the instances loaded (on NixOS the target's Wants= does).
        c.write(
            &format!("/etc/systemd/system/{ANCHOR_UNIT}"),
            &format!(
                "[Unit]\nDescription=Keeps the test's instances loaded\nAfter={}\n\n\
                 [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
                anchor_after.join(" ")
            ),
            0o644,
        );
        c.ok(&["systemctl", "daemon-reload"]);
        c.ok(&["systemctl", "start", ANCHOR_UNIT]);
        for unit in &loaded {
            assert_eq!(c.prop(unit, "LoadState"), "loaded", "{unit}");
        }
        let warnings = c.text(&["journalctl", "--no-pager", "-o", "cat", "-p", "warning"]);
        for line in warnings.lines() {
            assert!(
                !line.contains("/mcp-unikernel") && !line.contains("/mcp-br0"),
                "systemd complained about a unit file: {line}"
            );
        }
    }

    pub fn vm(&self, name: &str) -> &VmSpec {
        self.vms.iter().find(|v| v.name == name).unwrap()
    }

    /// `systemctl start UNIT` (blocking: waits for the start job).
    pub fn start(&self, v: &VmSpec) -> std::process::Output {
        self.c
            .run(&["timeout", "300", "systemctl", "start", &v.unit()])
    }

    pub fn start_ok(&self, v: &VmSpec) -> Duration {
        let t0 = Instant::now();
        let out = self.start(v);
        assert!(
            out.status.success(),
            "systemctl start {} failed: {}\n{}\n{}",
            v.unit(),
            String::from_utf8_lossy(&out.stderr),
            self.c.journal(&v.build_unit()),
            self.c.journal(&v.unit())
        );
        t0.elapsed()
    }

    /// Poll until `url` answers `want`.
    pub fn wait_http(&self, v: &VmSpec, url: &str, want: &str) -> Duration {
        let t0 = Instant::now();
        let served = self
            .c
            .wait_until(BOOT_LIMIT, || self.c.http_get(url).as_deref() == Some(want));
        assert!(
            served,
            "no {want:?} from {url} within {BOOT_LIMIT:?}; {}={}\n{}",
            v.unit(),
            self.c.prop(&v.unit(), "ActiveState"),
            self.c.journal(&v.unit())
        );
        t0.elapsed()
    }

    pub fn main_pid(&self, v: &VmSpec) -> i32 {
        self.c.prop(&v.unit(), "MainPID").parse().unwrap()
    }

    /// A monotonic timestamp property in µs.
    pub fn mono(&self, unit: &str, prop: &str) -> u64 {
        self.c.prop(unit, prop).parse().unwrap_or(0)
    }

    pub fn status_json(&self, v: &VmSpec) -> serde_json::Value {
        let out = self.c.ok(&[HELPER_INSIDE, "status", v.name, "--json"]);
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        all[0].clone()
    }

    pub fn stop(&self, v: &VmSpec) -> std::process::Output {
        self.c
            .run(&["timeout", "300", "systemctl", "stop", &v.unit()])
    }

    /// Every journal entry, all fields (what a reader of the journal sees).
    pub fn journal_export(&self) -> String {
        let out = self
            .c
            .run(&["journalctl", "--no-pager", "-o", "export", "--all"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// QEMU processes in the container.
pub fn qemus(t: &Tier) -> Vec<String> {
    t.c.text(&["ps", "-eo", "pid=,comm="])
        .lines()
        .filter(|l| l.contains("qemu-system"))
        .map(str::to_owned)
        .collect()
}
