//! Credentials through the real helper, as the build unit runs it (its
//! `$CREDENTIALS_DIRECTORY` here a root-only dir the test fills, as systemd
//! would): where the secret ends up (the stand-in's cpio with mode 0400, the
//! image real `ops` builds), that it is never printed, that a changed
//! content rebuilds and an unchanged one does not, and that a credential
//! that is a symlink, a FIFO, too large, missing on the host, or a VM group
//! shared with another account is refused with one line. The systemd tier
//! (tests/systemd_ready.rs) runs the same under the real units.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::netns;
use common::opsimage::{ops_image, placeholder_nanos, text};
use common::vm::{self, Sandbox};

const SECRET: &str = "mcp-test-secret-3b8e1f0c9a7d";

/// A root-only credentials dir holding `tls.key`.
fn cred_dir(sb: &Sandbox, content: &[u8]) -> PathBuf {
    let d = sb.root.join("creds");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(d.join("tls.key"), content).unwrap();
    fs::set_permissions(d.join("tls.key"), fs::Permissions::from_mode(0o400)).unwrap();
    d
}

fn build(sb: &Sandbox, creds: Option<&Path>) -> Output {
    let mut c = sb.cmd(None, &["build", "web"]);
    match creds {
        Some(d) => c.env("CREDENTIALS_DIRECTORY", d),
        None => c.env_remove("CREDENTIALS_DIRECTORY"),
    };
    c.output().unwrap()
}

fn standin_config(sb: &Sandbox, test: &str) -> Option<serde_json::Value> {
    if !netns::require_root_or_skip(test) {
        return None;
    }
    let g = match vm::standin_guest() {
        Ok(g) => g,
        Err(e) => {
            netns::skip(test, &e);
            return None;
        }
    };
    if vm::qemu_user().is_none() {
        netns::skip(test, "no mcp-qemu user (.ci/run creates it)");
        return None;
    }
    let vol = sb.root.join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "hi\n").unwrap();
    let mut cfg = vm::Guest::Standin(g).config("web", "10.99.0.2", &vol);
    cfg["credentials"] = serde_json::json!(["tls.key"]);
    Some(cfg)
}

/// (mode, data) of the newc cpio entry `name` in the stand-in's initrd (the
/// last one: the helper's cpio follows the base initramfs).
fn cpio_entry(img: &[u8], name: &str) -> Option<(u32, Vec<u8>)> {
    let needle = format!("{name}\0");
    let at = img
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())?;
    let hdr = &img[at - 110..at];
    assert_eq!(&hdr[..6], b"070701", "not a newc header before {name}");
    let field = |i: usize| {
        u32::from_str_radix(
            std::str::from_utf8(&hdr[6 + 8 * i..14 + 8 * i]).unwrap(),
            16,
        )
        .unwrap()
    };
    let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
    let data_at = (at - 110 + 110 + namesize).div_ceil(4) * 4;
    Some((mode, img[data_at..data_at + size].to_vec()))
}

fn out_has_no_secret(o: &Output, secret: &str) {
    assert!(
        !text(o).contains(secret),
        "the secret was printed:\n{}",
        text(o)
    );
}

#[test]
fn credentials_reach_the_standin_image_at_mode_0400_and_a_change_rebuilds() {
    let test = "credentials_reach_the_standin_image_at_mode_0400_and_a_change_rebuilds";
    let sb = Sandbox::new("creds-si");
    let Some(cfg) = standin_config(&sb, test) else {
        return;
    };
    sb.write_config("web", &cfg);
    let creds = cred_dir(&sb, SECRET.as_bytes());
    let out = build(&sb, Some(&creds));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(built)"), "{}", text(&out));
    out_has_no_secret(&out, SECRET);
    let img_path = sb.state_dir.join("web/image/initrd.img");
    let img = fs::read(&img_path).unwrap();
    let (mode, data) =
        cpio_entry(&img, "run/secrets/tls.key").expect("no run/secrets/tls.key in the cpio");
    assert_eq!(mode, 0o100400, "mode {mode:o} in the guest");
    assert_eq!(data, SECRET.as_bytes());
    let (dmode, _) = cpio_entry(&img, "run/secrets").unwrap();
    assert_eq!(dmode, 0o040700, "the guest dir is {dmode:o}");
    // The image holding it: root-owned, the VM's group, nobody else.
    let m = fs::metadata(&img_path).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o640));
    // The helper's own files: root 0600, and neither holds the secret.
    for f in ["credentials.key", "credentials.json"] {
        let p = sb.state_dir.join("web").join(f);
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600), "{f}");
        assert!(!fs::read(&p)
            .unwrap()
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes()));
    }
    let rec = fs::read_to_string(sb.state_dir.join("web/credentials.json")).unwrap();
    assert!(rec.contains("\"tls.key\""), "{rec}");
    // Same content: nothing to build. New content: rebuilt, new bytes baked.
    let creds = cred_dir(&sb, SECRET.as_bytes());
    let out = build(&sb, Some(&creds));
    assert!(text(&out).contains("not rebuilt"), "{}", text(&out));
    let creds = cred_dir(&sb, b"rotated secret");
    let out = build(&sb, Some(&creds));
    assert!(
        text(&out).contains("(built)"),
        "a changed credential did not rebuild: {}",
        text(&out)
    );
    out_has_no_secret(&out, "rotated secret");
    let img = fs::read(&img_path).unwrap();
    assert_eq!(
        cpio_entry(&img, "run/secrets/tls.key").unwrap().1,
        b"rotated secret"
    );
    assert!(
        !img.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the old secret is still in the image"
    );
}

