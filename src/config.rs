//! The per-instance JSON config (schema version 1, see docs/config-schema.md):
//! parsing with unknown fields rejected, and validation that names the field
//! and the offending value.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::derive;

pub const SCHEMA_VERSION: u32 = 1;
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: field `{field}`: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("config {path}: field `{field}` = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    Bridge,
    User,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default = "default_host_address")]
    pub host_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_mode")]
    pub mode: NetMode,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix_length: u8,
    #[serde(default = "default_gateway")]
    pub gateway: String,
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub tap: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortForward>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            mode: default_mode(),
            bridge: default_bridge(),
            ip: None,
            prefix_length: default_prefix(),
            gateway: default_gateway(),
            nameservers: Vec::new(),
            tap: None,
            mac: None,
            ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// Test stand-in for a Nanos kernel: boot a Linux kernel directly with an
/// initramfs (see docs/config-schema.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    #[serde(default)]
    pub append: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub schema_version: u32,
    pub name: String,
    #[serde(default)]
    pub program: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    #[serde(default = "default_accel")]
    pub accel: Accel,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Most volume data (sum of apparent file sizes, all volumes) staged.
    #[serde(default = "default_volume_limit")]
    pub volume_limit_mib: u64,
    #[serde(default)]
    pub klibs: Vec<String>,
    #[serde(default = "empty_object")]
    pub ops_extra: serde_json::Value,
    #[serde(default)]
    pub nanos_dir: Option<PathBuf>,
    #[serde(default = "default_ops")]
    pub ops: String,
    #[serde(default = "default_qemu")]
    pub qemu: String,
    #[serde(default = "default_qemu_user")]
    pub qemu_user: String,
    #[serde(default = "default_qemu_user")]
    pub qemu_group: String,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_secs: u64,
    #[serde(default)]
    pub direct_boot: Option<DirectBoot>,
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn default_host_address() -> String {
    "127.0.0.1".into()
}
fn default_mode() -> NetMode {
    NetMode::Bridge
}
fn default_bridge() -> String {
    "mcp-br0".into()
}
fn default_prefix() -> u8 {
    24
}
fn default_gateway() -> String {
    "10.99.0.1".into()
}
fn default_memory() -> u32 {
    256
}
fn default_vcpus() -> u32 {
    1
}
fn default_volume_limit() -> u64 {
    4096
}
fn default_accel() -> Accel {
    Accel::Kvm
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
fn default_ops() -> String {
    "ops".into()
}
fn default_qemu() -> String {
    "qemu-system-x86_64".into()
}
fn default_qemu_user() -> String {
    "mcp-qemu".into()
}
fn default_stop_timeout() -> u64 {
    30
}

/// Network settings after validation, with derived values filled in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BridgeNet {
    pub bridge: String,
    pub ip: Ipv4Addr,
    pub prefix_length: u8,
    pub netmask: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub nameservers: Vec<Ipv4Addr>,
    pub tap: String,
    pub mac: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ResolvedNet {
    Bridge(BridgeNet),
    User { ports: Vec<ResolvedPort> },
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ResolvedPort {
    pub protocol: String,
    pub host_address: Ipv4Addr,
    pub host: u16,
    pub guest: u16,
}

/// A config that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub net: ResolvedNet,
    pub source: PathBuf,
}

impl Validated {
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Read and validate `<config_dir>/<name>.json`.
pub fn load_by_name(config_dir: &Path, name: &str) -> Result<Validated, ConfigError> {
    let path = config_dir.join(format!("{name}.json"));
    check_name(&path, "name (argument)", name)?;
    let v = load_file(&path)?;
    if v.config.name != name {
        return Err(invalid(
            &path,
            "name",
            &v.config.name,
            &format!("does not match the file name {name}.json"),
        ));
    }
    Ok(v)
}

/// Read and validate one config file.
pub fn load_file(path: &Path) -> Result<Validated, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_and_validate(path, &text)
}

pub fn parse_and_validate(path: &Path, text: &str) -> Result<Validated, ConfigError> {
    if !text.trim_start().starts_with('{') {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            field: "(top level)".into(),
            message: "a config is a JSON object".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Parse {
            path: path.to_owned(),
            field: if field == "." || field == "?" {
                "(top level)".into()
            } else {
                field
            },
            message: e.inner().to_string(),
        }
    })?;
    validate(path, config)
}

