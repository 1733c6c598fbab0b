//! TAP devices: created persistent and owned by the QEMU user through the
//! TUNSETIFF/TUNSETOWNER/TUNSETGROUP/TUNSETPERSIST ioctls, then attached to the
//! bridge as an isolated port over rtnetlink (src/netlink.rs).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::netlink::{NetlinkError, Rtnl};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bridge {0:?} does not exist (the NixOS module creates it; create it with `ip link add {0} type bridge` elsewhere)")]
    NoBridge(String),
    #[error("interface {0:?} exists but is not a bridge")]
    NotABridge(String),
    #[error("interface {0:?} exists and is not a TAP device; refusing to touch it")]
    NotATap(String),
    #[error("TAP {name:?} is busy (attached by another process): {source}")]
    Busy { name: String, source: io::Error },
    #[error("TAP {name:?}: {op}: {source}")]
    Ioctl {
        name: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("attaching TAP {tap:?} to bridge {bridge:?}: {detail}")]
    Attach {
        tap: String,
        bridge: String,
        detail: String,
    },
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn is_tap(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("tun_flags")
        .exists()
}

pub fn check_bridge(bridge: &str) -> Result<(), NetError> {
    if !iface_exists(bridge) {
        return Err(NetError::NoBridge(bridge.into()));
    }
    if !Path::new("/sys/class/net")
        .join(bridge)
        .join("bridge")
        .exists()
    {
        return Err(NetError::NotABridge(bridge.into()));
    }
    Ok(())
}

fn tun_fd(name: &str) -> Result<(fs::File, IfReq), NetError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| NetError::Ioctl {
            name: name.into(),
            op: "open /dev/net/tun",
            source,
        })?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: valid fd and a properly sized ifreq.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        let source = io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EBUSY) {
            return Err(NetError::Busy {
                name: name.into(),
                source,
            });
        }
        return Err(NetError::Ioctl {
            name: name.into(),
            op: "TUNSETIFF",
            source,
        });
    }
    Ok((f, req))
}

fn ioctl_int(
    f: &fs::File,
    name: &str,
    op: &'static str,
    req: libc::c_ulong,
    v: libc::c_ulong,
) -> Result<(), NetError> {
    // SAFETY: these tun ioctls take an integer argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), req, v) } < 0 {
        return Err(NetError::Ioctl {
            name: name.into(),
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// What `ensure` found.
#[derive(Debug, PartialEq, Eq)]
pub enum TapOutcome {
    Created,
    /// A TAP of that name was left behind (e.g. after kill -9 of QEMU); it was
    /// taken over and its owner reset.
    Reused,
}

/// Create (or take over) the persistent TAP `name`, owned by uid/gid.
pub fn ensure(name: &str, uid: u32, gid: u32) -> Result<TapOutcome, NetError> {
    let outcome = if iface_exists(name) {
        if !is_tap(name) {
            return Err(NetError::NotATap(name.into()));
        }
        TapOutcome::Reused
    } else {
        TapOutcome::Created
    };
    let (f, _) = tun_fd(name)?;
    let set = (|| {
        ioctl_int(&f, name, "TUNSETOWNER", TUNSETOWNER, uid as libc::c_ulong)?;
        ioctl_int(&f, name, "TUNSETGROUP", TUNSETGROUP, gid as libc::c_ulong)?;
        ioctl_int(&f, name, "TUNSETPERSIST", TUNSETPERSIST, 1)
    })();
    if let Err(e) = set {
        if outcome == TapOutcome::Created {
            // Closing a non-persistent TAP removes it: no half-made device.
            drop(f);
        }
        return Err(e);
    }
    Ok(outcome)
}

/// Attach as an isolated bridge port and bring it up, in that order, so no
/// frame passes the port before it is isolated.
pub fn attach(tap: &str, bridge: &str) -> Result<(), NetError> {
    let err = |e: NetlinkError| NetError::Attach {
        tap: tap.into(),
        bridge: bridge.into(),
        detail: e.to_string(),
    };
    let mut nl = Rtnl::open().map_err(err)?;
    nl.set_master(tap, bridge).map_err(err)?;
    nl.set_isolated(tap, true).map_err(err)?;
    nl.set_up(tap).map_err(err)
}

/// Remove a TAP if it exists (and is a TAP). Returns whether one was removed.
pub fn remove(name: &str) -> Result<bool, NetError> {
    if !iface_exists(name) {
        return Ok(false);
    }
    if !is_tap(name) {
        return Err(NetError::NotATap(name.into()));
    }
    let (f, _) = tun_fd(name)?;
    ioctl_int(&f, name, "TUNSETPERSIST(0)", TUNSETPERSIST, 0)?;
    drop(f);
    Ok(true)
}

/// What `remove_if_owned` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    Absent,
    /// A TAP of that name exists but belongs to another uid (or the VM's uid
    /// is unknown): left alone.
    NotOurs(Option<u32>),
}

/// The TAP's owner uid (`/sys/class/net/NAME/owner`; -1 means none).
pub fn owner(name: &str) -> io::Result<Option<u32>> {
    let s = fs::read_to_string(Path::new("/sys/class/net").join(name).join("owner"))?;
    Ok(s.trim()
        .parse::<i64>()
        .ok()
        .filter(|&u| u >= 0)
        .map(|u| u as u32))
}

/// Remove the TAP `name` only if it is a TAP owned by `uid`.
pub fn remove_if_owned(name: &str, uid: Option<u32>) -> Result<Removal, NetError> {
    if !iface_exists(name) {
        return Ok(Removal::Absent);
    }
    if !is_tap(name) {
        return Err(NetError::NotATap(name.into()));
    }
    let found = owner(name).map_err(|source| NetError::Ioctl {
        name: name.into(),
        op: "reading owner",
        source,
    })?;
    if uid.is_none() || found != uid {
        return Ok(Removal::NotOurs(found));
    }
    remove(name).map(|removed| {
        if removed {
            Removal::Removed
        } else {
            Removal::Absent
        }
    })
}
