//! A minimal writer for uncompressed `newc` cpio archives, used to hand the
//! program, its args/env/network settings and the staged volume tree to the
//! Linux stand-in guest (direct kernel boot) as a second initramfs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: u32) -> io::Result<()> {
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0
        );
        self.ino += 1;
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 0)
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        self.header(name, S_IFREG | (perm & 0o7777), size)?;
        self.put(data)?;
        self.pad()
    }

    /// Add a host tree (already staged, so no symlinks) under `prefix`.
    pub fn tree(&mut self, host: &Path, prefix: &str) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(host)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            let p = host.join(&n);
            let name = if prefix.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{prefix}/{}", n.to_string_lossy())
            };
            let meta = fs::symlink_metadata(&p)?;
            let perm = meta.permissions().mode();
            if meta.is_dir() {
                self.dir(&name, perm)?;
                self.tree(&p, &name)?;
            } else if meta.is_file() {
                self.file(&name, perm, &fs::read(&p)?)?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc_aligned() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("mcp", 0o755).unwrap();
        w.file("mcp/args", 0o644, b"--x\n").unwrap();
        let out = w.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("mcp/args\0"));
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn the_system_cpio_reads_it_back() {
        let cpio = std::process::Command::new("cpio").arg("--version").output();
        if cpio.is_err() {
            eprintln!("cpio not installed; format checked structurally only");
            return;
        }
        let mut w = CpioWriter::new(Vec::new());
        w.dir("srv", 0o755).unwrap();
        w.file("srv/index.html", 0o644, b"hi there").unwrap();
        let data = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "srv\nsrv/index.html\n"
        );
    }
}