fn invalid(path: &Path, field: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        value: format!("{value:?}"),
        reason: reason.to_owned(),
    }
}

fn check_name(path: &Path, field: &str, name: &str) -> Result<(), ConfigError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok_chars || !first_ok {
        return Err(invalid(
            path,
            field,
            name,
            "must match ^[a-z0-9][a-z0-9-]*$",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(
            path,
            field,
            name,
            &format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("interface names have 1 to 15 characters");
    }
    if name == "." || name == ".." {
        return Err("not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("interface names may not contain '/', ':' or whitespace");
    }
    Ok(())
}

fn parse_ip(path: &Path, field: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    value
        .parse::<Ipv4Addr>()
        .map_err(|_| invalid(path, field, value, "not an IPv4 address"))
}

fn check_abs_clean(path: &Path, field: &str, p: &Path) -> Result<(), ConfigError> {
    let shown = p.display().to_string();
    if !p.is_absolute() {
        return Err(invalid(path, field, &shown, "must be an absolute path"));
    }
    if shown.contains('\0') {
        return Err(invalid(path, field, &shown, "contains a NUL byte"));
    }
    for c in p.components() {
        match c {
            Component::ParentDir => {
                return Err(invalid(path, field, &shown, "may not contain `..`"))
            }
            Component::CurDir => return Err(invalid(path, field, &shown, "may not contain `.`")),
            _ => {}
        }
    }
    // `components()` hides a trailing "/." and repeated slashes; reject those too.
    if shown.ends_with("/.") || shown.contains("/./") {
        return Err(invalid(path, field, &shown, "may not contain `.`"));
    }
    Ok(())
}

fn is_elf(p: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut f = fs::File::open(p)?;
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"\x7fELF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn validate(path: &Path, config: Config) -> Result<Validated, ConfigError> {
    let p = path;
    if config.schema_version != SCHEMA_VERSION {
        return Err(invalid(
            p,
            "schema_version",
            &config.schema_version.to_string(),
            &format!("this helper reads schema version {SCHEMA_VERSION}"),
        ));
    }
    check_name(p, "name", &config.name)?;

    match (&config.program, &config.direct_boot) {
        (None, None) => {
            return Err(invalid(
                p,
                "program",
                "null",
                "required (path to the ELF to run)",
            ))
        }
        (Some(prog), _) => {
            let shown = prog.display().to_string();
            if !prog.is_absolute() {
                return Err(invalid(p, "program", &shown, "must be an absolute path"));
            }
            let meta = fs::metadata(prog)
                .map_err(|e| invalid(p, "program", &shown, &format!("cannot stat: {e}")))?;
            if !meta.is_file() {
                return Err(invalid(p, "program", &shown, "not a regular file"));
            }
            match is_elf(prog) {
                Ok(true) => {}
                Ok(false) => return Err(invalid(p, "program", &shown, "not an ELF file")),
                Err(e) => return Err(invalid(p, "program", &shown, &format!("cannot read: {e}"))),
            }
        }
        (None, Some(_)) => {}
    }
    if let Some(db) = &config.direct_boot {
        for (field, file) in [
            ("direct_boot.kernel", &db.kernel),
            ("direct_boot.initrd", &db.initrd),
        ] {
            let shown = file.display().to_string();
            if !file.is_absolute() {
                return Err(invalid(p, field, &shown, "must be an absolute path"));
            }
            if !file.is_file() {
                return Err(invalid(p, field, &shown, "not an existing file"));
            }
        }
    }

    for (i, a) in config.args.iter().enumerate() {
        if a.contains('\0') {
            return Err(invalid(p, &format!("args[{i}]"), a, "contains a NUL byte"));
        }
    }
    for (k, v) in &config.env {
        let key_ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(invalid(
                p,
                &format!("env.{k}"),
                k,
                "environment names must match ^[A-Za-z_][A-Za-z0-9_]*$",
            ));
        }
        if v.contains('\0') || v.contains('\n') {
            return Err(invalid(
                p,
                &format!("env.{k}"),
                v,
                "contains a NUL byte or newline",
            ));
        }
    }
    if !(16..=1_048_576).contains(&config.memory_mib) {
        return Err(invalid(
            p,
            "memory_mib",
            &config.memory_mib.to_string(),
            "must be between 16 and 1048576",
        ));
    }
    if !(1..=64).contains(&config.vcpus) {
        return Err(invalid(
            p,
            "vcpus",
            &config.vcpus.to_string(),
            "must be between 1 and 64",
        ));
    }
    if !(1..=3600).contains(&config.stop_timeout_secs) {
        return Err(invalid(
            p,
            "stop_timeout_secs",
            &config.stop_timeout_secs.to_string(),
            "must be between 1 and 3600",
        ));
    }

    let net = validate_network(p, &config)?;
    validate_volumes(p, &config.volumes)?;
    if !(1..=16_777_216).contains(&config.volume_limit_mib) {
        return Err(invalid(
            p,
            "volume_limit_mib",
            &config.volume_limit_mib.to_string(),
            "must be between 1 and 16777216",
        ));
    }

    for (i, k) in config.klibs.iter().enumerate() {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                p,
                &format!("klibs[{i}]"),
                k,
                "klib names must match ^[a-z0-9_]+$",
            ));
        }
    }
    match &config.ops_extra {
        serde_json::Value::Object(map) => {
            // ops reads JSON with Go's encoding/json, which matches keys
            // case-insensitively: compare the same way.
            const FORBIDDEN: [&str; 8] = [
                "Dirs",
                "Program",
                "Kernel",
                "Boot",
                "MapDirs",
                "Files",
                "KlibDir",
                "NanosVersion",
            ];
            for (key, value) in map {
                if FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    return Err(invalid(
                        p,
                        &format!("ops_extra.{key}"),
                        &value.to_string(),
                        "is set by the helper and may not be overridden",
                    ));
                }
            }
        }
        other => {
            return Err(invalid(
                p,
                "ops_extra",
                &other.to_string(),
                "must be a JSON object",
            ))
        }
    }
    if let Some(dir) = &config.nanos_dir {
        let shown = dir.display().to_string();
        if !dir.is_absolute() {
            return Err(invalid(p, "nanos_dir", &shown, "must be an absolute path"));
        }
        for f in ["kernel.img", "boot.img"] {
            if !dir.join(f).is_file() {
                return Err(invalid(p, "nanos_dir", &shown, &format!("has no {f}")));
            }
        }
    }
    for (field, value) in [
        ("ops", &config.ops),
        ("qemu", &config.qemu),
        ("qemu_user", &config.qemu_user),
        ("qemu_group", &config.qemu_group),
    ] {
        if value.is_empty() || value.contains('\0') {
            return Err(invalid(p, field, value, "must be a non-empty string"));
        }
    }

    Ok(Validated {
        config,
        net,
        source: path.to_owned(),
    })
}

