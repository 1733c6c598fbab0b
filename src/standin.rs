//! The Linux stand-in for a Nanos image (tests and CI, where no Nanos kernel
//! exists): the base initramfs followed by an uncompressed cpio with the
//! program, its args/env/network files and the staged volume tree.

use std::fs;
use std::io;
use std::path::Path;

use crate::config::{ResolvedNet, Validated};
use crate::cpio::CpioWriter;
use crate::credentials::Credentials;
use crate::image::{io_err, BuildError};

/// The files handed to the Linux stand-in guest besides the volumes.
pub fn files(v: &Validated) -> Vec<(&'static str, String)> {
    let c = &v.config;
    let args: String = c.args.iter().map(|a| format!("{a}\n")).collect();
    let env: String = c
        .env
        .iter()
        .map(|(k, val)| format!("{k}={val}\n"))
        .collect();
    let net = match &v.net {
        ResolvedNet::Bridge(b) => format!(
            "ip={} prefix={} gateway={} mac={}\n",
            b.ip, b.prefix_length, b.gateway, b.mac
        ),
        ResolvedNet::User { .. } => "dhcp\n".into(),
    };
    vec![("mcp/args", args), ("mcp/env", env), ("mcp/net", net)]
}

/// Write `dest`: `base` (the stand-in's initramfs) plus the VM's cpio.
pub fn build_initrd(
    v: &Validated,
    program: Option<&[u8]>,
    staging: &Path,
    base: &Path,
    dest: &Path,
    creds: Option<&Credentials>,
) -> Result<(), BuildError> {
    let mut data = fs::read(base).map_err(io_err("reading initrd", base))?;
    while data.len() % 4 != 0 {
        data.push(0);
    }
    let mut w = CpioWriter::new(data);
    let wr = |e: io::Error| BuildError::Io {
        what: "writing initrd",
        path: dest.to_owned(),
        source: e,
    };
    w.dir("mcp", 0o755).map_err(wr)?;
    if let Some(prog) = program {
        w.file("mcp/program", 0o755, prog).map_err(wr)?;
    }
    for (name, content) in files(v) {
        w.file(name, 0o644, content.as_bytes()).map_err(wr)?;
    }
    w.tree(staging, "").map_err(wr)?;
    // Credentials go from memory into the cpio (mode 0400), not through the
    // staging tree.
    for (name, mode, data) in creds.map(|c| c.cpio_entries()).unwrap_or_default() {
        match data {
            Some(bytes) => w.file(&name, mode, bytes).map_err(wr)?,
            None => w.dir(&name, mode).map_err(wr)?,
        }
    }
    let bytes = w.finish().map_err(wr)?;
    fs::write(dest, bytes).map_err(io_err("writing", dest))?;
    Ok(())
}
