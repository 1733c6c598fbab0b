//! Secrets through systemd credentials (issue 14). The build unit's drop-in
//! loads each host file with `LoadCredential=ID:PATH` (plus a
//! `SetCredential=ID:<MISSING_PREFIX>PATH` fallback, so a missing file gets
//! a line naming it instead of systemd's bare 243/CREDENTIALS); the helper
//! reads them from `$CREDENTIALS_DIRECTORY` without following links (a
//! root-owned dir of ours; regular files only; at most 1 MiB each) and bakes
//! them into the image at `credentials_target/ID`, mode 0400 in the guest.
//!
//! Where a secret exists, besides its host file: systemd's credentials dir
//! of the build unit (while it runs), the helper's memory (zeroed on drop),
//! and the VM's own state dir: `staging/<target>/ID` (Nanos; root:VM-group
//! 0440) and the image (root:VM-group 0640), plus a build's scratch dirs
//! there while it runs. Never the instance JSON (names only), the Nix store
//! or the journal.
//!
//! A change of content must rebuild the image: each credential enters the
//! input hash as a keyed BLAKE3 digest (the key: 32 random bytes in
//! `<state>/<name>/credentials.key`, root 0600), so neither the input hash
//! (logged, in `status`) nor anything else outside root's files can be used
//! to guess a secret. `credentials.json` (root 0600) keeps the digests of the
//! last good build for `credentials-changed` (run by the NixOS activation
//! script: restart only the VMs whose credential content changed).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::config::{Validated, MAX_CREDENTIAL_BYTES};
use crate::inputs::InputHasher;
use crate::paths::VmPaths;
use crate::privs::RunAs;
use crate::safefs::{self, SafeFsError};

/// The start of the SetCredential= fallback value nixos/lib/units.nix
/// writes; the rest is the host path that was missing.
pub const MISSING_PREFIX: &str = "mcp-unikernel: credential file missing: ";
pub const KEY_FILE: &str = "credentials.key";
pub const RECORD_FILE: &str = "credentials.json";

#[derive(Debug, thiserror::Error)]
pub enum CredError {
    #[error("credentials {names} are configured but $CREDENTIALS_DIRECTORY is not set: build through mcp-unikernel-build@{vm}.service, whose drop-in loads them (LoadCredential=)")]
    NoDirectory { vm: String, names: String },
    #[error(
        "credential {name}: its host file {path} is missing (LoadCredential= had nothing to load)"
    )]
    Missing { name: String, path: String },
    #[error("credential {name}: not in $CREDENTIALS_DIRECTORY ({dir}): the build unit loads no credential of that name (LoadCredential={name}:PATH)")]
    NotLoaded { name: String, dir: PathBuf },
    #[error("credential {name}: {reason}")]
    Unusable { name: String, reason: String },
    #[error("credentials of {vm}: the image would be readable by others than the VM's user: its group {group} (gid {gid}) {who}")]
    SharedGroup {
        vm: String,
        group: String,
        gid: u32,
        who: String,
    },
    #[error(transparent)]
    Fs(#[from] SafeFsError),
}

/// Secret bytes, zeroed when dropped.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: a plain byte of our own Vec.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[derive(Debug)]
pub struct Credential {
    pub name: String,
    pub secret: Secret,
    pub digest: [u8; 32],
}

/// The VM's credentials as loaded for one build.
#[derive(Debug)]
pub struct Credentials {
    pub target: PathBuf,
    pub files: Vec<Credential>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    target: PathBuf,
    /// name -> keyed digest (hex) of the last good build.
    digests: std::collections::BTreeMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The VM's digest key, created on first use.
fn key(paths: &VmPaths) -> Result<[u8; 32], CredError> {
    if let Some(k) = read_key(paths)? {
        return Ok(k);
    }
    let mut k = [0u8; 32];
    // SAFETY: getrandom(2) fills the buffer we own.
    let n = unsafe { libc::getrandom(k.as_mut_ptr().cast(), k.len(), 0) };
    if n != k.len() as isize {
        return Err(CredError::Unusable {
            name: KEY_FILE.into(),
            reason: format!("getrandom: {}", std::io::Error::last_os_error()),
        });
    }
    safefs::write_private(&paths.state, KEY_FILE, &k, 0o600)?;
    Ok(k)
}

fn read_key(paths: &VmPaths) -> Result<Option<[u8; 32]>, CredError> {
    Ok(safefs::read_untrusted(&paths.state, KEY_FILE, 64)?
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()))
}

fn missing_path(bytes: &[u8]) -> Option<String> {
    bytes
        .strip_prefix(MISSING_PREFIX.as_bytes())
        .map(|p| String::from_utf8_lossy(p).trim_end().to_owned())
}