fn validate_network(p: &Path, config: &Config) -> Result<ResolvedNet, ConfigError> {
    let n = &config.network;
    match n.mode {
        NetMode::User => {
            if let Some(ip) = &n.ip {
                return Err(invalid(
                    p,
                    "network.ip",
                    ip,
                    "only allowed with network.mode = \"bridge\"",
                ));
            }
            for (field, v) in [("network.tap", &n.tap), ("network.mac", &n.mac)] {
                if let Some(v) = v {
                    return Err(invalid(
                        p,
                        field,
                        v,
                        "only allowed with network.mode = \"bridge\"",
                    ));
                }
            }
            let mut ports = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for (i, f) in n.ports.iter().enumerate() {
                let addr = parse_ip(
                    p,
                    &format!("network.ports[{i}].host_address"),
                    &f.host_address,
                )?;
                if f.host == 0 || f.guest == 0 {
                    return Err(invalid(
                        p,
                        &format!("network.ports[{i}]"),
                        &format!("{}:{}", f.host, f.guest),
                        "ports must be between 1 and 65535",
                    ));
                }
                let proto = match f.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                if !seen.insert((proto, f.host)) {
                    return Err(invalid(
                        p,
                        &format!("network.ports[{i}].host"),
                        &f.host.to_string(),
                        &format!("host {proto} port forwarded twice"),
                    ));
                }
                ports.push(ResolvedPort {
                    protocol: proto.into(),
                    host_address: addr,
                    host: f.host,
                    guest: f.guest,
                });
            }
            Ok(ResolvedNet::User { ports })
        }
        NetMode::Bridge => {
            if !n.ports.is_empty() {
                return Err(invalid(
                    p,
                    "network.ports",
                    &format!("{} forward(s)", n.ports.len()),
                    "port forwards need network.mode = \"user\"; in bridge mode the VM is reached at its IP",
                ));
            }
            check_ifname(&n.bridge).map_err(|r| invalid(p, "network.bridge", &n.bridge, r))?;
            if !(1..=30).contains(&n.prefix_length) {
                return Err(invalid(
                    p,
                    "network.prefix_length",
                    &n.prefix_length.to_string(),
                    "must be between 1 and 30",
                ));
            }
            let gateway = parse_ip(p, "network.gateway", &n.gateway)?;
            let ip_str = n.ip.as_deref().ok_or_else(|| {
                invalid(
                    p,
                    "network.ip",
                    "null",
                    "required with network.mode = \"bridge\"",
                )
            })?;
            let ip = parse_ip(p, "network.ip", ip_str)?;
            let mask = derive::netmask(n.prefix_length);
            let net_of = |a: Ipv4Addr| u32::from(a) & u32::from(mask);
            if net_of(gateway) != net_of(ip) {
                return Err(invalid(
                    p,
                    "network.ip",
                    ip_str,
                    &format!(
                        "outside the bridge subnet {}/{}",
                        Ipv4Addr::from(net_of(gateway)),
                        n.prefix_length
                    ),
                ));
            }
            let host_bits = u32::from(ip) & !u32::from(mask);
            if host_bits == 0 {
                return Err(invalid(p, "network.ip", ip_str, "is the network address"));
            }
            if host_bits == !u32::from(mask) {
                return Err(invalid(p, "network.ip", ip_str, "is the broadcast address"));
            }
            if ip == gateway {
                return Err(invalid(
                    p,
                    "network.ip",
                    ip_str,
                    "equals the gateway (the host's bridge address)",
                ));
            }
            let gw_bits = u32::from(gateway) & !u32::from(mask);
            if gw_bits == 0 || gw_bits == !u32::from(mask) {
                return Err(invalid(
                    p,
                    "network.gateway",
                    &n.gateway,
                    "is the network or broadcast address",
                ));
            }
            let mut nameservers = Vec::new();
            for (i, s) in n.nameservers.iter().enumerate() {
                nameservers.push(parse_ip(p, &format!("network.nameservers[{i}]"), s)?);
            }
            let tap = match &n.tap {
                Some(t) => {
                    check_ifname(t).map_err(|r| invalid(p, "network.tap", t, r))?;
                    t.clone()
                }
                None => derive::tap_name(&config.name),
            };
            if tap == n.bridge {
                return Err(invalid(p, "network.tap", &tap, "equals the bridge name"));
            }
            let mac = match &n.mac {
                Some(m) => {
                    derive::check_mac(m).map_err(|r| invalid(p, "network.mac", m, r))?;
                    m.to_ascii_lowercase()
                }
                None => derive::mac(&config.name),
            };
            Ok(ResolvedNet::Bridge(BridgeNet {
                bridge: n.bridge.clone(),
                ip,
                prefix_length: n.prefix_length,
                netmask: mask,
                gateway,
                nameservers,
                tap,
                mac,
            }))
        }
    }
}

