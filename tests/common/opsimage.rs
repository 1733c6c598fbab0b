//! Real `ops` images in tests without a Nanos kernel: PLACEHOLDER kernel and
//! boot files (ops only copies them into the image, it does not run them),
//! and reading a built image back with ops's own image reader.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use super::vm::Sandbox;

/// Placeholder kernel.img/boot.img (and an empty klibs dir): named stand-ins
/// for a Nanos build, good for image building only.
pub fn placeholder_nanos(dir: &Path) {
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
pub fn ops_image(ops: &str, sb: &Sandbox, args: &[&str]) -> Output {
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

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
