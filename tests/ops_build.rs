//! A real `ops build` through the helper, with PLACEHOLDER Nanos kernel and
//! boot files (no Nanos kernel exists in CI; ops only copies them into the
//! image, it does not run them). The image is read back with ops's own image
//! reader (`ops image ls` / `ops image cat`) to check that the staged volume
//! files sit at their guest paths, that a symlink pointing outside its volume
//! never reaches the image, and that an unchanged build is skipped while a
//! one-byte change rebuilds. Also: the helper killed (SIGKILL) while its
//! `ops build` runs takes ops down with it, leaves the last good image in
//! place and readable, and the next build is clean.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::netns;
use common::opsimage::{ops_image, placeholder_nanos, text};
use common::vm::{self, Sandbox};
use serde_json::json;

fn placeholder_config(program: &Path, vol: &Path, nanos: &Path, ops: &str) -> serde_json::Value {
    json!({
        "schema_version": 1,
        "name": "web",
        "program": program,
        "args": ["--listen", "0.0.0.0:8080", "--file", "/srv/www/index.html"],
        "network": { "ip": "10.99.0.2" },
        "volumes": [ { "source": vol, "target": "/srv/www" } ],
        "nanos_dir": nanos,
        "ops": ops,
        "accel": "tcg"
    })
}

/// What each test here starts from: ops, the example server, a sandbox with
/// placeholder Nanos files and a volume holding `index.html`, and the
/// config `web` over them. None (the test reported skipped) without ops or
/// the server.
struct Setup {
    sb: Sandbox,
    ops: String,
    nanos: std::path::PathBuf,
    vol: std::path::PathBuf,
}

fn setup(test: &str, tag: &str, index_html: &str) -> Option<Setup> {
    let ops = match vm::ops() {
        Ok(o) => o,
        Err(e) => {
            netns::skip(test, &e);
            return None;
        }
    };
    let program = match vm::file_server() {
        Ok(p) => p,
        Err(e) => {
            netns::skip(test, &e);
            return None;
        }
    };
    let sb = Sandbox::new(tag);
    let nanos = sb.root.join("nanos-placeholder");
    placeholder_nanos(&nanos);
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), index_html).unwrap();
    sb.write_config("web", &placeholder_config(&program, &vol, &nanos, &ops));
    Some(Setup {
        sb,
        ops,
        nanos,
        vol,
    })
}

