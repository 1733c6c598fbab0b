//! Dropping privileges before exec'ing QEMU: QEMU never runs as root.

use std::ffi::CString;

use nix::unistd::{initgroups, setgid, setuid, Gid, Group, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("field `qemu_user` = {0:?}: no such user")]
    NoUser(String),
    #[error("field `qemu_group` = {0:?}: no such group")]
    NoGroup(String),
    #[error("field `qemu_user` = {0:?}: refusing to run QEMU as root")]
    Root(String),
    #[error("field `qemu_group` = {0:?}: refusing to run QEMU with group id 0")]
    RootGroup(String),
    #[error("looking up {what}: {source}")]
    Lookup { what: String, source: nix::Error },
    #[error("dropping privileges to {user}: {op}: {source}")]
    Drop {
        user: String,
        op: &'static str,
        source: nix::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// False when the helper itself is not root: QEMU then runs as the caller.
    pub switch: bool,
}

/// Who QEMU runs as: the configured user/group when we are root, else ourselves.
pub fn resolve(user: &str, group: &str) -> Result<RunAs, PrivError> {
    if !Uid::effective().is_root() {
        return Ok(RunAs {
            user: format!("uid {}", Uid::current()),
            uid: Uid::current().as_raw(),
            gid: Gid::current().as_raw(),
            switch: false,
        });
    }
    let u = User::from_name(user)
        .map_err(|source| PrivError::Lookup {
            what: format!("user {user:?}"),
            source,
        })?
        .ok_or_else(|| PrivError::NoUser(user.into()))?;
    if u.uid.is_root() {
        return Err(PrivError::Root(user.into()));
    }
    let g = Group::from_name(group)
        .map_err(|source| PrivError::Lookup {
            what: format!("group {group:?}"),
            source,
        })?
        .ok_or_else(|| PrivError::NoGroup(group.into()))?;
    if g.gid.as_raw() == 0 {
        return Err(PrivError::RootGroup(group.into()));
    }
    Ok(RunAs {
        user: user.into(),
        uid: u.uid.as_raw(),
        gid: g.gid.as_raw(),
        switch: true,
    })
}

/// Become `who` for good: supplementary groups from the group database
/// (`initgroups`, so a `kvm` membership gives QEMU /dev/kvm), gid, then uid.
/// With the uid change from root, the permitted and effective capability
/// sets are cleared.
pub fn drop_to(who: &RunAs) -> Result<(), PrivError> {
    if !who.switch {
        return Ok(());
    }
    let e = |op, source| PrivError::Drop {
        user: who.user.clone(),
        op,
        source,
    };
    let name = CString::new(who.user.as_str()).map_err(|_| e("initgroups", nix::Error::EINVAL))?;
    initgroups(&name, Gid::from_raw(who.gid)).map_err(|s| e("initgroups", s))?;
    setgid(Gid::from_raw(who.gid)).map_err(|s| e("setgid", s))?;
    setuid(Uid::from_raw(who.uid)).map_err(|s| e("setuid", s))?;
    if Uid::effective().is_root() || setuid(Uid::from_raw(0)).is_ok() {
        return Err(e("verify", nix::Error::EPERM));
    }
    Ok(())
}