/// Refuse when anyone but the VM's user could read its image: the image and
/// staged tree are root:VM-group, so the group must be the VM's alone (no
/// other member, nobody else's primary group).
pub fn check_exclusive_group(v: &Validated, who: &RunAs) -> Result<(), CredError> {
    if !who.switch {
        return Ok(());
    }
    let g = nix::unistd::Group::from_gid(Gid::from_raw(who.gid))
        .ok()
        .flatten();
    let group = g.as_ref().map(|g| g.name.clone()).unwrap_or_default();
    let shared = |who_: String| CredError::SharedGroup {
        vm: v.name().to_owned(),
        group: group.clone(),
        gid: who.gid,
        who: who_,
    };
    if let Some(g) = &g {
        if let Some(m) = g.mem.iter().find(|m| **m != who.user) {
            return Err(shared(format!("also has the member {m}")));
        }
    }
    // Every other account whose primary group it is.
    // SAFETY: the passwd enumeration of libc, used from this thread only.
    unsafe {
        libc::setpwent();
        loop {
            let pw = libc::getpwent();
            if pw.is_null() {
                break;
            }
            let uid = (*pw).pw_uid;
            if (*pw).pw_gid == who.gid && uid != who.uid {
                let name = std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned();
                libc::endpwent();
                return Err(shared(format!("is also the primary group of {name}")));
            }
        }
        libc::endpwent();
    }
    Ok(())
}

/// Read the VM's credentials from `$CREDENTIALS_DIRECTORY` (None when it
/// has none configured).
pub fn load(v: &Validated, paths: &VmPaths) -> Result<Option<Credentials>, CredError> {
    let names = &v.config.credentials;
    if names.is_empty() {
        return Ok(None);
    }
    let dir = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            return Err(CredError::NoDirectory {
                vm: v.name().to_owned(),
                names: names.join(", "),
            })
        }
    };
    let k = key(paths)?;
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let unusable = |reason: String| CredError::Unusable {
            name: name.clone(),
            reason,
        };
        let bytes = match safefs::read_untrusted(&dir, name, MAX_CREDENTIAL_BYTES) {
            Ok(Some(b)) => Secret(b),
            Ok(None) => {
                return Err(CredError::NotLoaded {
                    name: name.clone(),
                    dir,
                })
            }
            Err(SafeFsError::Unsafe { reason, .. }) => return Err(unusable(reason)),
            Err(e) => return Err(e.into()),
        };
        if let Some(path) = missing_path(bytes.bytes()) {
            return Err(CredError::Missing {
                name: name.clone(),
                path,
            });
        }
        let digest = *blake3::keyed_hash(&k, bytes.bytes()).as_bytes();
        files.push(Credential {
            name: name.clone(),
            secret: bytes,
            digest,
        });
    }
    Ok(Some(Credentials {
        target: v.config.credentials_target.clone(),
        files,
    }))
}

/// For a build: the credentials (None when none are configured), after
/// checking that only the VM's user can read the image they go into.
pub fn for_build(
    v: &Validated,
    paths: &VmPaths,
    who: &RunAs,
) -> Result<Option<Credentials>, CredError> {
    let creds = load(v, paths)?;
    if creds.is_some() {
        check_exclusive_group(v, who)?;
    }
    Ok(creds)
}

pub fn hash_into(creds: Option<&Credentials>, h: &mut InputHasher) {
    if let Some(c) = creds {
        c.hash_into(h);
    }
}

pub fn record(creds: Option<&Credentials>, paths: &VmPaths) -> Result<(), CredError> {
    creds.map_or(Ok(()), |c| c.record(paths))
}

impl Credentials {
    /// Names, guest dir and keyed digests (never the content) into the hash.
    pub fn hash_into(&self, h: &mut InputHasher) {
        h.field(
            "credentials-target",
            self.target.as_os_str().as_encoded_bytes(),
        );
        for c in &self.files {
            h.field("credential", c.name.as_bytes());
            h.field("credential-digest", &c.digest);
        }
    }

    /// Remember the digests of the image just built (or found current).
    pub fn record(&self, paths: &VmPaths) -> Result<(), CredError> {
        let rec = Record {
            target: self.target.clone(),
            digests: self
                .files
                .iter()
                .map(|c| (c.name.clone(), hex(&c.digest)))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&rec).expect("a record serialises");
        safefs::write_private(&paths.state, RECORD_FILE, &bytes, 0o600)?;
        Ok(())
    }

