//! The QEMU command line for a VM. Pure: rendered from the validated config,
//! the VM's paths and the image, and compared with expected files in tests.
//!
//! Values inside QEMU option strings (`-drive file=`, `-chardev path=`) have
//! their commas doubled, as QEMU's option parser requires; names that end up
//! there unescaped (TAP, MAC, VM name) are validated to plain characters.
//! The disk is opened with `snapshot=on`: guest writes go to a temporary
//! overlay (in QEMU's TMPDIR, the VM's runtime dir) and never reach the image.
//! `isa-debug-exit` at port 0x501 carries the program's exit code out
//! (`(code << 1) | 1`, see docs/helper.md).

use std::path::PathBuf;

use crate::config::{Accel, ResolvedNet, Validated};
use crate::paths::VmPaths;

/// What the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A Nanos disk image built by ops.
    Disk(PathBuf),
    /// Linux stand-in: direct kernel boot with a combined initramfs.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The I/O port Nanos writes the program's exit code to (`QEMU_HALT`).
pub const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0x501,iosize=1";

/// A value inside a QEMU option string: commas doubled.
pub fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

pub fn argv(v: &Validated, paths: &VmPaths, boot: &Boot) -> Vec<String> {
    let c = &v.config;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[&c.qemu]);
    push(&["-name", &format!("mcp-{},debug-threads=on", c.name)]);
    let (accel, cpu) = match c.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    push(&["-machine", "q35"]);
    push(&["-accel", accel, "-cpu", cpu]);
    push(&[
        "-m",
        &c.memory_mib.to_string(),
        "-smp",
        &c.vcpus.to_string(),
    ]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&["-serial", "stdio"]);
    match boot {
        Boot::Disk(img) => {
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=hd0,snapshot=on",
                    opt_escape(&img.display().to_string())
                ),
                "-device",
                "virtio-blk-pci,drive=hd0",
            ]);
        }
        Boot::Direct {
            kernel,
            initrd,
            append,
        } => {
            let mut cmdline = String::from("console=ttyS0 panic=-1");
            if !append.is_empty() {
                cmdline.push(' ');
                cmdline.push_str(append);
            }
            push(&[
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                &cmdline,
            ]);
        }
    }
    match &v.net {
        ResolvedNet::Bridge(b) => push(&[
            "-netdev",
            &format!("tap,id=n0,ifname={},script=no,downscript=no", b.tap),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={}", b.mac),
        ]),
        ResolvedNet::User { ports } => {
            // restrict=on: the guest reaches nothing (no NAT to the host or beyond);
            // the port forwards into it still work.
            let mut nd = String::from("user,id=n0,restrict=on");
            for p in ports {
                nd.push_str(&format!(
                    ",hostfwd={}:{}:{}-:{}",
                    p.protocol, p.host_address, p.host, p.guest
                ));
            }
            push(&["-netdev", &nd, "-device", "virtio-net-pci,netdev=n0"]);
        }
    }
    push(&["-device", DEBUG_EXIT]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            opt_escape(&paths.qmp_socket().display().to_string())
        ),
        "-mon",
        "chardev=qmp,mode=control",
        "-pidfile",
        &paths.pidfile().display().to_string(),
        "-sandbox",
        SANDBOX,
    ]);
    a
}
