//! Bridge-port setup over rtnetlink, without running `ip`: enslave a link to
//! a bridge, mark it an isolated bridge port, bring it up. Every request asks
//! for an acknowledgement and a refusal comes back as the kernel's errno.
//!
//! Message layouts are those of <linux/netlink.h>, <linux/rtnetlink.h> and
//! <linux/if_link.h>: an `nlmsghdr`, an `ifinfomsg`, then `rtattr`s.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_ROUTE: libc::c_int = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const AF_UNSPEC: u8 = 0;
const AF_BRIDGE: u8 = 7;
const IFF_UP: u32 = 0x1;
const NLMSG_HDRLEN: usize = 16;
const ACK_TIMEOUT_SECS: libc::time_t = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("no network interface named {0:?}")]
    NoSuchInterface(String),
    #[error("rtnetlink socket: {0}")]
    Socket(io::Error),
    #[error("{op}: {source}")]
    Request { op: String, source: io::Error },
}

/// A NETLINK_ROUTE socket for link requests.
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<i32, NetlinkError> {
    let c = CString::new(name).map_err(|_| NetlinkError::NoSuchInterface(name.into()))?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(NetlinkError::NoSuchInterface(name.into()));
    }
    Ok(idx as i32)
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, NetlinkError> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The kernel acks at once; never wait forever for a lost reply.
        let tv = libc::timeval {
            tv_sec: ACK_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(Rtnl { fd, seq: 0 })
    }

    /// Send one link request (an `ifinfomsg` plus `attrs`) and wait for its ack.
    fn request(
        &mut self,
        op: String,
        kind: u16,
        family: u8,
        index: i32,
        (flags, change): (u32, u32),
        attrs: &[u8],
    ) -> Result<(), NetlinkError> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(64);
        let len = (NLMSG_HDRLEN + 16 + attrs.len()) as u32;
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[family, 0]);
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&index.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&change.to_ne_bytes());
        msg.extend_from_slice(attrs);
        let fail = |source: io::Error| NetlinkError::Request {
            op: op.clone(),
            source,
        };
        // SAFETY: sending an initialised buffer on our socket; the kernel
        // (nl_pid 0) is the default destination of an unconnected socket.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: receiving into a buffer we own, bounded by its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel within {ACK_TIMEOUT_SECS} s"),
                    )));
                }
                return Err(fail(e));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let mtype = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if mlen < NLMSG_HDRLEN || mlen > rest.len() {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    )));
                }
                if mtype == NLMSG_ERROR && mseq == self.seq && mlen >= NLMSG_HDRLEN + 4 {
                    let errno = i32::from_ne_bytes(
                        rest[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].try_into().unwrap(),
                    );
                    return match errno {
                        0 => Ok(()),
                        e => Err(fail(io::Error::from_raw_os_error(-e))),
                    };
                }
                rest = &rest[mlen.next_multiple_of(4).min(rest.len())..];
            }
        }
    }

    /// `ip link set dev LINK master BRIDGE`
    pub fn set_master(&mut self, link: &str, bridge: &str) -> Result<(), NetlinkError> {
        let (idx, master) = (ifindex(link)?, ifindex(bridge)?);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, IFLA_MASTER, &(master as u32).to_ne_bytes());
        self.request(
            format!("making {link} a port of {bridge}"),
            RTM_NEWLINK,
            AF_UNSPEC,
            idx,
            (0, 0),
            &attrs,
        )
    }

    /// `bridge link set dev LINK isolated on|off` (the link must be a bridge port).
    pub fn set_isolated(&mut self, link: &str, on: bool) -> Result<(), NetlinkError> {
        let idx = ifindex(link)?;
        let mut inner = Vec::new();
        push_attr(&mut inner, IFLA_BRPORT_ISOLATED, &[on as u8]);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, IFLA_PROTINFO | NLA_F_NESTED, &inner);
        self.request(
            format!(
                "setting bridge port {link} isolated {}",
                if on { "on" } else { "off" }
            ),
            RTM_SETLINK,
            AF_BRIDGE,
            idx,
            (0, 0),
            &attrs,
        )
    }

    /// `ip link set dev LINK up`
    pub fn set_up(&mut self, link: &str) -> Result<(), NetlinkError> {
        let idx = ifindex(link)?;
        self.request(
            format!("bringing {link} up"),
            RTM_NEWLINK,
            AF_UNSPEC,
            idx,
            (IFF_UP, IFF_UP),
            &[],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes() {
        let mut b = Vec::new();
        push_attr(&mut b, IFLA_BRPORT_ISOLATED, &[1]);
        assert_eq!(b, [5, 0, 33, 0, 1, 0, 0, 0]);
        let mut outer = Vec::new();
        push_attr(&mut outer, IFLA_PROTINFO | NLA_F_NESTED, &b);
        assert_eq!(&outer[..4], &[12, 0, 12, 0x80]);
        assert_eq!(outer.len(), 12);
    }

    #[test]
    fn unknown_interface_is_named() {
        let e = ifindex("mcp-no-such-0").unwrap_err();
        assert!(e.to_string().contains("mcp-no-such-0"), "{e}");
    }
}
