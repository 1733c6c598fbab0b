//! `ops_extra`: extra ops configuration, as an ALLOWLIST. Everything the
//! helper sets itself (program, files, dirs, kernel, network, image name,
//! exit handling) and everything that would let ops read host paths outside
//! the staging tree (`TargetRoot`, `LocalFilesParentDirectory`, `MapDirs`,
//! `Files`, `Mounts`, `BuildDir` …) is refused, because only keys known to be
//! safe are accepted. ops reads JSON with Go's encoding/json, which matches
//! keys case-insensitively, so keys are compared that way and handed on in
//! ops's own spelling.

use std::path::Path;

use serde_json::{Map, Value};

use super::{invalid, ConfigError};

/// Top-level keys and what their value must look like.
const TOP_LEVEL: [(&str, Kind); 4] = [
    ("ManifestPassthrough", Kind::Passthrough),
    ("Debugflags", Kind::Words),
    ("NoTrace", Kind::Words),
    ("BaseVolumeSz", Kind::Size),
];

/// Nanos manifest options an operator may pass through: tracing, debugging
/// and memory-layout switches. Not: `program`, `arguments`, `environment`,
/// `children` (the file tree), `mounts`, `klibs`, network settings,
/// `debug_exit`/`expected_exit_code`/`reboot_on_exit`/`idle_on_exit` (the
/// exit-status contract), `telnet_mgmt`/`tracelog` (network services).
const PASSTHROUGH: [&str; 18] = [
    "consoles",
    "coredumplimit",
    "cwd",
    "debugsyscalls",
    "exec_protection",
    "fault",
    "futex_trace",
    "ingest_kernel_symbols",
    "log_level",
    "ltrace",
    "missing_files",
    "mmap_min_addr",
    "noaslr",
    "program_overwrite",
    "readonly_rootfs",
    "static_map_program",
    "syscall_summary",
    "transparent_hugepage",
];

#[derive(Clone, Copy)]
enum Kind {
    Passthrough,
    /// A list of `[a-z_][a-z0-9_]*` words (debug flags, syscall names).
    Words,
    /// An image size like `"512m"`.
    Size,
}

fn word(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.chars().any(|c| c.is_control()),
        Value::Bool(_) | Value::Number(_) => true,
        _ => false,
    }
}

/// Check `ops_extra` and return it with keys in ops's spelling.
pub(super) fn check(p: &Path, extra: &Value) -> Result<Map<String, Value>, ConfigError> {
    let Value::Object(map) = extra else {
        return Err(invalid(
            p,
            "ops_extra",
            &extra.to_string(),
            "must be a JSON object",
        ));
    };
    let mut out = Map::new();
    for (key, value) in map {
        let field = format!("ops_extra.{key}");
        let Some(&(canonical, kind)) = TOP_LEVEL.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))
        else {
            return Err(invalid(
                p,
                &field,
                &value.to_string(),
                &format!(
                    "not an allowed key (allowed: {})",
                    TOP_LEVEL.map(|(k, _)| k).join(", ")
                ),
            ));
        };
        if out.contains_key(canonical) {
            return Err(invalid(
                p,
                &field,
                &value.to_string(),
                &format!("{canonical} given twice (keys are case-insensitive)"),
            ));
        }
        let ok = match kind {
            Kind::Words => value
                .as_array()
                .is_some_and(|a| a.iter().all(|w| w.as_str().is_some_and(word))),
            Kind::Size => value.as_str().is_some_and(|s| {
                let digits = s.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            }),
            Kind::Passthrough => {
                let Value::Object(pt) = value else {
                    return Err(invalid(
                        p,
                        &field,
                        &value.to_string(),
                        "must be a JSON object",
                    ));
                };
                for (k, v) in pt {
                    if !PASSTHROUGH.contains(&k.as_str()) {
                        return Err(invalid(
                            p,
                            &format!("{field}.{k}"),
                            &v.to_string(),
                            &format!(
                                "not an allowed manifest option (allowed: {})",
                                PASSTHROUGH.join(", ")
                            ),
                        ));
                    }
                    if !scalar(v) {
                        return Err(invalid(
                            p,
                            &format!("{field}.{k}"),
                            &v.to_string(),
                            "must be a string, number or boolean",
                        ));
                    }
                }
                true
            }
        };
        if !ok {
            let want = match kind {
                Kind::Words => "must be a list of names matching ^[a-z_][a-z0-9_]*$",
                Kind::Size => "must be a size like \"512m\"",
                Kind::Passthrough => unreachable!(),
            };
            return Err(invalid(p, &field, &value.to_string(), want));
        }
        out.insert(canonical.to_owned(), value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base, parse};

    #[test]
    fn only_allowlisted_keys_pass_in_any_case() {
        for (extra, field) in [
            (
                serde_json::json!({"program": "/bin/evil"}),
                "ops_extra.program",
            ),
            (
                serde_json::json!({"TargetRoot": "/"}),
                "ops_extra.TargetRoot",
            ),
            (
                serde_json::json!({"LocalFilesParentDirectory": "/"}),
                "ops_extra.LocalFilesParentDirectory",
            ),
            (
                serde_json::json!({"BuildDir": "/tmp"}),
                "ops_extra.BuildDir",
            ),
            (
                serde_json::json!({"ProgramPath": "/x"}),
                "ops_extra.ProgramPath",
            ),
            (
                serde_json::json!({"Mounts": {"a": "/"}}),
                "ops_extra.Mounts",
            ),
            (
                serde_json::json!({"RunConfig": {"ImageName": "/etc/x"}}),
                "ops_extra.RunConfig",
            ),
            (
                serde_json::json!({"ManifestPassthrough": {"children": {}}}),
                "ops_extra.ManifestPassthrough.children",
            ),
            (
                serde_json::json!({"ManifestPassthrough": {"debug_exit": "f"}}),
                "ops_extra.ManifestPassthrough.debug_exit",
            ),
            (
                serde_json::json!({"manifestpassthrough": {"telnet_mgmt": "t"}}),
                "ops_extra.manifestpassthrough.telnet_mgmt",
            ),
            (
                serde_json::json!({"Debugflags": ["a b"]}),
                "ops_extra.Debugflags",
            ),
            (
                serde_json::json!({"BaseVolumeSz": "1x"}),
                "ops_extra.BaseVolumeSz",
            ),
        ] {
            let mut j = base();
            j["ops_extra"] = extra.clone();
            let e = parse(&j.to_string()).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{extra}: {e}");
        }
        let mut j = base();
        j["ops_extra"] = serde_json::json!({
            "manifestPassthrough": {"futex_trace": "t"},
            "debugflags": ["trace"],
            "BaseVolumeSz": "64m"
        });
        let v = parse(&j.to_string()).unwrap();
        assert_eq!(v.ops_extra["ManifestPassthrough"]["futex_trace"], "t");
        assert_eq!(v.ops_extra["Debugflags"][0], "trace");
        assert!(!v.ops_extra.contains_key("debugflags"));
    }
}
