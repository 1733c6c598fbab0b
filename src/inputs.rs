//! Content hash of every input of an image build. Fields are length-prefixed
//! and tagged, so two different input sets cannot produce the same byte
//! stream.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// Unit of the content encoding: every file is cut into blocks of this size
/// (the last one may be shorter) and each block is either zero or data.
pub const BLOCK: u64 = 4096;
/// Most bytes read (and copied) per read call.
const BUF_MAX: u64 = 1 << 20;

#[derive(Clone)]
pub struct InputHasher {
    inner: blake3::Hasher,
}

impl Default for InputHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// What `InputHasher::content` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Apparent size hashed (and given to the copy).
    pub len: u64,
    /// Bytes actually read: the data regions (holes are not read).
    pub read: u64,
    /// The file changed (size, mtime or ctime) while it was read; the hash
    /// records it, so it cannot equal a clean read's.
    pub changed: bool,
}

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl InputHasher {
    pub fn new() -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(b"mcp-unikernel inputs v3\0");
        InputHasher { inner }
    }

    /// A tagged, length-prefixed field.
    pub fn field(&mut self, tag: &str, bytes: &[u8]) {
        self.inner.update(&(tag.len() as u64).to_le_bytes());
        self.inner.update(tag.as_bytes());
        self.inner.update(&(bytes.len() as u64).to_le_bytes());
        self.inner.update(bytes);
    }

    /// The first `len` bytes (its size from an fstat of this same open file)
    /// of the regular file `src`, read from the fd, never by path; when
    /// `copy_to` (a new, empty file) is given, exactly what is hashed is
    /// written there, so the copy is what the hash describes.
    ///
    /// Holes are kept: data regions are found with SEEK_DATA/SEEK_HOLE and
    /// only those are read; blocks of zeros (read or in a hole) are not
    /// written, so the copy is sparse there. The encoding depends on the
    /// content only, not on where the file system keeps holes: the file is
    /// cut into BLOCK-sized blocks, runs of all-zero blocks are hashed as
    /// (first block, count) pairs and the other blocks' bytes are hashed in
    /// order, so a 1 GiB file with a few data blocks hashes in microseconds.
    /// The field is `tag` with (len, data bytes, data digest, zero-run
    /// digest, changed flag).
    pub fn content(
        &mut self,
        tag: &str,
        src: &File,
        len: u64,
        copy_to: Option<&File>,
    ) -> Result<Copied, CopyError> {
        let before = src.metadata().map_err(CopyError::Read)?;
        let mut c = Content {
            data: blake3::Hasher::new(),
            zero_runs: blake3::Hasher::new(),
            run: None,
            data_bytes: 0,
            out: copy_to,
        };
        let mut buf = vec![0u8; len.div_ceil(BLOCK).saturating_mul(BLOCK).min(BUF_MAX) as usize];
        let mut read = 0u64;
        let mut short = false;
        let mut pos = 0u64; // a multiple of BLOCK, or len
        while pos < len {
            let (data, hole) = next_data(src, pos, len).map_err(CopyError::Read)?;
            // Whole blocks before the data region are zero without reading.
            let start = (data / BLOCK * BLOCK).max(pos);
            if start > pos {
                c.zeros(pos, start);
                pos = start;
            }
            if pos >= len {
                break;
            }
            // Read to the end of the block holding the region's last byte
            // (at least one block, so `pos` stays a multiple of BLOCK).
            let end = hole
                .div_ceil(BLOCK)
                .saturating_mul(BLOCK)
                .max(pos + BLOCK)
                .min(len);
            while pos < end {
                let want = (end - pos).min(buf.len() as u64) as usize;
                let got = read_full_at(src, &mut buf[..want], pos).map_err(CopyError::Read)?;
                if got < want {
                    // Shrunk under us: the rest reads as zeros, as the copy
                    // (extended to `len`) does.
                    short = true;
                    buf[got..want].fill(0);
                }
                read += got as u64;
                c.blocks(&buf[..want], pos).map_err(CopyError::Write)?;
                pos += want as u64;
            }
        }
        c.end_run();
        if let Some(out) = copy_to {
            out.set_len(len).map_err(CopyError::Write)?;
        }
        let after = src.metadata().map_err(CopyError::Read)?;
        let changed = short
            || before.len() != len
            || after.len() != len
            || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec())
            || (after.ctime(), after.ctime_nsec()) != (before.ctime(), before.ctime_nsec());
        let mut field = Vec::with_capacity(8 + 8 + 32 + 32 + 1);
        field.extend_from_slice(&len.to_le_bytes());
        field.extend_from_slice(&c.data_bytes.to_le_bytes());
        field.extend_from_slice(c.data.finalize().as_bytes());
        field.extend_from_slice(c.zero_runs.finalize().as_bytes());
        field.push(changed as u8);
        self.field(tag, &field);
        Ok(Copied { len, read, changed })
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

/// The content encoding of one file in progress.
struct Content<'a> {
    data: blake3::Hasher,
    zero_runs: blake3::Hasher,
    /// The run of zero blocks being extended: (first block, count).
    run: Option<(u64, u64)>,
    data_bytes: u64,
    out: Option<&'a File>,
}

