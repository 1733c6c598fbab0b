//! TAP devices: created persistent and owned by the QEMU user through the
//! TUNSETIFF/TUNSETOWNER/TUNSETGROUP/TUNSETPERSIST ioctls (nix's ioctl
//! macros), then attached to the bridge as an isolated port over rtnetlink
//! (the `rtnetlink` crate on a current-thread tokio runtime made only here).
//!
//! rtnetlink cannot create TAP devices (EOPNOTSUPP), hence the ioctls.

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridgePort, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bridge {0:?} does not exist (the NixOS module creates it; create it with `ip link add {0} type bridge` elsewhere)")]
    NoBridge(String),
    #[error("interface {0:?} exists but is not a bridge")]
    NotABridge(String),
    #[error("bridge {bridge:?} does not exist any more: it passed the check but was gone when TAP {tap:?} was to be attached to it")]
    BridgeVanished { tap: String, bridge: String },
    #[error("interface {0:?} exists and is not a TAP device; refusing to touch it")]
    NotATap(String),
    #[error("TAP {name:?} is owned by {}, not by this VM's uid {uid}; refusing to remove it", owner_text(*.owner))]
    ForeignOwner {
        name: String,
        owner: Option<u32>,
        uid: u32,
    },
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

fn owner_text(owner: Option<u32>) -> String {
    match owner {
        Some(u) => format!("uid {u}"),
        None => "no user".into(),
    }
}

// <linux/if_tun.h>: TUNSETIFF, TUNSETPERSIST, TUNSETOWNER and TUNSETGROUP are
// all declared _IOW('T', nr, int). TUNSETIFF really takes a `struct ifreq *`
// (read and written back), so it is a "bad" ioctl with the int-sized code.
nix::ioctl_readwrite_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    IfReq
);
nix::ioctl_write_int!(tun_set_persist, b'T', 203);
nix::ioctl_write_int!(tun_set_owner, b'T', 204);
nix::ioctl_write_int!(tun_set_group, b'T', 206);

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags of the union.
#[repr(C)]
pub struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());

/// Replies from the kernel come at once; never wait forever for a lost one.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub fn is_tap(name: &str) -> bool {
    Path::new("/sys/class/net")
        .join(name)
        .join("tun_flags")
        .exists()
}

/// The uid owning the TAP `name` (`/sys/class/net/NAME/owner`), `None` when
/// it has no owner (-1). An error when there is no such interface or it is
/// not a TAP (no `owner` file).
pub fn owner(name: &str) -> io::Result<Option<u32>> {
    let text = fs::read_to_string(Path::new("/sys/class/net").join(name).join("owner"))?;
    let v: i64 = text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/sys/class/net/{name}/owner: not a uid: {text:?}"),
        )
    })?;
    Ok(u32::try_from(v).ok().filter(|&u| u != u32::MAX))
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

/// Open /dev/net/tun and attach it to the TAP `name` (creating it unless it
/// is persistent already).
fn tun_fd(name: &str) -> Result<fs::File, NetError> {
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
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        _pad: [0; 22],
    };
    if name.len() >= req.name.len() {
        return Err(NetError::Ioctl {
            name: name.into(),
            op: "TUNSETIFF",
            source: Errno::ENAMETOOLONG.into(),
        });
    }
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `f` is an open /dev/net/tun and `req` a live, properly sized
    // and NUL-terminated ifreq the kernel may write back into.
    if let Err(e) = unsafe { tun_set_iff(f.as_raw_fd(), &mut req) } {
        let source = io::Error::from(e);
        if e == Errno::EBUSY {
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
    Ok(f)
}

fn ioctl_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(Errno) -> NetError + 'a {
    move |e| NetError::Ioctl {
        name: name.into(),
        op,
        source: e.into(),
    }
}

/// One of the integer TUN ioctls declared above with `ioctl_write_int!`.
type IntIoctl =
    unsafe fn(libc::c_int, nix::sys::ioctl::ioctl_param_type) -> nix::Result<libc::c_int>;