fn validate_volumes(p: &Path, volumes: &[Volume]) -> Result<(), ConfigError> {
    for (i, v) in volumes.iter().enumerate() {
        let sf = format!("volumes[{i}].source");
        let tf = format!("volumes[{i}].target");
        check_abs_clean(p, &sf, &v.source)?;
        check_abs_clean(p, &tf, &v.target)?;
        let shown = v.source.display().to_string();
        let meta = fs::metadata(&v.source)
            .map_err(|e| invalid(p, &sf, &shown, &format!("cannot stat: {e}")))?;
        if !meta.is_dir() {
            return Err(invalid(p, &sf, &shown, "not a directory"));
        }
        if v.target == Path::new("/") {
            return Err(invalid(p, &tf, "/", "may not be the image root"));
        }
        for (j, w) in volumes.iter().enumerate().take(i) {
            if w.target == v.target {
                return Err(invalid(
                    p,
                    &tf,
                    &v.target.display().to_string(),
                    &format!("same target as volumes[{j}]"),
                ));
            }
            if v.target.starts_with(&w.target) || w.target.starts_with(&v.target) {
                return Err(invalid(
                    p,
                    &tf,
                    &v.target.display().to_string(),
                    &format!("nested with the target of volumes[{j}]"),
                ));
            }
        }
    }
    Ok(())
}

