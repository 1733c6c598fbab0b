//! Validation of everything but the network section and `ops_extra`: each
//! error names the field and the value. Values that later reach QEMU's argv,
//! the ops config or a file name are checked here, before anything is created.

use std::fs;
use std::path::{Component, Path};

use super::{invalid, network, ops_extra, Config, ConfigError, Validated, Volume, MAX_NAME_LEN};

pub(super) fn check_name(path: &Path, field: &str, name: &str) -> Result<(), ConfigError> {
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

/// A path the helper hands to QEMU, ops or the kernel: absolute, no `.`/`..`
/// components, no NUL, no control characters.
pub(super) fn check_abs_clean(path: &Path, field: &str, p: &Path) -> Result<(), ConfigError> {
    let shown = p.display().to_string();
    if !p.is_absolute() {
        return Err(invalid(path, field, &shown, "must be an absolute path"));
    }
    if shown.chars().any(|c| c.is_control()) {
        return Err(invalid(
            path,
            field,
            &shown,
            "contains a NUL byte or control character",
        ));
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

fn check_range(
    p: &Path,
    field: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        p,
        field,
        &value.to_string(),
        &format!("must be between {} and {}", range.start(), range.end()),
    ))
}

/// A user or group name as `useradd` accepts it (and NixOS, at most 32 chars).
fn check_account(p: &Path, field: &str, name: &str) -> Result<(), ConfigError> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let ok = !body.is_empty()
        && name.len() <= 32
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(invalid(
            p,
            field,
            name,
            "must match ^[a-z_][a-z0-9_-]*[$]?$ with at most 32 characters",
        ));
    }
    if name == "root" {
        return Err(invalid(p, field, name, "QEMU never runs as root"));
    }
    Ok(())
}

/// `ops` and `qemu`: an absolute path or a plain command name looked up on PATH.
fn check_command(p: &Path, field: &str, cmd: &str) -> Result<(), ConfigError> {
    if cmd.is_empty() || cmd.chars().any(|c| c.is_control()) {
        return Err(invalid(
            p,
            field,
            cmd,
            "must be a non-empty command name or absolute path",
        ));
    }
    if cmd.contains('/') {
        check_abs_clean(p, field, Path::new(cmd))?;
    }
    Ok(())
}

fn check_program(p: &Path, prog: &Path) -> Result<(), ConfigError> {
    let shown = prog.display().to_string();
    check_abs_clean(p, "program", prog)?;
    let meta = fs::metadata(prog)
        .map_err(|e| invalid(p, "program", &shown, &format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(invalid(p, "program", &shown, "not a regular file"));
    }
    match is_elf(prog) {
        Ok(true) => Ok(()),
        Ok(false) => Err(invalid(p, "program", &shown, "not an ELF file")),
        Err(e) => Err(invalid(p, "program", &shown, &format!("cannot read: {e}"))),
    }
}

pub(super) fn validate(path: &Path, config: Config) -> Result<Validated, ConfigError> {
    let p = path;
    if config.schema_version != super::SCHEMA_VERSION {
        return Err(invalid(
            p,
            "schema_version",
            &config.schema_version.to_string(),
            &format!("this helper reads schema version {}", super::SCHEMA_VERSION),
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
        (Some(prog), _) => check_program(p, prog)?,
        (None, Some(_)) => {}
    }
    if let Some(db) = &config.direct_boot {
        for (field, file) in [
            ("direct_boot.kernel", &db.kernel),
            ("direct_boot.initrd", &db.initrd),
        ] {
            check_abs_clean(p, field, file)?;
            if !file.is_file() {
                return Err(invalid(
                    p,
                    field,
                    &file.display().to_string(),
                    "not an existing file",
                ));
            }
        }
        if db.append.chars().any(|c| c.is_control()) {
            return Err(invalid(
                p,
                "direct_boot.append",
                &db.append,
                "contains a control character",
            ));
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
    check_range(p, "memory_mib", config.memory_mib.into(), 16..=1_048_576)?;
    check_range(p, "vcpus", config.vcpus.into(), 1..=64)?;
    check_range(p, "stop_timeout_secs", config.stop_timeout_secs, 1..=3600)?;
    check_range(
        p,
        "volume_limit_mib",
        config.volume_limit_mib,
        1..=16_777_216,
    )?;

    let net = network::validate_network(p, &config)?;
    validate_volumes(p, &config.volumes)?;

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
    // Nanos's ntp klib falls back to pool.ntp.org without servers.
    if let Some(i) = config.klibs.iter().position(|k| k == "ntp") {
        if config.network.ntp_servers.is_empty() {
            return Err(invalid(
                p,
                &format!("klibs[{i}]"),
                "ntp",
                "the ntp klib falls back to pool.ntp.org, which an isolated guest cannot reach; \
                 set network.ntp_servers to the gateway (and allow UDP 123 to it)",
            ));
        }
    }
    let ops_extra = ops_extra::check(p, &config.ops_extra)?;
    if let Some(dir) = &config.nanos_dir {
        check_abs_clean(p, "nanos_dir", dir)?;
        for f in ["kernel.img", "boot.img"] {
            if !dir.join(f).is_file() {
                return Err(invalid(
                    p,
                    "nanos_dir",
                    &dir.display().to_string(),
                    &format!("has no {f}"),
                ));
            }
        }
    }
    check_command(p, "ops", &config.ops)?;
    check_command(p, "qemu", &config.qemu)?;
    check_account(p, "qemu_user", &config.qemu_user)?;
    check_account(p, "qemu_group", &config.qemu_group)?;
    super::probes::check(p, &config)?;

    Ok(Validated {
        config,
        net,
        ops_extra,
        source: path.to_owned(),
    })
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
        // The build opens it without following symlinks; say so now.
        if let Err(crate::staging::StageError::SourceSymlink { reason, .. }) =
            crate::staging::check_source(i, &v.source)
        {
            return Err(invalid(
                p,
                &sf,
                &shown,
                &format!(
                    "{reason}; name the real path (the volume's owner could redirect a symlink)"
                ),
            ));
        }
        if v.target == Path::new("/") {
            return Err(invalid(p, &tf, "/", "may not be the image root"));
        }
        if v.target.starts_with(crate::opsconfig::RESERVED_GUEST_DIR) {
            return Err(invalid(
                p,
                &tf,
                &v.target.display().to_string(),
                &format!(
                    "{} is reserved for the helper",
                    crate::opsconfig::RESERVED_GUEST_DIR
                ),
            ));
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

#[cfg(test)]
mod tests {
    use super::super::tests::{base, parse};

    #[test]
    fn accounts_commands_and_paths_are_checked() {
        for (field, value, want) in [
            ("qemu_user", "root", "never runs as root"),
            ("qemu_user", "Bad User", "^[a-z_]"),
            ("qemu_group", "", "^[a-z_]"),
            ("ops", "bin/ops", "absolute"),
            ("qemu", "", "non-empty"),
            ("volume_limit_mib", "0", "between 1 and"),
        ] {
            let mut j = base();
            j[field] = if field == "volume_limit_mib" {
                0.into()
            } else {
                value.into()
            };
            let e = parse(&j.to_string()).unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains(want),
                "{field}={value}: {e}"
            );
        }
        let mut j = base();
        j["volumes"] = serde_json::json!([{"source": "/tmp", "target": "/srv/a\nb"}]);
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(
            e.contains("volumes[0].target") && e.contains("control"),
            "{e}"
        );
        j["volumes"] = serde_json::json!([{"source": "/tmp", "target": "/.mcp-unikernel/x"}]);
        let e = parse(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }
}
