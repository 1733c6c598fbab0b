//! The readiness/health probe, from the host side (no guest agent): a TCP
//! connect, or an HTTP/1.1 GET whose status line is compared, to the guest's
//! bridge IP (user mode: the forwarded host port on its host address).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use crate::config::{ResolvedNet, Validated};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Http { path: String, expect_status: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    /// Where the host connects: the VM's IP and the guest port, or the host
    /// side of the user-mode forward.
    pub addr: SocketAddrV4,
}

impl Probe {
    /// The VM's readiness probe, None when it has none.
    pub fn for_vm(v: &Validated) -> Option<Probe> {
        let r = v.config.readiness.as_ref()?;
        let port = r.port();
        let addr = match &v.net {
            ResolvedNet::Bridge(b) => SocketAddrV4::new(b.ip, port),
            ResolvedNet::User { ports } => {
                // Validation made sure the forward exists.
                let f = ports
                    .iter()
                    .find(|f| f.guest == port && f.protocol == "tcp")?;
                SocketAddrV4::new(connect_address(f.host_address), f.host)
            }
        };
        let kind = match &r.http {
            Some(h) => Kind::Http {
                path: h.path.clone(),
                expect_status: h.expect_status,
            },
            None => Kind::Tcp,
        };
        Some(Probe { kind, addr })
    }

    /// `tcp 10.99.0.2:8080` / `http://10.99.0.2:8080/healthz (expecting 200)`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Tcp => format!("tcp {}", self.addr),
            Kind::Http {
                path,
                expect_status,
            } => format!("http://{}{path} (expecting {expect_status})", self.addr),
        }
    }

    /// One attempt, all of it (connect, request, status line) within `limit`.
    pub fn once(&self, limit: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        let left = || {
            limit
                .checked_sub(t0.elapsed())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("timed out after {:.1} s", limit.as_secs_f64()))
        };
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(self.addr), left()?)
            .map_err(|e| io_reason(&e, limit))?;
        let Kind::Http {
            path,
            expect_status,
        } = &self.kind
        else {
            return Ok(());
        };
        s.set_write_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mcp-unikernel-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.addr
        );
        s.write_all(req.as_bytes())
            .map_err(|e| io_reason(&e, limit))?;
        // The status line is all that is read (at most 256 bytes of it).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 256 {
            s.set_read_timeout(Some(left()?))
                .map_err(|e| e.to_string())?;
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_reason(&e, limit)),
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.lines().next().unwrap_or("").trim_end();
        let status = parse_status(line).ok_or_else(|| {
            if line.is_empty() {
                "connection closed without an HTTP answer".to_owned()
            } else {
                format!("not an HTTP status line: {:?}", truncate(line, 80))
            }
        })?;
        if status == *expect_status {
            Ok(())
        } else {
            Err(format!("HTTP status {status} (expected {expect_status})"))
        }
    }
}

/// Where to connect for a forward listening on `a` (0.0.0.0: loopback).
pub fn connect_address(a: Ipv4Addr) -> Ipv4Addr {
    if a.is_unspecified() {
        Ipv4Addr::LOCALHOST
    } else {
        a
    }
}

fn io_reason(e: &std::io::Error, limit: Duration) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("timed out after {:.1} s", limit.as_secs_f64())
        }
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `HTTP/1.x NNN ...` -> NNN.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn probe(kind: Kind, port: u16) -> Probe {
        Probe {
            kind,
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
        }
    }

    fn serve_once(answer: &'static [u8]) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(answer);
            }
        });
        port
    }

    #[test]
    fn tcp_probe_sees_a_listener_and_a_closed_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(probe(Kind::Tcp, port).once(Duration::from_secs(1)), Ok(()));
        drop(l);
        assert_eq!(
            probe(Kind::Tcp, port).once(Duration::from_secs(1)),
            Err("connection refused".into())
        );
    }

    #[test]
    fn http_probe_compares_the_status() {
        let http = |s| Kind::Http {
            path: "/healthz".into(),
            expect_status: s,
        };
        let port = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(probe(http(200), port).once(Duration::from_secs(2)), Ok(()));
        let port = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\n");
        assert_eq!(
            probe(http(200), port).once(Duration::from_secs(2)),
            Err("HTTP status 404 (expected 200)".into())
        );
        let port = serve_once(b"SSH-2.0-OpenSSH\r\n");
        let e = probe(http(200), port)
            .once(Duration::from_secs(2))
            .unwrap_err();
        assert!(e.contains("not an HTTP status line"), "{e}");
    }

    #[test]
    fn a_server_that_never_answers_times_out_within_the_limit() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t0 = Instant::now();
        let e = probe(
            Kind::Http {
                path: "/".into(),
                expect_status: 200,
            },
            port,
        )
        .once(Duration::from_millis(500))
        .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(l);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status("HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status("HTTP/1.1 20 x"), None);
        assert_eq!(parse_status("FTP 200"), None);
        assert_eq!(connect_address(Ipv4Addr::UNSPECIFIED), Ipv4Addr::LOCALHOST);
    }
}
