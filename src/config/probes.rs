//! `readiness`, `health`, `credentials` and `credentials_target` (issue 14):
//! their schema and validation. The probe itself is src/probe.rs, the
//! credentials' staging src/credentials.rs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::validate::check_abs_clean;
use super::{invalid, Config, ConfigError, NetMode, Protocol};

/// When the VM counts as started: null = QEMU running (the default), or
/// once the guest answers this probe from the host side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// A TCP connection to this guest port is accepted.
    #[serde(default)]
    pub tcp: Option<u16>,
    /// An HTTP GET answers with the expected status.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// How long `wait-ready` waits for the first answer.
    #[serde(default = "default_ready_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
}

/// The readiness probe repeated every `interval_secs`; `failures`
/// consecutive failures restart the VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Limit of one probe.
    #[serde(default = "default_probe_timeout")]
    pub timeout_secs: u64,
}

fn default_ready_timeout() -> u64 {
    60
}
fn default_path() -> String {
    "/".into()
}
fn default_status() -> u16 {
    200
}
fn default_interval() -> u64 {
    10
}
fn default_failures() -> u32 {
    3
}
fn default_probe_timeout() -> u64 {
    5
}
pub(super) fn default_credentials_target() -> PathBuf {
    PathBuf::from("/run/secrets")
}

impl Readiness {
    /// The guest port the probe connects to.
    pub fn port(&self) -> u16 {
        match (&self.tcp, &self.http) {
            (Some(p), _) => *p,
            (None, Some(h)) => h.port,
            (None, None) => 0,
        }
    }
}

/// Most credentials one VM may have, and the largest one (systemd's own
/// limit for a credential is 1 MiB).
pub const MAX_CREDENTIALS: usize = 64;
pub const MAX_CREDENTIAL_BYTES: usize = 1024 * 1024;

/// A credential name: a file name in the guest dir and a systemd credential
/// id (`LoadCredential=ID:PATH`), so no `/`, `:`, whitespace or leading dot.
pub fn valid_credential_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_range(p: &Path, field: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&v) {
        return Ok(());
    }
    Err(invalid(
        p,
        field,
        &v.to_string(),
        &format!("must be between {lo} and {hi}"),
    ))
}

pub(super) fn check(p: &Path, c: &Config) -> Result<(), ConfigError> {
    if let Some(r) = &c.readiness {
        match (&r.tcp, &r.http) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    p,
                    "readiness",
                    "tcp and http",
                    "give one probe: `tcp` or `http`",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    p,
                    "readiness",
                    "{}",
                    "needs a probe: `tcp` (a port) or `http` ({port, path, expect_status})",
                ))
            }
            (Some(port), None) => check_range(p, "readiness.tcp", (*port).into(), 1, 65535)?,
            (None, Some(h)) => {
                check_range(p, "readiness.http.port", h.port.into(), 1, 65535)?;
                // It goes into the request line: visible ASCII, no spaces.
                let ok = h.path.starts_with('/')
                    && h.path.len() <= 1024
                    && h.path.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(invalid(
                        p,
                        "readiness.http.path",
                        &h.path,
                        "must start with / and hold visible ASCII only (no spaces), at most 1024 bytes",
                    ));
                }
                check_range(
                    p,
                    "readiness.http.expect_status",
                    h.expect_status.into(),
                    100,
                    599,
                )?;
            }
        }
        check_range(p, "readiness.timeout_secs", r.timeout_secs, 1, 3600)?;
        if c.network.mode == NetMode::User {
            let port = r.port();
            let fwd = c
                .network
                .ports
                .iter()
                .any(|f| f.guest == port && f.protocol == Protocol::Tcp);
            if !fwd {
                return Err(invalid(
                    p,
                    "readiness",
                    &port.to_string(),
                    "in user mode the probe goes through a port forward: network.ports needs one for this guest port (tcp)",
                ));
            }
        }
    }
    if let Some(h) = &c.health {
        if c.readiness.is_none() {
            return Err(invalid(
                p,
                "health",
                "set",
                "needs `readiness` (the probe it repeats)",
            ));
        }
        check_range(p, "health.interval_secs", h.interval_secs, 1, 86400)?;
        check_range(p, "health.failures", h.failures.into(), 1, 100)?;
        check_range(p, "health.timeout_secs", h.timeout_secs, 1, 300)?;
        if h.timeout_secs > h.interval_secs {
            return Err(invalid(
                p,
                "health.timeout_secs",
                &h.timeout_secs.to_string(),
                &format!(
                    "longer than health.interval_secs ({}): probes would overlap",
                    h.interval_secs
                ),
            ));
        }
    }
    check_credentials(p, c)
}