/// Refuse a VM whose IP or TAP name is also declared by another config in
/// the same directory (the NixOS module asserts the same at build time).
pub fn check_conflicts(config_dir: &Path, v: &Validated) -> Result<(), ConfigError> {
    let ResolvedNet::Bridge(mine) = &v.net else {
        return Ok(());
    };
    let Ok(entries) = fs::read_dir(config_dir) else {
        return Ok(());
    };
    let mut others: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && *p != v.source)
        .collect();
    others.sort();
    for other in others {
        // Only the fields that can collide are read; a broken neighbour is its
        // own problem and reported when it starts.
        let Ok(text) = fs::read_to_string(&other) else {
            continue;
        };
        let Ok(raw) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let net = &raw["network"];
        if net["mode"].as_str().unwrap_or("bridge") != "bridge" {
            continue;
        }
        let name = raw["name"].as_str().unwrap_or_default();
        if name == v.config.name {
            continue;
        }
        if net["ip"].as_str() == Some(mine.ip.to_string().as_str()) {
            return Err(invalid(
                &v.source,
                "network.ip",
                &mine.ip.to_string(),
                &format!("also used by {} ({})", name, other.display()),
            ));
        }
        let their_tap = net["tap"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| derive::tap_name(name));
        if !name.is_empty() && their_tap == mine.tap {
            return Err(invalid(
                &v.source,
                "network.tap",
                &mine.tap,
                &format!("also used by {} ({})", name, other.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Validated, ConfigError> {
        parse_and_validate(Path::new("t.json"), json)
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "name": "web",
            "program": "/bin/sh",
            "network": { "ip": "10.99.0.2" }
        })
    }

    #[test]
    fn minimal_config_gets_defaults_and_derived_values() {
        let v = parse(&base().to_string()).unwrap();
        assert_eq!(v.config.memory_mib, 256);
        assert_eq!(v.config.accel, Accel::Kvm);
        match v.net {
            ResolvedNet::Bridge(b) => {
                assert_eq!(b.tap, "mcp-web");
                assert_eq!(b.netmask, Ipv4Addr::new(255, 255, 255, 0));
                assert_eq!(b.gateway, Ipv4Addr::new(10, 99, 0, 1));
                assert!(b.mac.starts_with("02:"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_nested_field_is_named_with_its_path() {
        let mut j = base();
        j["network"]["speed"] = 10.into();
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("network"), "{e}");
        assert!(e.contains("speed"), "{e}");
    }

    #[test]
    fn user_mode_rejects_bridge_only_settings() {
        let mut j = base();
        j["network"]["mode"] = "user".into();
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("network.ip") && e.contains("10.99.0.2"), "{e}");
    }

    #[test]
    fn user_mode_with_ports() {
        let mut j = base();
        j["network"] = serde_json::json!({"mode": "user", "ports": [{"host": 8080, "guest": 80}]});
        let v = parse(&j.to_string()).unwrap();
        assert_eq!(
            v.net,
            ResolvedNet::User {
                ports: vec![ResolvedPort {
                    protocol: "tcp".into(),
                    host_address: Ipv4Addr::LOCALHOST,
                    host: 8080,
                    guest: 80
                }]
            }
        );
    }

    #[test]
    fn ops_extra_overrides_are_refused_in_any_case_and_arrays_are_not_configs() {
        let mut j = base();
        j["ops_extra"] = serde_json::json!({"program": "/bin/evil"});
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("ops_extra.program"), "{e}");
        let e = parse(r#"[1,"web","/bin/true"]"#).unwrap_err().to_string();
        assert!(e.contains("(top level)"), "{e}");
        let e = parse(r#"{"schema_version":1,"name":"web""#)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("`?`"), "{e}");
    }

    #[test]
    fn nested_volume_targets_are_refused() {
        let mut j = base();
        j["volumes"] = serde_json::json!([
            {"source": "/tmp", "target": "/srv"},
            {"source": "/tmp", "target": "/srv/x"}
        ]);
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(
            e.contains("volumes[1].target") && e.contains("/srv/x"),
            "{e}"
        );
    }

    #[test]
    fn small_subnet_edges() {
        let mut j = base();
        j["network"] = serde_json::json!({"ip": "10.99.0.255", "prefix_length": 24});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("broadcast"));
        j["network"] = serde_json::json!({"ip": "10.99.0.0"});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("network address"));
        j["network"] = serde_json::json!({"ip": "10.98.0.5"});
        assert!(parse(&j.to_string())
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }
}
