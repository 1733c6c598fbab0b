//! Content hash of every input of an image build. Fields are length-prefixed
//! and tagged, so two different input sets cannot produce the same byte
//! stream.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

#[derive(Clone)]
pub struct InputHasher {
    inner: blake3::Hasher,
}

impl Default for InputHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl InputHasher {
    pub fn new() -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(b"mcp-unikernel inputs v2\0");
        InputHasher { inner }
    }

    /// A tagged, length-prefixed field.
    pub fn field(&mut self, tag: &str, bytes: &[u8]) {
        self.inner.update(&(tag.len() as u64).to_le_bytes());
        self.inner.update(tag.as_bytes());
        self.inner.update(&(bytes.len() as u64).to_le_bytes());
        self.inner.update(bytes);
    }

    /// The whole content of a file, streamed; optionally copied to `copy_to`
    /// while it is hashed, so what is hashed is exactly what is written.
    pub fn file(
        &mut self,
        tag: &str,
        path: &Path,
        copy_to: Option<&mut dyn Write>,
    ) -> io::Result<u64> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        self.inner.update(&(tag.len() as u64).to_le_bytes());
        self.inner.update(tag.as_bytes());
        self.inner.update(&len.to_le_bytes());
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut out = copy_to;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.inner.update(&buf[..n]);
            if let Some(w) = out.as_mut() {
                w.write_all(&buf[..n])?;
            }
            total += n as u64;
        }
        if total != len {
            // The file changed size while it was read: hash what we read, but
            // record the mismatch so the hash cannot equal a clean read.
            self.field("size-changed", &total.to_le_bytes());
        }
        Ok(total)
    }

    /// A file by its size and content digest (from `digests::DigestCache`),
    /// for inputs whose bytes need not be streamed through this hasher.
    pub fn file_digest(&mut self, tag: &str, len: u64, digest: &[u8; 32]) {
        self.field("file-digest", tag.as_bytes());
        self.inner.update(&len.to_le_bytes());
        self.inner.update(digest);
    }

    pub fn finish_hex(&self) -> String {
        self.inner.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        let mut a = InputHasher::new();
        a.field("x", b"ab");
        a.field("x", b"c");
        let mut b = InputHasher::new();
        b.field("x", b"a");
        b.field("x", b"bc");
        assert_ne!(a.finish_hex(), b.finish_hex());
    }
}
