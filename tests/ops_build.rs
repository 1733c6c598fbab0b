//! A real `ops build` through the helper, with PLACEHOLDER Nanos kernel and
//! boot files (no Nanos kernel exists in CI; ops only copies them into the
//! image, it does not run them). The image is read back with ops's own image
//! reader (`ops image ls` / `ops image cat`) to check that the staged volume
//! files sit at their guest paths, that a symlink pointing outside its volume
//! never reaches the image, and that an unchanged build is skipped while a
//! one-byte change rebuilds.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use common::netns;
use common::vm::{self, Sandbox};
use serde_json::json;

/// Placeholder kernel.img/boot.img (and an empty klibs dir): named stand-ins
/// for a Nanos build, good for image building only.
fn placeholder_nanos(dir: &Path) {
    fs::create_dir_all(dir.join("klibs")).unwrap();
    fs::write(dir.join("kernel.img"), vec![0x90u8; 64 * 1024]).unwrap();
    // ops copies boot.img to the front of the image and then fills in the MBR
    // partition table, so it wants the MBR signature and the record (just
    // before the partition table) giving the length of the boot stage that
    // follows the MBR: type 12 ("filesystem region"), then its length.
    let mut boot = vec![0u8; 4096];
    boot[434..442].copy_from_slice(&(4096u64 - 512).to_le_bytes());
    boot[442..446].copy_from_slice(&12u32.to_le_bytes());
    boot[510] = 0x55;
    boot[511] = 0xAA;
    fs::write(dir.join("boot.img"), boot).unwrap();
}

/// Read from a built image with ops's image commands (its own reader).
fn ops_image(ops: &str, sb: &Sandbox, args: &[&str]) -> Output {
    let home = sb.root.join("reader-home");
    let images = home.join(".ops/images");
    fs::create_dir_all(&images).unwrap();
    // Offline, ops reads the Nanos version from latest.txt before any command.
    fs::write(home.join(".ops/latest.txt"), "0.0.0-local").unwrap();
    let link = images.join("under-test");
    let _ = fs::remove_file(&link);
    symlink(sb.state_dir.join("web/image/disk.img"), &link).unwrap();
    Command::new(ops)
        .arg("image")
        .args(args)
        .env("OPS_HOME", &home)
        .env("HOME", &home)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ops_build_puts_staged_files_at_guest_paths() {
    let test = "ops_build_puts_staged_files_at_guest_paths";
    let ops = match vm::ops() {
        Ok(o) => o,
        Err(e) => return netns::skip(test, &e),
    };
    let program = match vm::file_server() {
        Ok(p) => p,
        Err(e) => return netns::skip(test, &e),
    };
    let sb = Sandbox::new("opsbuild");
    let nanos = sb.root.join("nanos-placeholder");
    placeholder_nanos(&nanos);
    let vol = sb.root.join("www");
    fs::create_dir_all(vol.join("certs")).unwrap();
    fs::write(vol.join("index.html"), "served from the image\n").unwrap();
    fs::write(vol.join("certs/tls.pem"), "-----BEGIN TEST-----\n").unwrap();
    fs::write(sb.root.join("outside-secret"), "host secret\n").unwrap();
    symlink(sb.root.join("outside-secret"), vol.join("escape")).unwrap();
    symlink("index.html", vol.join("alias.html")).unwrap();
    let cfg = json!({
        "schema_version": 1,
        "name": "web",
        "program": program,
        "args": ["--listen", "0.0.0.0:8080", "--file", "/srv/www/index.html"],
        "network": { "ip": "10.99.0.2" },
        "volumes": [ { "source": vol, "target": "/srv/www" } ],
        "nanos_dir": nanos,
        "ops": ops,
        "accel": "tcg"
    });
    sb.write_config("web", &cfg);

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

    // ops wrote nothing outside the VM's state dir (its home is in there).
    assert!(sb.state_dir.join("web/ops-home/.ops").is_dir());
}
