//! net-probe: a test guest for the isolation matrix and the attack tests. It
//! listens for HTTP and answers `GET /connect/IP:PORT` by trying a TCP
//! connection *from the guest* (1 s timeout): `open`, or `blocked: <error>`;
//! `GET /write/PATH` writes a marker line to the guest file /PATH (`written`
//! or `failed: <error>`); `GET /read/PATH` answers the file's content or
//! `missing`; `GET /resolve/NAME` resolves NAME with the system resolver
//! (getaddrinfo, reading the guest's /etc/resolv.conf) and answers
//! `resolved A.B.C.D ...` or `failed: <error>`; `GET /close` answers
//! `closing` and then closes its listening socket while the program (and the
//! guest) keep running, so the host sees a server that stopped answering (the
//! health tests). Any other request gets `net-probe ready`. One request per
//! connection; one log line per probe on stdout (the serial console).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

const USAGE: &str = "Usage: net-probe [--listen ADDR:PORT]   (default 0.0.0.0:8080)
GET /connect/IP:PORT  -> 'open' or 'blocked: <error>' (TCP connect from here, 1 s timeout)
GET /write/PATH       -> 'written' or 'failed: <error>' (writes a marker line to /PATH)
GET /read/PATH        -> the content of /PATH, or 'missing'
GET /resolve/NAME     -> 'resolved <addresses>' or 'failed: <error>' (getaddrinfo)
GET /close            -> 'closing', then the listening socket is closed (the program keeps running)
GET anything else     -> 'net-probe ready'
";

pub const MARKER: &str = "written by the guest\n";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Set by `GET /close`; the accept loop then drops the listener.
static CLOSE: AtomicBool = AtomicBool::new(false);
static PORT: AtomicU16 = AtomicU16::new(0);

/// The answer for a request target.
fn answer(target: &str) -> (u16, String) {
    if let Some(path) = target.strip_prefix("/write/") {
        return match std::fs::write(format!("/{path}"), MARKER) {
            Ok(()) => (200, "written\n".into()),
            Err(e) => (200, format!("failed: {e}\n")),
        };
    }
    if let Some(path) = target.strip_prefix("/read/") {
        return match std::fs::read_to_string(format!("/{path}")) {
            Ok(s) => (200, s),
            Err(_) => (200, "missing\n".into()),
        };
    }
    if let Some(name) = target.strip_prefix("/resolve/") {
        return match (name, 0).to_socket_addrs() {
            Ok(addrs) => {
                let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                ips.sort();
                ips.dedup();
                (200, format!("resolved {}\n", ips.join(" ")))
            }
            Err(e) => (200, format!("failed: {e}\n")),
        };
    }
    let Some(dest) = target.strip_prefix("/connect/") else {
        return (200, "net-probe ready\n".into());
    };
    let addr: SocketAddr = match dest.parse() {
        Ok(a) => a,
        Err(e) => return (400, format!("bad address {dest:?}: {e}\n")),
    };
    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(_) => (200, "open\n".into()),
        Err(e) => (200, format!("blocked: {e}\n")),
    }
}

fn handle(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // Drain the headers.
    let mut h = String::new();
    while reader.read_line(&mut h)? > 2 {
        h.clear();
    }
    let (status, body) = if target == "/close" {
        (200, "closing\n".to_owned())
    } else {
        answer(&target)
    };
    if ["/connect/", "/write/", "/read/", "/resolve/", "/close"]
        .iter()
        .any(|p| target.starts_with(p))
    {
        println!("probe {target}: {}", body.trim());
    }
    let reason = if status == 200 { "OK" } else { "Bad Request" };
    let mut s = stream;
    write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    if target == "/close" {
        CLOSE.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], PORT.load(Ordering::SeqCst))),
            CONNECT_TIMEOUT,
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut listen = "0.0.0.0:8080".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next() {
                Some(v) => listen = v,
                None => {
                    eprint!("net-probe: --listen needs a value\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("net-probe: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let listener = match TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("net-probe: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    println!("net-probe listening on {listen}");
    PORT.store(
        listener.local_addr().map(|a| a.port()).unwrap_or(0),
        Ordering::SeqCst,
    );
    for conn in listener.incoming().flatten() {
        if CLOSE.load(Ordering::SeqCst) {
            drop(listener);
            println!("net-probe: listener closed; still running, answering nothing");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // A probe waits up to 1 s; serve each connection on its own thread
        // so probes from the host can run side by side.
        std::thread::spawn(move || {
            let _ = handle(conn);
        });
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::answer;
    use std::net::TcpListener;

    #[test]
    fn connect_to_a_listener_is_open_and_to_a_closed_port_blocked() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(answer(&format!("/connect/127.0.0.1:{port}")).1, "open\n");
        drop(l);
        assert!(answer(&format!("/connect/127.0.0.1:{port}"))
            .1
            .starts_with("blocked: "));
        assert_eq!(answer("/connect/nonsense").0, 400);
        assert_eq!(answer("/").1, "net-probe ready\n");
        assert_eq!(answer("/resolve/127.0.0.1").1, "resolved 127.0.0.1\n");
        assert!(answer("/resolve/no-such-name.invalid")
            .1
            .starts_with("failed: "));
    }

    #[test]
    fn write_then_read_a_guest_file() {
        let dir = std::env::temp_dir().join(format!("net-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rel = dir.join("f").display().to_string();
        let rel = rel.trim_start_matches('/');
        assert_eq!(answer(&format!("/read/{rel}")).1, "missing\n");
        assert_eq!(answer(&format!("/write/{rel}")).1, "written\n");
        assert_eq!(answer(&format!("/read/{rel}")).1, super::MARKER);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