#[test]
fn ops_build_puts_staged_files_at_guest_paths() {
    let Some(Setup { sb, ops, vol, .. }) = setup(
        "ops_build_puts_staged_files_at_guest_paths",
        "opsbuild",
        "served from the image\n",
    ) else {
        return;
    };
    fs::create_dir_all(vol.join("certs")).unwrap();
    fs::write(vol.join("certs/tls.pem"), "-----BEGIN TEST-----\n").unwrap();
    fs::write(sb.root.join("outside-secret"), "host secret\n").unwrap();
    symlink(sb.root.join("outside-secret"), vol.join("escape")).unwrap();
    symlink("index.html", vol.join("alias.html")).unwrap();

    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "build failed: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(built)"),
        "{}",
        text(&out)
    );
    assert!(sb.state_dir.join("web/image/disk.img").is_file());

    let ls = ops_image(&ops, &sb, &["ls", "under-test", "/srv/www"]);
    let listing = text(&ls);
    assert!(ls.status.success(), "{listing}");
    println!("ops image ls /srv/www:\n{listing}");
    assert!(listing.contains("index.html"), "{listing}");
    assert!(listing.contains("certs"), "{listing}");
    assert!(listing.contains("alias.html"), "{listing}");
    assert!(
        !listing.contains("escape"),
        "a symlink out of the volume reached the image: {listing}"
    );

    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/srv/www/index.html"]);
    assert!(
        text(&cat).contains("served from the image"),
        "{}",
        text(&cat)
    );
    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/srv/www/certs/tls.pem"]);
    assert!(text(&cat).contains("BEGIN TEST"), "{}", text(&cat));
    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/srv/www/alias.html"]);
    assert!(
        text(&cat).contains("served from the image"),
        "{}",
        text(&cat)
    );

    // Nothing changed: no ops build. One byte changed: rebuilt, new content.
    let out = sb.run(None, &["build", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not rebuilt"),
        "{}",
        text(&out)
    );
    fs::write(vol.join("index.html"), "served from the image!\n").unwrap();
    let out = sb.run(None, &["build", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(built)"),
        "{}",
        text(&out)
    );
    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/srv/www/index.html"]);
    assert!(
        text(&cat).contains("served from the image!"),
        "{}",
        text(&cat)
    );

    // ops ran with a throwaway home inside the VM's state dir: nothing of it
    // is left behind (no scratch dir, no persistent ops home).
    assert!(!sb.state_dir.join("web/ops-home").exists());
    assert!(fs::read_dir(sb.state_dir.join("web"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains(".tmp-")));
}

/// The helper SIGKILLed while `ops build` runs (an OOM kill, a crash): ops
/// dies with it (it would otherwise go on writing into the VM's ops home
/// while the next start builds there), the last good image stays in place
/// and readable, it is reused as is when the inputs go back to what it was
/// built from, and the next build of the new inputs is clean.
#[test]
fn helper_killed_during_ops_build_keeps_last_good_image() {
    let Some(Setup { sb, ops, vol, .. }) = setup(
        "helper_killed_during_ops_build_keeps_last_good_image",
        "killops",
        "last good\n",
    ) else {
        return;
    };
    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "build failed: {}", text(&out));
    let image = sb.state_dir.join("web/image");
    let good_hash = fs::read_to_string(image.join("inputs.hash")).unwrap();
    let good_disk = fs::read(image.join("disk.img")).unwrap();

    // Enough data that ops takes a second or more to write the image.
    fs::write(vol.join("big.bin"), vec![0x5au8; 384 << 20]).unwrap();
    let ops_pid =
        vm::kill_helper_during_ops_build(&sb, None, &["build", "web"], Duration::from_millis(300));
    // ops had over a second of writing left (it needs ~1.5 s for 384 MiB).
    // Orphaned, it is reaped here: killed by SIGKILL means it died with its
    // parent; exit 0 means it outlived the helper and finished its write.
    let end = vm::reap_orphan(ops_pid, Duration::from_secs(60));
    println!("ops PID {} after the helper was killed: {end:?}", ops_pid);
    assert_eq!(
        end,
        Some(vm::OrphanEnd::Signalled(libc::SIGKILL)),
        "ops (PID {}) did not die with the killed helper",
        ops_pid
    );

    // The last good image is untouched and still readable by ops.
    assert_eq!(
        fs::read_to_string(image.join("inputs.hash")).unwrap(),
        good_hash
    );
    assert!(
        fs::read(image.join("disk.img")).unwrap() == good_disk,
        "the last good disk.img changed"
    );
    let cat = ops_image(&ops, &sb, &["cat", "under-test", "/srv/www/index.html"]);
    assert!(text(&cat).contains("last good"), "{}", text(&cat));

    // Inputs back to what the last good image was built from: reused as is.
    fs::remove_file(vol.join("big.bin")).unwrap();
    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not rebuilt"),
        "{}",
        text(&out)
    );

    // New inputs: the interrupted build's leftovers are cleared and it builds.
    fs::write(vol.join("big.bin"), vec![0x5au8; 1 << 20]).unwrap();
    let out = sb.run(None, &["build", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(built)"),
        "{}",
        text(&out)
    );
    let leftovers: Vec<_> = fs::read_dir(sb.state_dir.join("web"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "scratch dirs left: {leftovers:?}");
    let ls = ops_image(&ops, &sb, &["ls", "under-test", "/srv/www"]);
    assert!(
        text(&ls).contains("big.bin") && text(&ls).contains("index.html"),
        "{}",
        text(&ls)
    );
}

/// Relative --state-dir/--runtime-dir/--config-dir work: ops runs with its
/// cwd in the staging tree, so the helper must hand it absolute paths.
#[test]
fn relative_dirs_build_with_ops() {
    let Some(Setup { sb, .. }) = setup("relative_dirs_build_with_ops", "reldirs", "relative\n")
    else {
        return;
    };
    let out = Command::new(vm::BIN)
        .current_dir(&sb.root)
        .args([
            "--config-dir",
            "etc",
            "--state-dir",
            "state",
            "--runtime-dir",
            "run",
            "build",
            "web",
        ])
        .env_remove("MCP_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build with relative dirs: {}",
        text(&out)
    );
    assert!(sb.state_dir.join("web/image/disk.img").is_file());
    assert!(!sb.state_dir.join("web/ops-home").exists());
}

/// The Nanos kernel's digest is remembered between builds (keyed by inode,
/// size, mtime, ctime): an unchanged kernel is not re-read, and rewriting it
/// in place with the same size still triggers a rebuild.
#[test]
fn remembered_kernel_digest_never_hides_a_change() {
    let Some(Setup { sb, nanos, .. }) = setup(
        "remembered_kernel_digest_never_hides_a_change",
        "digests",
        "x\n",
    ) else {
        return;
    };
    // Files younger than a second are never remembered; let them settle.
    std::thread::sleep(Duration::from_millis(1100));
    let out = sb.run(None, &["build", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(built)"),
        "{}",
        text(&out)
    );
    let cache = fs::read_to_string(sb.state_dir.join("web/input-digests.json")).unwrap();
    assert!(
        cache.contains("kernel.img"),
        "kernel digest not remembered: {cache}"
    );
    let out = sb.run(None, &["build", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not rebuilt"),
        "{}",
        text(&out)
    );

    // Same size, one byte different, same inode: rebuilt.
    let k = nanos.join("kernel.img");
    let mut bytes = fs::read(&k).unwrap();
    bytes[100] ^= 1;
    fs::OpenOptions::new()
        .write(true)
        .open(&k)
        .unwrap()
        .write_all_at(&bytes, 0)
        .unwrap();
    let out = sb.run(None, &["build", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(built)"),
        "kernel change missed: {}",
        text(&out)
    );
}

/// An ops the helper cannot drive (nixpkgs's 0.1.32 writes its image
/// elsewhere and reads klibs from another key) is refused before anything is
/// built, with one line naming the version found and the range supported,
/// and nothing is left: no image, no scratch dir. A STAND-IN for that old
/// ops: a script answering `version` as it does.
#[test]
fn an_ops_too_old_to_drive_is_refused_before_building() {
    let Some(Setup { sb, .. }) = setup(
        "an_ops_too_old_to_drive_is_refused_before_building",
        "oldops",
        "x\n",
    ) else {
        return;
    };
    let fake = sb.root.join("bin/ops");
    fs::create_dir_all(fake.parent().unwrap()).unwrap();
    fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = version ] && { echo 'Ops version: 0.1.32'; echo 'Nanos version: 0.1.47'; exit 0; }\necho built > \"$HOME/.ops/images/disk\"\n",
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg_path = sb.config_dir.join("web.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["ops"] = json!(fake);
    sb.write_config("web", &cfg);
    let out = sb.run(None, &["build", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        line.contains("0.1.32") && line.contains(">= 0.1.43") && line.contains("`ops`"),
        "{err}"
    );
    assert!(
        !sb.state_dir.join("web/image").exists(),
        "an image was made"
    );
    assert!(
        !sb.state_dir.join("web/staging").exists(),
        "volumes were staged"
    );
    assert!(fs::read_dir(sb.state_dir.join("web"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains(".tmp-")));
}

/// The units run the helper with UMask=0077; ops (as the VM's user) must
/// still read its config and the staged tree, whose modes the helper sets
/// exactly rather than through the umask.
#[test]
fn builds_under_the_units_umask() {
    let Some(Setup { sb, .. }) = setup("builds_under_the_units_umask", "umask", "umask\n") else {
        return;
    };
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.config_dir.join("web.json")).unwrap()).unwrap();
    if vm::qemu_user().is_none() {
        return netns::skip("builds_under_the_units_umask", "no mcp-qemu user");
    }
    cfg["qemu_user"] = "mcp-qemu".into();
    cfg["qemu_group"] = "mcp-qemu".into();
    sb.write_config("web", &cfg);
    let out = Command::new("sh")
        .args(["-c", "umask 077; exec \"$@\"", "sh", vm::BIN])
        .args(["--config-dir", sb.config_dir.to_str().unwrap()])
        .args(["--state-dir", sb.state_dir.to_str().unwrap()])
        .args(["--runtime-dir", sb.runtime_dir.to_str().unwrap()])
        .args(["build", "web"])
        .env_remove("MCP_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let staged = sb.state_dir.join("web/staging");
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&staged.join("srv")), 0o750);
    assert_eq!(mode(&staged.join(".mcp-unikernel/placeholder")), 0o750);
}