fn tun_int(
    f: &fs::File,
    name: &str,
    op: &'static str,
    ioctl: IntIoctl,
    v: nix::sys::ioctl::ioctl_param_type,
) -> Result<(), NetError> {
    // SAFETY: `f` is a /dev/net/tun fd attached to `name` (tun_fd), and
    // `ioctl` is TUNSETOWNER, TUNSETGROUP or TUNSETPERSIST, which take a
    // plain integer argument.
    unsafe { ioctl(f.as_raw_fd(), v) }
        .map(drop)
        .map_err(ioctl_err(name, op))
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
    let f = tun_fd(name)?;
    let set = tun_int(&f, name, "TUNSETOWNER", tun_set_owner, uid.into())
        .and_then(|()| tun_int(&f, name, "TUNSETGROUP", tun_set_group, gid.into()))
        .and_then(|()| tun_int(&f, name, "TUNSETPERSIST", tun_set_persist, 1));
    // On failure, closing a TAP this call created (not yet persistent)
    // removes it: no half-made device is left.
    drop(f);
    set.map(|()| outcome)
}

/// What `remove_owned` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The TAP existed and is gone now.
    Removed,
    /// There was no interface of that name.
    Absent,
}

/// Remove a TAP if it exists (and is a TAP), whoever owns it. Returns
/// whether one was removed.
pub fn remove(name: &str) -> Result<bool, NetError> {
    if !iface_exists(name) {
        return Ok(false);
    }
    if !is_tap(name) {
        return Err(NetError::NotATap(name.into()));
    }
    unpersist(name, None)?;
    Ok(true)
}

/// Remove the TAP `name` only if it is a TAP owned by `uid`. An interface
/// that is not a TAP, or a TAP owned by another uid (or by nobody), is left
/// alone with an error naming it and its owner.
pub fn remove_owned(name: &str, uid: u32) -> Result<Removed, NetError> {
    if !iface_exists(name) {
        return Ok(Removed::Absent);
    }
    if !is_tap(name) {
        return Err(NetError::NotATap(name.into()));
    }
    check_owner(name, uid)?;
    unpersist(name, Some(uid))?;
    Ok(Removed::Removed)
}

fn check_owner(name: &str, uid: u32) -> Result<(), NetError> {
    let owner = owner(name).map_err(|source| {
        if iface_exists(name) && !is_tap(name) {
            NetError::NotATap(name.into())
        } else {
            NetError::Ioctl {
                name: name.into(),
                op: "reading its owner",
                source,
            }
        }
    })?;
    if owner == Some(uid) {
        Ok(())
    } else {
        Err(NetError::ForeignOwner {
            name: name.into(),
            owner,
            uid,
        })
    }
}

/// Attach to the TAP and clear its persist flag: it goes away when the fd
/// closes. With `uid`, the owner is checked again while attached (the device
/// is pinned by then), so a TAP replaced in between is not removed.
fn unpersist(name: &str, uid: Option<u32>) -> Result<(), NetError> {
    let f = tun_fd(name)?;
    if let Some(uid) = uid {
        if let Err(e) = check_owner(name, uid) {
            // Not ours: the device was persistent, closing leaves it as it was.
            drop(f);
            return Err(e);
        }
    }
    tun_int(&f, name, "TUNSETPERSIST(0)", tun_set_persist, 0)?;
    drop(f);
    Ok(())
}

/// Make `tap` a port of `bridge`, mark the port `isolated`, then bring the TAP
/// up: three rtnetlink requests, in that order and each acknowledged, so no
/// frame passes the port before it is isolated. A bridge that disappeared
/// since `check_bridge` is reported by name (`NetError::BridgeVanished`).
pub fn attach_isolated(tap: &str, bridge: &str) -> Result<(), NetError> {
    let fail = |detail: String| NetError::Attach {
        tap: tap.into(),
        bridge: bridge.into(),
        detail,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| fail(format!("starting the netlink runtime: {e}")))?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| fail(format!("rtnetlink socket: {e}")))?;
        let conn = tokio::spawn(conn);
        let r = attach_steps(&handle, tap, bridge).await;
        conn.abort();
        r
    })
}

