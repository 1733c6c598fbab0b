//! Files the helper itself puts into every guest's staging tree, next to
//! the volumes and the program: `/etc/resolv.conf` with exactly the
//! configured resolvers (or none; `opsconfig::resolv_conf`). ops would
//! otherwise write `nameserver 8.8.8.8` (its default when the config names
//! none), which a guest on the isolated bridge can never reach; a file in
//! the staging tree replaces ops's own, as ops adds `Dirs` after it. The
//! Linux stand-in gets the same file through the staged tree in its cpio.
//!
//! A volume that already staged `/etc/resolv.conf` keeps its file: that is
//! the operator's explicit choice (logged).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::Validated;
use crate::inputs::InputHasher;
use crate::opsconfig;

pub const RESOLV_CONF: &str = "etc/resolv.conf";

/// What the helper stages, into the input hash.
pub fn hash_into(v: &Validated, h: &mut InputHasher) {
    h.field("guest-resolv.conf", opsconfig::resolv_conf(v).as_bytes());
}

/// Stage the helper's files under `root` (a scratch staging dir of ours,
/// root-owned), group-readable by `gid`.
pub fn stage(v: &Validated, root: &Path, gid: Option<u32>) -> io::Result<()> {
    let etc = root.join("etc");
    match fs::DirBuilder::new().mode(0o750).create(&etc) {
        Ok(()) => {
            fs::set_permissions(&etc, fs::Permissions::from_mode(0o750))?;
            if let Some(g) = gid {
                std::os::unix::fs::lchown(&etc, None, Some(g))?;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !fs::symlink_metadata(&etc)?.is_dir() {
                return Err(io::Error::other(
                    "a volume staged /etc as a file; cannot add /etc/resolv.conf",
                ));
            }
        }
        Err(e) => return Err(e),
    }
    let dest = root.join(RESOLV_CONF);
    let mut f = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o640)
        .open(&dest)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::warn!(
                "a volume provides /etc/resolv.conf; the guest gets that file, not network.nameservers"
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    f.write_all(opsconfig::resolv_conf(v).as_bytes())?;
    f.set_permissions(fs::Permissions::from_mode(0o640))?;
    if let Some(g) = gid {
        std::os::unix::fs::lchown(&dest, None, Some(g))?;
    }
    Ok(())
}