fn check_credentials(p: &Path, c: &Config) -> Result<(), ConfigError> {
    if c.credentials.len() > MAX_CREDENTIALS {
        return Err(invalid(
            p,
            "credentials",
            &c.credentials.len().to_string(),
            &format!("at most {MAX_CREDENTIALS} credentials"),
        ));
    }
    for (i, n) in c.credentials.iter().enumerate() {
        let field = format!("credentials[{i}]");
        if !valid_credential_name(n) {
            return Err(invalid(
                p,
                &field,
                n,
                "must match ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ with at most 64 characters (a file name and a systemd credential id)",
            ));
        }
        if c.credentials[..i].contains(n) {
            return Err(invalid(p, &field, n, "named twice"));
        }
    }
    let t = &c.credentials_target;
    let shown = t.display().to_string();
    check_abs_clean(p, "credentials_target", t)?;
    if t == Path::new("/") {
        return Err(invalid(
            p,
            "credentials_target",
            "/",
            "may not be the image root",
        ));
    }
    if t.starts_with(crate::opsconfig::RESERVED_GUEST_DIR) {
        return Err(invalid(
            p,
            "credentials_target",
            &shown,
            "is reserved for the helper",
        ));
    }
    if !c.credentials.is_empty() {
        for (j, v) in c.volumes.iter().enumerate() {
            if t.starts_with(&v.target) || v.target.starts_with(t) {
                return Err(invalid(
                    p,
                    "credentials_target",
                    &shown,
                    &format!(
                        "nested with volumes[{j}].target ({}): the credentials get a guest dir of their own",
                        v.target.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, parse};
    use serde_json::json;

    fn err(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut j = base();
        edit(&mut j);
        parse(&j.to_string()).unwrap_err().to_string()
    }

    #[test]
    fn probes_parse_with_defaults() {
        let mut j = base();
        j["readiness"] = json!({"http": {"port": 8080}});
        j["health"] = json!({});
        j["credentials"] = json!(["tls.key", "db_password"]);
        let v = parse(&j.to_string()).unwrap();
        let r = v.config.readiness.unwrap();
        assert_eq!(r.timeout_secs, 60);
        let h = r.http.unwrap();
        assert_eq!((h.port, h.path.as_str(), h.expect_status), (8080, "/", 200));
        let h = v.config.health.unwrap();
        assert_eq!((h.interval_secs, h.failures, h.timeout_secs), (10, 3, 5));
        assert_eq!(
            v.config.credentials_target,
            std::path::Path::new("/run/secrets")
        );
    }

    #[test]
    fn bad_probes_are_named() {
        for (edit, want) in [
            (json!({"readiness": {}}), "needs a probe"),
            (
                json!({"readiness": {"tcp": 80, "http": {"port": 80}}}),
                "give one probe",
            ),
            (json!({"readiness": {"tcp": 0}}), "readiness.tcp"),
            (
                json!({"readiness": {"http": {"port": 80, "path": "x"}}}),
                "readiness.http.path",
            ),
            (
                json!({"readiness": {"http": {"port": 80, "path": "/a b"}}}),
                "readiness.http.path",
            ),
            (
                json!({"readiness": {"http": {"port": 80, "expect_status": 99}}}),
                "expect_status",
            ),
            (
                json!({"readiness": {"tcp": 80, "timeout_secs": 0}}),
                "readiness.timeout_secs",
            ),
            (json!({"health": {}}), "needs `readiness`"),
            (
                json!({"readiness": {"tcp": 80}, "health": {"interval_secs": 2, "timeout_secs": 3}}),
                "probes would overlap",
            ),
            (
                json!({"readiness": {"tcp": 80}, "health": {"failures": 0}}),
                "health.failures",
            ),
            (json!({"credentials": ["a/b"]}), "credentials[0]"),
            (json!({"credentials": [".hidden"]}), "credentials[0]"),
            (json!({"credentials": ["a:b"]}), "credentials[0]"),
            (json!({"credentials": ["k", "k"]}), "named twice"),
            (
                json!({"credentials": ["k"], "credentials_target": "run/x"}),
                "absolute",
            ),
            (
                json!({"credentials": ["k"], "credentials_target": "/"}),
                "image root",
            ),
            (
                json!({"credentials": ["k"], "credentials_target": "/.mcp-unikernel/s"}),
                "reserved",
            ),
            (
                json!({"credentials": ["k"], "volumes": [{"source": "/tmp", "target": "/srv"}], "credentials_target": "/srv/secrets"}),
                "nested with volumes[0].target",
            ),
        ] {
            let e = err(|j| {
                for (k, v) in edit.as_object().unwrap() {
                    j[k] = v.clone();
                }
            });
            assert!(e.contains(want), "{edit}: {e}");
        }
    }

    #[test]
    fn user_mode_readiness_needs_a_forward() {
        let mut j = base();
        j["network"] = json!({"mode": "user", "ports": [{"host": 18080, "guest": 8080}]});
        j["readiness"] = json!({"tcp": 9090});
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("port forward"), "{e}");
        j["readiness"] = json!({"tcp": 8080});
        parse(&j.to_string()).unwrap();
    }
}
