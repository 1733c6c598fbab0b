//! The per-instance JSON config (schema version 1, see docs/config-schema.md):
//! the schema (this file), parsing with unknown fields rejected, and
//! validation that names the field and the offending value (`validate`,
//! `network`, `ops_extra`, `conflicts`).

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod conflicts;
mod network;
mod ops_extra;
mod probes;
mod validate;

pub use conflicts::check_conflicts;
pub use network::{check_bridge_name, check_tap_name};
pub use probes::{
    valid_credential_name, Health, HttpProbe, Readiness, MAX_CREDENTIALS, MAX_CREDENTIAL_BYTES,
};

pub const SCHEMA_VERSION: u32 = 1;
pub const MAX_NAME_LEN: usize = 64;
pub const MIB: u64 = 1024 * 1024;

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
    /// The guest's resolvers: exactly these (its /etc/resolv.conf), none
    /// when empty — never ops's default 8.8.8.8.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Servers of the Nanos `ntp` klib (`ntp_servers`); required with it.
    #[serde(default)]
    pub ntp_servers: Vec<String>,
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
            ntp_servers: Vec::new(),
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
    /// The most volume data (sum of apparent file sizes, MiB) this VM may stage.
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
    /// What `gc` does with the VM's state once its config is gone.
    #[serde(default)]
    pub on_remove: OnRemove,
    /// When the VM counts as started (src/probe.rs); null: QEMU running.
    #[serde(default)]
    pub readiness: Option<Readiness>,
    /// The readiness probe repeated by the health timer.
    #[serde(default)]
    pub health: Option<Health>,
    /// Names of the systemd credentials the build unit loads (never their
    /// content or host paths), staged into `credentials_target`.
    #[serde(default)]
    pub credentials: Vec<String>,
    #[serde(default = "probes::default_credentials_target")]
    pub credentials_target: PathBuf,
}

/// `on_remove`: keep the state dir of a removed VM, or purge it (state dir,
/// runtime dir, TAP) at the next `gc` (src/commands/purge.rs).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnRemove {
    #[default]
    Keep,
    Purge,
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
fn default_accel() -> Accel {
    Accel::Kvm
}
fn default_volume_limit() -> u64 {
    4096
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
    pub ntp_servers: Vec<Ipv4Addr>,
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
    /// `ops_extra` after the allowlist, keys in ops's own spelling.
    pub ops_extra: serde_json::Map<String, serde_json::Value>,
    pub source: PathBuf,
}

impl Validated {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn volume_limit_bytes(&self) -> u64 {
        self.config.volume_limit_mib.saturating_mul(MIB)
    }

    /// The TAP, when the VM is on the bridge.
    pub fn tap(&self) -> Option<&str> {
        match &self.net {
            ResolvedNet::Bridge(b) => Some(&b.tap),
            ResolvedNet::User { .. } => None,
        }
    }
}

/// A VM name given on the command line (it becomes a path component).
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    validate::check_name(Path::new("(command line)"), "name (argument)", name)
}

/// Read and validate `<config_dir>/<name>.json`.
pub fn load_by_name(config_dir: &Path, name: &str) -> Result<Validated, ConfigError> {
    let path = config_dir.join(format!("{name}.json"));
    validate::check_name(&path, "name (argument)", name)?;
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
    validate::validate(path, config)
}

pub(crate) fn invalid(path: &Path, field: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        field: field.to_owned(),
        value: format!("{value:?}"),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn parse(json: &str) -> Result<Validated, ConfigError> {
        parse_and_validate(Path::new("t.json"), json)
    }

    pub(crate) fn base() -> serde_json::Value {
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
        assert_eq!(v.volume_limit_bytes(), 4096 * MIB);
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
    fn arrays_and_truncated_json_are_not_configs() {
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
}
