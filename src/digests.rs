//! Remembered content digests of the large read-only inputs (program, kernel,
//! initrd, Nanos files), so an unchanged start does not re-read megabytes.
//!
//! An entry is keyed by the file's path and (device, inode, size, mtime,
//! ctime). Any write to a file changes its ctime, and nothing but the clock
//! can set ctime back, so matching metadata means unchanged content, with
//! one race: a write in the same clock tick as the hashing. Hence an entry is
//! trusted only when the file's ctime was more than a second older than the
//! moment it was hashed (git's "racy clean" rule); younger files are hashed
//! again every time until they settle. Volumes are not cached: they are
//! operator data and are read in full on every start (src/staging.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How much older than the hashing moment a file's ctime must be for its
/// digest to be remembered.
const SETTLE_NS: i128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    hashed_at_ns: i128,
    blake3: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    version: u32,
    files: BTreeMap<PathBuf, Entry>,
}

/// Whence a digest came, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Remembered,
    Read,
}

pub struct DigestCache {
    path: PathBuf,
    store: Store,
    /// Files asked about in this run; `save` forgets the others (old Nix
    /// store paths after an upgrade, a removed klib).
    seen: BTreeSet<PathBuf>,
    dirty: bool,
}

fn ns(secs: i64, nsec: i64) -> i128 {
    secs as i128 * 1_000_000_000 + nsec as i128
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

impl DigestCache {
    /// The cache at `path`; missing or unreadable means empty (it is only a cache).
    pub fn load(path: &Path) -> DigestCache {
        let store = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Store>(&b).ok())
            .filter(|s| s.version == 1)
            .unwrap_or(Store {
                version: 1,
                files: BTreeMap::new(),
            });
        DigestCache {
            path: path.to_owned(),
            store,
            seen: BTreeSet::new(),
            dirty: false,
        }
    }

    /// Size and BLAKE3 digest of `file`'s content.
    pub fn digest(&mut self, file: &Path) -> io::Result<(u64, [u8; 32], Source)> {
        self.seen.insert(file.to_owned());
        let mut f = File::open(file)?;
        let m = f.metadata()?;
        let key = |hashed_at_ns, blake3| Entry {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            hashed_at_ns,
            blake3,
        };
        if let Some(e) = self.store.files.get(file) {
            let same = key(e.hashed_at_ns, e.blake3.clone()) == *e;
            if same && e.ctime_ns + SETTLE_NS < e.hashed_at_ns {
                if let Ok(h) = blake3::Hash::from_hex(&e.blake3) {
                    return Ok((e.size, *h.as_bytes(), Source::Remembered));
                }
            }
        }
        let hashed_at = now_ns();
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut f)?;
        let total = h.count();
        let digest = h.finalize();
        // Remember only a clean read of a settled file.
        let after = f.metadata()?;
        let entry = key(hashed_at, digest.to_hex().to_string());
        let unchanged = after.len() == total
            && ns(after.ctime(), after.ctime_nsec()) == entry.ctime_ns
            && total == entry.size;
        if unchanged && entry.ctime_ns + SETTLE_NS < hashed_at {
            self.store.files.insert(file.to_owned(), entry);
            self.dirty = true;
        } else if self.store.files.remove(file).is_some() {
            self.dirty = true;
        }
        Ok((total, *digest.as_bytes(), Source::Read))
    }

    /// Write the cache back if anything changed (owner-only, atomically),
    /// keeping only the files asked about since `load`.
    pub fn save(&mut self) -> io::Result<()> {
        let before = self.store.files.len();
        let seen = &self.seen;
        self.store.files.retain(|p, _| seen.contains(p));
        self.dirty |= self.store.files.len() != before;
        if !self.dirty {
            return Ok(());
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(&self.store).map_err(io::Error::other)?;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes))?;
        fs::rename(&tmp, &self.path)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcp-digests-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Backdate a file's ctime-settling by waiting: ctime cannot be set.
    fn settle() {
        std::thread::sleep(Duration::from_millis(1100));
    }

    #[test]
    fn settled_file_is_remembered_and_a_rewrite_is_read_again() {
        let d = dir("settled");
        let f = d.join("kernel");
        fs::write(&f, b"kernel v1").unwrap();
        settle();
        let mut c = DigestCache::load(&d.join("cache.json"));
        let (_, first, src) = c.digest(&f).unwrap();
        assert_eq!(src, Source::Read);
        assert_eq!(first, *blake3::hash(b"kernel v1").as_bytes());
        c.save().unwrap();

        let mut c = DigestCache::load(&d.join("cache.json"));
        let (_, again, src) = c.digest(&f).unwrap();
        assert_eq!((again, src), (first, Source::Remembered));

        // Same size, rewritten in place right away: read again, new digest.
        fs::write(&f, b"kernel v2").unwrap();
        let (_, changed, src) = c.digest(&f).unwrap();
        assert_eq!(src, Source::Read);
        assert_eq!(changed, *blake3::hash(b"kernel v2").as_bytes());
        // Too fresh to be remembered: still read on the next call.
        assert_eq!(c.digest(&f).unwrap().2, Source::Read);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_fresh_file_is_never_remembered() {
        let d = dir("fresh");
        let f = d.join("program");
        fs::write(&f, b"just written").unwrap();
        let mut c = DigestCache::load(&d.join("cache.json"));
        assert_eq!(c.digest(&f).unwrap().2, Source::Read);
        assert_eq!(c.digest(&f).unwrap().2, Source::Read);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_replaced_file_is_read_again() {
        let d = dir("replaced");
        let f = d.join("initrd");
        fs::write(&f, b"one").unwrap();
        settle();
        let mut c = DigestCache::load(&d.join("cache.json"));
        c.digest(&f).unwrap();
        assert_eq!(c.digest(&f).unwrap().2, Source::Remembered);
        // A new file renamed over it (new inode), as a package upgrade does.
        fs::write(d.join("new"), b"two").unwrap();
        fs::rename(d.join("new"), &f).unwrap();
        let (_, h, src) = c.digest(&f).unwrap();
        assert_eq!((h, src), (*blake3::hash(b"two").as_bytes(), Source::Read));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn files_no_longer_asked_about_are_forgotten() {
        let d = dir("forget");
        let (old, new) = (d.join("old-program"), d.join("new-program"));
        fs::write(&old, b"old").unwrap();
        fs::write(&new, b"new").unwrap();
        settle();
        let cache = d.join("cache.json");
        let mut c = DigestCache::load(&cache);
        c.digest(&old).unwrap();
        c.save().unwrap();
        assert!(fs::read_to_string(&cache).unwrap().contains("old-program"));
        let mut c = DigestCache::load(&cache);
        c.digest(&new).unwrap();
        c.save().unwrap();
        let text = fs::read_to_string(&cache).unwrap();
        assert!(
            text.contains("new-program") && !text.contains("old-program"),
            "{text}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_cache_is_an_empty_one() {
        let d = dir("corrupt");
        fs::write(d.join("cache.json"), b"{not json").unwrap();
        let f = d.join("x");
        fs::write(&f, b"x").unwrap();
        let mut c = DigestCache::load(&d.join("cache.json"));
        assert_eq!(c.digest(&f).unwrap().2, Source::Read);
        let _ = fs::remove_dir_all(&d);
    }
}