impl Content<'_> {
    /// Zero blocks covering [from, to) (from a multiple of BLOCK).
    fn zeros(&mut self, from: u64, to: u64) {
        let first = from / BLOCK;
        let n = (to - from).div_ceil(BLOCK);
        match &mut self.run {
            Some((start, count)) if *start + *count == first => *count += n,
            _ => {
                self.end_run();
                self.run = Some((first, n));
            }
        }
    }

    fn end_run(&mut self) {
        if let Some((start, count)) = self.run.take() {
            self.zero_runs.update(&start.to_le_bytes());
            self.zero_runs.update(&count.to_le_bytes());
        }
    }

    /// `buf` read at `off` (a multiple of BLOCK): zero blocks extend the
    /// zero run, runs of data blocks are hashed and copied in one piece.
    fn blocks(&mut self, buf: &[u8], off: u64) -> io::Result<()> {
        let mut i = 0;
        while i < buf.len() {
            let b = (i + BLOCK as usize).min(buf.len());
            if is_zero(&buf[i..b]) {
                self.zeros(off + i as u64, off + b as u64);
                i = b;
                continue;
            }
            let mut j = b;
            while j < buf.len() {
                let k = (j + BLOCK as usize).min(buf.len());
                if is_zero(&buf[j..k]) {
                    break;
                }
                j = k;
            }
            self.end_run();
            self.data.update(&buf[i..j]);
            self.data_bytes += (j - i) as u64;
            if let Some(out) = self.out {
                out.write_all_at(&buf[i..j], off + i as u64)?;
            }
            i = j;
        }
        Ok(())
    }
}

fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && chunks.remainder().iter().all(|&x| x == 0)
}

/// The next data region at or after `pos`, as (start, end), both clamped to
/// `len`; (len, len) when only holes follow. A file system without
/// SEEK_DATA support is all data.
fn next_data(f: &File, pos: u64, len: u64) -> io::Result<(u64, u64)> {
    let seek = |off: u64, whence| lseek(f.as_fd(), off as libc::off_t, whence);
    let data = match seek(pos, Whence::SeekData) {
        Ok(d) => (d as u64).clamp(pos, len),
        // ENXIO: nothing but holes up to the (current) end of file.
        Err(Errno::ENXIO) => return Ok((len, len)),
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) => return Ok((pos, len)),
        Err(e) => return Err(e.into()),
    };
    let hole = match seek(data, Whence::SeekHole) {
        Ok(h) => (h as u64).clamp(data, len),
        Err(Errno::ENXIO | Errno::EINVAL | Errno::EOPNOTSUPP) => len,
        Err(e) => return Err(e.into()),
    };
    Ok((data, hole))
}

/// Read until `buf` is full or end of file; returns the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

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

    fn tmp(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("mcp-inputs-{tag}-{}", std::process::id()))
    }

    fn hash_of(f: &File) -> (String, Copied) {
        let mut h = InputHasher::new();
        let len = f.metadata().unwrap().len();
        let c = h.content("content", f, len, None).unwrap();
        (h.finish_hex(), c)
    }

    /// The hash depends on the content only: zeros written out and a hole
    /// of the same length hash alike; any changed byte or length differs.
    #[test]
    fn content_hash_is_the_bytes_not_the_layout() {
        let p = tmp("layout");
        let mk = |sparse: bool, tail: &[u8]| {
            let mut f = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            f.write_all(b"head").unwrap();
            if sparse {
                f.seek(SeekFrom::Start(3 * BLOCK + 100)).unwrap();
            } else {
                f.write_all(&vec![0u8; (3 * BLOCK + 96) as usize]).unwrap();
            }
            f.write_all(tail).unwrap();
            f.sync_all().unwrap();
            hash_of(&f)
        };
        let (dense, _) = mk(false, b"tail");
        let (sparse, c) = mk(true, b"tail");
        assert_eq!(dense, sparse);
        assert!(!c.changed);
        let (other, _) = mk(true, b"tajl");
        assert_ne!(sparse, other);
        let (longer, _) = mk(true, b"tail\0");
        assert_ne!(sparse, longer);
        std::fs::remove_file(&p).unwrap();
    }

    /// A file that is shorter than the size it was opened with (it shrank
    /// while being read) never hashes like a clean read of what was read.
    #[test]
    fn a_file_changing_size_while_read_does_not_hash_clean() {
        let p = tmp("shrink");
        std::fs::write(&p, vec![7u8; 10_000]).unwrap();
        let f = File::open(&p).unwrap();
        let mut h = InputHasher::new();
        // As if fstat had said 20 000 bytes before the file shrank.
        let c = h.content("content", &f, 20_000, None).unwrap();
        assert!(c.changed);
        let mut clean = InputHasher::new();
        let mut padded = vec![7u8; 10_000];
        padded.resize(20_000, 0);
        let q = tmp("shrink-clean");
        std::fs::write(&q, &padded).unwrap();
        let g = File::open(&q).unwrap();
        let c2 = clean.content("content", &g, 20_000, None).unwrap();
        assert!(!c2.changed);
        assert_ne!(h.finish_hex(), clean.finish_hex());
        std::fs::remove_file(&p).unwrap();
        std::fs::remove_file(&q).unwrap();
    }
}