    /// The guest paths, relative: each directory of the target, then each
    /// file (for the stand-in's cpio: dirs 0755, the target 0700, files 0400).
    pub fn cpio_entries(&self) -> Vec<(String, u32, Option<&[u8]>)> {
        let rel = self.target.strip_prefix("/").unwrap_or(&self.target);
        let mut out = vec![];
        let mut acc = PathBuf::new();
        let n = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            acc.push(c);
            let mode = if i + 1 == n { 0o700 } else { 0o755 };
            out.push((acc.to_string_lossy().into_owned(), mode, None));
        }
        for c in &self.files {
            out.push((
                acc.join(&c.name).to_string_lossy().into_owned(),
                0o400,
                Some(c.secret.bytes()),
            ));
        }
        out
    }

    /// Stage into the scratch staging tree `root` (ours, fresh) for ops:
    /// dirs root:gid 0750, files root:gid 0440, created without following
    /// anything (O_EXCL|O_NOFOLLOW; an existing file is a collision).
    pub fn stage(&self, root: &Path, gid: Option<u32>) -> Result<(), CredError> {
        let err = |what: &str, p: &Path, e: nix::Error| CredError::Unusable {
            name: self.target.display().to_string(),
            reason: format!("staging: {what} {}: {e}", p.display()),
        };
        let mut dir = safefs::open_dir(root)?;
        let mut shown = root.to_path_buf();
        let rel = self.target.strip_prefix("/").unwrap_or(&self.target);
        let group = gid.map(Gid::from_raw);
        for c in rel.components() {
            shown.push(c);
            match mkdirat(&dir, c.as_os_str(), Mode::from_bits_truncate(0o750)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(err("creating", &shown, e)),
            }
            let fd = openat(
                &dir,
                c.as_os_str(),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            )
            .map_err(|e| err("opening", &shown, e))?;
            let st = fstat(fd.as_fd()).map_err(|e| err("inspecting", &shown, e))?;
            if st.st_uid != 0 && st.st_uid != Uid::effective().as_raw() {
                return Err(err("not ours:", &shown, nix::Error::EPERM));
            }
            fchmod(&fd, Mode::from_bits_truncate(0o750)).map_err(|e| err("chmod", &shown, e))?;
            fchown(&fd, None, group).map_err(|e| err("chown", &shown, e))?;
            dir = fd;
        }
        for c in &self.files {
            let p = shown.join(&c.name);
            let fd = openat(
                &dir,
                c.name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o400),
            )
            .map_err(|e| err("creating", &p, e))?;
            fchown(&fd, None, group).map_err(|e| err("chown", &p, e))?;
            fchmod(&fd, Mode::from_bits_truncate(0o440)).map_err(|e| err("chmod", &p, e))?;
            let mut f = File::from(fd);
            std::io::Write::write_all(&mut f, c.secret.bytes()).map_err(|e| {
                CredError::Unusable {
                    name: c.name.clone(),
                    reason: format!("staging {}: {e}", p.display()),
                }
            })?;
        }
        Ok(())
    }
}

/// Read a host credential file as systemd's LoadCredential= does (it may be
/// a symlink, e.g. sops-nix's /run/secrets): a regular file, at most 1 MiB,
/// never blocking on a FIFO. None when it does not exist.
fn read_host_file(path: &Path) -> Result<Option<Secret>, String> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let st = fstat(f.as_fd()).map_err(|e| e.to_string())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err("not a regular file".into());
    }
    let mut buf = Vec::new();
    f.take(MAX_CREDENTIAL_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    let s = Secret(buf);
    if s.bytes().len() > MAX_CREDENTIAL_BYTES {
        return Err(format!("larger than {MAX_CREDENTIAL_BYTES} bytes"));
    }
    Ok(Some(s))
}

/// What `credentials-changed` decides for one VM.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Same names, same content as the last good build.
    Unchanged,
    /// These credentials (names only) differ from the last good build.
    Changed(Vec<String>),
    /// A host file is missing or unreadable: leave the running VM alone
    /// (its next start fails naming the file).
    Unreadable(String),
}

/// Compare the host files `pairs` (ID, PATH) with the last good build.
pub fn compare(paths: &VmPaths, pairs: &[(String, PathBuf)]) -> Result<Change, CredError> {
    let rec: Option<Record> = safefs::read_untrusted(&paths.state, RECORD_FILE, 1 << 20)?
        .and_then(|b| serde_json::from_slice(&b).ok());
    let owner_ok = std::fs::symlink_metadata(paths.state.join(RECORD_FILE))
        .map(|m| m.uid() == Uid::effective().as_raw())
        .unwrap_or(true);
    let (Some(rec), Some(k), true) = (rec, read_key(paths)?, owner_ok) else {
        return Ok(Change::Changed(
            pairs.iter().map(|(n, _)| n.clone()).collect(),
        ));
    };
    let mut changed = vec![];
    for (name, path) in pairs {
        let s = match read_host_file(path) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Ok(Change::Unreadable(format!(
                    "credential {name}: {} is missing",
                    path.display()
                )))
            }
            Err(e) => {
                return Ok(Change::Unreadable(format!(
                    "credential {name}: {}: {e}",
                    path.display()
                )))
            }
        };
        let d = hex(blake3::keyed_hash(&k, s.bytes()).as_bytes());
        if rec.digests.get(name) != Some(&d) {
            changed.push(name.clone());
        }
    }
    for old in rec.digests.keys() {
        if !pairs.iter().any(|(n, _)| n == old) {
            changed.push(old.clone());
        }
    }
    Ok(if changed.is_empty() {
        Change::Unchanged
    } else {
        Change::Changed(changed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_sentinel_names_the_path() {
        assert_eq!(
            missing_path(b"mcp-unikernel: credential file missing: /run/secrets/x"),
            Some("/run/secrets/x".into())
        );
        assert_eq!(missing_path(b"-----BEGIN PRIVATE KEY-----"), None);
    }

    #[test]
    fn secrets_never_print_their_bytes() {
        let s = Secret(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
    }
}