async fn attach_steps(handle: &Handle, tap: &str, bridge: &str) -> Result<(), NetError> {
    let fail = |detail: String| NetError::Attach {
        tap: tap.into(),
        bridge: bridge.into(),
        detail,
    };
    let vanished = || NetError::BridgeVanished {
        tap: tap.into(),
        bridge: bridge.into(),
    };
    let tap_link = lookup(handle, tap)
        .await
        .map_err(&fail)?
        .ok_or_else(|| fail(format!("no network interface named {tap:?}")))?;
    let br_link = lookup(handle, bridge)
        .await
        .map_err(&fail)?
        .ok_or_else(vanished)?;
    if !is_bridge(&br_link) {
        return Err(NetError::NotABridge(bridge.into()));
    }
    let (idx, br_idx) = (tap_link.header.index, br_link.header.index);

    let set_master = handle
        .link()
        .change(LinkUnspec::new_with_index(idx).controller(br_idx).build())
        .execute();
    if let Err(e) = acked(set_master).await {
        // The kernel says EINVAL for a master index that no longer exists.
        if matches!(lookup(handle, bridge).await, Ok(None)) {
            return Err(vanished());
        }
        return Err(fail(format!("making {tap} a port of {bridge}: {e}")));
    }
    let isolate = handle
        .link()
        .set_port(LinkBridgePort::new(idx).isolated(true).build())
        .execute();
    acked(isolate)
        .await
        .map_err(|e| fail(format!("setting bridge port {tap} isolated on: {e}")))?;
    let up = handle
        .link()
        .change(LinkUnspec::new_with_index(idx).up().build())
        .execute();
    acked(up)
        .await
        .map_err(|e| fail(format!("bringing {tap} up: {e}")))
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

/// The link named `name`, or `None` when there is none.
async fn lookup(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, String> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match bounded(links.try_next()).await {
        Ok(Ok(Some(link))) => Ok(Some(link)),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => match nl_io(e) {
            e if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            e => Err(format!("looking up {name}: {e}")),
        },
        Err(timeout) => Err(format!("looking up {name}: {timeout}")),
    }
}

/// Await an acknowledged request, bounded by NETLINK_TIMEOUT; the kernel's
/// refusal comes back as its errno.
async fn acked(req: impl Future<Output = Result<(), rtnetlink::Error>>) -> Result<(), io::Error> {
    bounded(req).await?.map_err(nl_io)
}

async fn bounded<T>(f: impl Future<Output = T>) -> Result<T, io::Error> {
    tokio::time::timeout(NETLINK_TIMEOUT, f).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no reply from the kernel within {} s",
                NETLINK_TIMEOUT.as_secs()
            ),
        )
    })
}

fn nl_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        e => io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_request_codes_match_linux_if_tun_h() {
        // The values <linux/if_tun.h> gives on x86_64 (and the old
        // hand-written constants): _IOW('T', nr, int).
        assert_eq!(
            nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
            0x4004_54ca
        );
        assert_eq!(
            nix::request_code_write!(b'T', 203, std::mem::size_of::<libc::c_int>()),
            0x4004_54cb
        );
        assert_eq!(
            nix::request_code_write!(b'T', 204, std::mem::size_of::<libc::c_int>()),
            0x4004_54cc
        );
        assert_eq!(
            nix::request_code_write!(b'T', 206, std::mem::size_of::<libc::c_int>()),
            0x4004_54ce
        );
    }

    #[test]
    fn owner_of_a_missing_interface_is_an_error() {
        assert!(owner("mcp-no-such-0").is_err());
    }

    #[test]
    fn foreign_owner_error_names_both_uids() {
        let e = NetError::ForeignOwner {
            name: "mcp-web".into(),
            owner: Some(1001),
            uid: 999,
        };
        let s = e.to_string();
        assert!(
            s.contains("mcp-web") && s.contains("1001") && s.contains("999"),
            "{s}"
        );
        let e = NetError::ForeignOwner {
            name: "mcp-web".into(),
            owner: None,
            uid: 999,
        };
        assert!(e.to_string().contains("no user"), "{e}");
    }
}