#[test]
fn credentials_reach_the_nanos_image_built_by_ops() {
    let test = "credentials_reach_the_nanos_image_built_by_ops";
    if !netns::require_root_or_skip(test) {
        return;
    }
    let (ops, program) = match (vm::ops(), vm::file_server()) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(e), _) | (_, Err(e)) => {
            netns::skip(test, &e);
            return;
        }
    };
    let sb = Sandbox::new("creds-ops");
    let nanos = sb.root.join("nanos-placeholder");
    placeholder_nanos(&nanos);
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "hi\n").unwrap();
    sb.write_config(
        "web",
        &serde_json::json!({
            "schema_version": 1, "name": "web", "program": program,
            "args": ["--file", "/etc/tls/tls.key"],
            "network": { "ip": "10.99.0.2" },
            "volumes": [ { "source": vol, "target": "/srv/www" } ],
            "nanos_dir": nanos, "ops": ops, "accel": "tcg",
            "credentials": ["tls.key"], "credentials_target": "/etc/tls",
        }),
    );
    let creds = cred_dir(&sb, SECRET.as_bytes());
    let out = build(&sb, Some(&creds));
    assert!(out.status.success(), "{}", text(&out));
    out_has_no_secret(&out, SECRET);
    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/etc/tls/tls.key"]);
    assert!(
        text(&cat).contains(SECRET),
        "not in the image: {}",
        text(&cat)
    );
    // The staged copy ops read: root, the VM's group, 0440; dir 0750.
    let staged = sb.state_dir.join("web/staging/etc/tls/tls.key");
    let m = fs::symlink_metadata(&staged).unwrap();
    let gid = nix::unistd::Group::from_name("mcp-qemu")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, gid, 0o440),
        "{}",
        staged.display()
    );
    let d = fs::metadata(staged.parent().unwrap()).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o750);
}

#[test]
fn credential_files_that_are_not_plain_are_refused_with_one_line() {
    let test = "credential_files_that_are_not_plain_are_refused_with_one_line";
    let sb = Sandbox::new("creds-bad");
    let Some(cfg) = standin_config(&sb, test) else {
        return;
    };
    sb.write_config("web", &cfg);
    fs::write(sb.root.join("root-only"), "root only\n").unwrap();
    type Prep = fn(&Path, &Path);
    let cases: [(&str, Prep, &str); 6] = [
        (
            "symlink",
            |d, root| {
                fs::remove_file(d.join("tls.key")).unwrap();
                symlink(root.join("root-only"), d.join("tls.key")).unwrap();
            },
            "credential tls.key: is a symlink",
        ),
        (
            "fifo",
            |d, _| {
                fs::remove_file(d.join("tls.key")).unwrap();
                nix::unistd::mkfifo(
                    &d.join("tls.key"),
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                )
                .unwrap();
            },
            "credential tls.key: is not a regular file",
        ),
        (
            "too large",
            |d, _| {
                fs::write(d.join("tls.key"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
            },
            "credential tls.key: is larger than 1048576 bytes",
        ),
        (
            "missing on the host",
            |d, _| {
                fs::write(
                    d.join("tls.key"),
                    "mcp-unikernel: credential file missing: /run/secrets/gone.key",
                )
                .unwrap();
            },
            "credential tls.key: its host file /run/secrets/gone.key is missing",
        ),
        (
            "not loaded",
            |d, _| {
                fs::remove_file(d.join("tls.key")).unwrap();
            },
            "credential tls.key: not in $CREDENTIALS_DIRECTORY",
        ),
        (
            "no credentials dir",
            |_, _| {},
            "$CREDENTIALS_DIRECTORY is not set",
        ),
    ];
    for (what, prep, want) in cases {
        let d = cred_dir(&sb, SECRET.as_bytes());
        prep(&d, &sb.root);
        let t0 = Instant::now();
        let out = build(&sb, (what != "no credentials dir").then_some(d.as_path()));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(!out.status.success(), "{what}: built");
        assert_eq!(lines.len(), 1, "{what}: {err}");
        assert!(lines[0].contains(want), "{what}: {err}");
        assert!(
            !err.contains("root only") && !err.contains(SECRET),
            "{what}: content printed: {err}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: took {:?}",
            t0.elapsed()
        );
        assert!(
            !sb.state_dir.join("web/image").exists(),
            "{what}: an image was built"
        );
    }
}

#[test]
fn credentials_need_a_group_of_the_vm_alone() {
    let test = "credentials_need_a_group_of_the_vm_alone";
    let sb = Sandbox::new("creds-grp");
    let Some(mut cfg) = standin_config(&sb, test) else {
        return;
    };
    // mcpt-a's primary group: the image would be readable by mcpt-a.
    if vm::qemu_user().is_none()
        || nix::unistd::Group::from_name("mcpt-a")
            .ok()
            .flatten()
            .is_none()
    {
        netns::skip(test, "no mcpt-a account (.ci/run creates it)");
        return;
    }
    cfg["qemu_group"] = "mcpt-a".into();
    sb.write_config("web", &cfg);
    let creds = cred_dir(&sb, SECRET.as_bytes());
    let out = build(&sb, Some(&creds));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built with a shared group");
    assert!(
        err.contains("readable by others than the VM's user: its group mcpt-a")
            && err.contains("primary group of mcpt-a"),
        "{err}"
    );
    assert!(!sb.state_dir.join("web/image").exists());
}
