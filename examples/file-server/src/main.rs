//! file-server: the example guest program of mcp-unikernel.
//!
//! A small HTTP/1.1 server (std only, so it links statically) that answers
//! every GET (and HEAD) with `200` and the *current* contents of one file,
//! read again for every request, or `404` when the file does not exist. One
//! log line per request goes to stdout (the VM's serial console, hence the
//! journal). SIGTERM/SIGINT end it with exit status 0.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
file-server: serve one file over HTTP/1.1, re-read on every request

Usage: file-server --file PATH [--listen ADDR:PORT] [--content-type TYPE]

Options:
  --file PATH          the file to serve (required). Every GET or HEAD, whatever
                       its path, gets 200 and the file's contents as they are at
                       that moment; 404 when the file does not exist, 500 when it
                       cannot be read
  --listen ADDR:PORT   address to listen on [default: 0.0.0.0:8080]
  --content-type TYPE  Content-Type of the answer [default: from the file name's
                       extension, e.g. text/html; charset=utf-8 for .html]
  -h, --help           print this help
  -V, --version        print the version

Other methods get 405. Connections are kept alive (HTTP/1.1 rules) for up to
10 s of idleness; at most 64 are served at once (503 beyond that).
Logs one line per request to stdout:
  <UTC time> <peer> \"<request line>\" <status> <body bytes>
SIGTERM or SIGINT: exit with status 0.
";

const MAX_HEAD: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies up to this size are read and discarded to keep the
/// connection usable; larger ones end the connection after the answer.
const MAX_DISCARD: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    listen: String,
    file: PathBuf,
    content_type: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Cli {
    Run(Config),
    Help,
    Version,
}

fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut listen = None;
    let mut file = None;
    let mut content_type = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => Err(format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            "--listen" => listen = Some(value("--listen")?),
            "--file" => file = Some(PathBuf::from(value("--file")?)),
            "--content-type" => content_type = Some(value("--content-type")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let file = file.ok_or("--file PATH is required")?;
    if file.as_os_str().is_empty() {
        return Err("--file must not be empty".into());
    }
    Ok(Cli::Run(Config {
        listen: listen.unwrap_or_else(|| "0.0.0.0:8080".into()),
        file,
        content_type,
    }))
}

fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "toml" | "md" => "text/plain; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    target: String,
    version: Version,
    headers: Vec<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    /// Not HTTP: 400.
    Malformed(&'static str),
    /// HTTP/2 or later, HTTP/0.9...: 505.
    UnsupportedVersion,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0
    /// closes it unless `Connection: keep-alive`.
    fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.connection_has("close"),
            Version::Http10 => self.connection_has("keep-alive"),
        }
    }

    fn request_line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.version)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parse a request head (request line and header lines, without the blank
/// line that ends it). Lines may end in CRLF or bare LF.
fn parse_head(head: &[u8]) -> Result<Request, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or(ParseError::Malformed("empty request"))?;
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => {
            return Err(ParseError::Malformed(
                "request line is not METHOD TARGET VERSION",
            ))
        }
    };
    if !is_token(method) {
        return Err(ParseError::Malformed("bad method"));
    }
    if target.is_empty() || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(ParseError::Malformed("bad request target"));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if v.starts_with("HTTP/") => return Err(ParseError::UnsupportedVersion),
        _ => return Err(ParseError::Malformed("bad HTTP version")),
    };
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or(ParseError::Malformed("header line without ':'"))?;
        if !is_token(name) {
            // Also rejects obsolete line folding (a line starting with space).
            return Err(ParseError::Malformed("bad header name"));
        }
        headers.push((
            name.to_owned(),
            value.trim_matches(|c| c == ' ' || c == '\t').to_owned(),
        ));
    }
    let req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        headers,
    };
    if req.version == Version::Http11 && req.header("host").is_none() {
        return Err(ParseError::Malformed("HTTP/1.1 request without Host"));
    }
    Ok(req)
}

enum Head {
    /// The connection ended (or idled out) before a request started.
    Closed,
    Complete(Vec<u8>),
    TooLarge,
}

/// Read up to and including the blank line that ends a request head; the
/// blank line is not returned. Leading empty lines are skipped (RFC 9112 2.2).
fn read_head<R: BufRead>(r: &mut R) -> io::Result<Head> {
    let mut head = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .by_ref()
            .take((MAX_HEAD + 1 - head.len()) as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(if head.is_empty() {
                Head::Closed
            } else {
                Head::Complete(head)
            });
        }
        if !line.ends_with(b"\n") {
            if head.len() + line.len() > MAX_HEAD {
                return Ok(Head::TooLarge);
            }
            // EOF in the middle of a line: treat what we have as the head.
            head.extend_from_slice(&line);
            return Ok(Head::Complete(head));
        }
        let blank = line == b"\n" || line == b"\r\n";
        if blank {
            if head.is_empty() {
                continue;
            }
            return Ok(Head::Complete(head));
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

// ---------------------------------------------------------------- answers

struct Response {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    extra: Vec<(&'static str, &'static str)>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn text(status: u16, msg: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8".into(),
        body: format!("{status} {}: {msg}\n", reason(status)).into_bytes(),
        extra: Vec::new(),
    }
}

/// The answer to a parsed request: the file's current contents for GET/HEAD.
fn respond(cfg: &Config, req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = text(405, "only GET and HEAD");
        r.extra.push(("Allow", "GET, HEAD"));
        return r;
    }
    match std::fs::read(&cfg.file) {
        Ok(body) => Response {
            status: 200,
            content_type: cfg
                .content_type
                .clone()
                .unwrap_or_else(|| content_type_for(&cfg.file).to_owned()),
            body,
            extra: Vec::new(),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            text(404, &format!("{} does not exist", cfg.file.display()))
        }
        Err(e) => text(500, &format!("cannot read {}: {e}", cfg.file.display())),
    }
}

fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
    .into_bytes();
    for (k, v) in &resp.extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

// ---------------------------------------------------------------- logging

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (UTC).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn now() -> String {
    format_utc(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

fn log(line: &str) {
    // Never panic on a closed stdout.
    let _ = writeln!(io::stdout().lock(), "{line}");
}

fn log_request(peer: &SocketAddr, request_line: &str, status: u16, bytes: usize) {
    log(&format!(
        "{} {peer} \"{}\" {status} {bytes}",
        now(),
        request_line.escape_debug()
    ));
}

// ---------------------------------------------------------------- serving

fn handle(cfg: &Config, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let head = match read_head(&mut reader) {
            Ok(Head::Complete(h)) => h,
            Ok(Head::Closed) => return Ok(()),
            Ok(Head::TooLarge) => {
                let resp = text(431, "request head over 16 KiB");
                log_request(&peer, "-", resp.status, resp.body.len());
                return write_response(&mut writer, &resp, false, false);
            }
            // Idle timeout or reset: just close.
            Err(_) => return Ok(()),
        };
        let req = match parse_head(&head) {
            Ok(r) => r,
            Err(e) => {
                let resp = match e {
                    ParseError::Malformed(why) => text(400, why),
                    ParseError::UnsupportedVersion => text(505, "only HTTP/1.0 and HTTP/1.1"),
                };
                let first =
                    String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(b""));
                log_request(&peer, first.trim_end(), resp.status, resp.body.len());
                return write_response(&mut writer, &resp, false, false);
            }
        };
        let mut keep_alive = req.keep_alive();
        // A request body (unusual for GET) is read and dropped so that the
        // next request starts at the right byte; anything we cannot frame
        // ends the connection after this answer.
        if req.header("transfer-encoding").is_some() {
            keep_alive = false;
        } else if let Some(cl) = req.header("content-length") {
            match cl.parse::<u64>() {
                Ok(n) if n <= MAX_DISCARD => {
                    io::copy(&mut reader.by_ref().take(n), &mut io::sink())?;
                }
                _ => keep_alive = false,
            }
        }
        let resp = respond(cfg, &req);
        let head_only = req.method == "HEAD";
        log_request(
            &peer,
            &req.request_line(),
            resp.status,
            if head_only { 0 } else { resp.body.len() },
        );
        write_response(&mut writer, &resp, head_only, keep_alive)?;
        if !keep_alive {
            let _ = writer.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, cfg: Arc<Config>) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log(&format!("{} accept failed: {e}", now()));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            let slot = Slot(active.clone());
            let resp = text(503, "too many connections");
            log_request(&peer, "-", resp.status, resp.body.len());
            let mut s = stream;
            let _ = write_response(&mut s, &resp, false, false);
            drop(slot);
            continue;
        }
        let slot = Slot(active.clone());
        let cfg = cfg.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = handle(&cfg, stream, peer) {
                    if e.kind() != io::ErrorKind::BrokenPipe
                        && e.kind() != io::ErrorKind::ConnectionReset
                    {
                        log(&format!("{} {peer} connection error: {e}", now()));
                    }
                }
            });
        if let Err(e) = spawned {
            log(&format!("{} cannot start a thread for {peer}: {e}", now()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- signals

#[cfg(target_os = "linux")]
mod signals {
    use std::os::raw::{c_int, c_void};

    extern "C" {
        fn signal(signum: c_int, handler: usize) -> usize;
        fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
        fn _exit(status: c_int) -> !;
    }

    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    extern "C" fn on_signal(_sig: c_int) {
        // Only async-signal-safe calls here: write(2) and _exit(2). Every log
        // line is already flushed (stdout is line buffered).
        const MSG: &[u8] = b"file-server: terminating on signal, exiting with status 0\n";
        unsafe {
            write(1, MSG.as_ptr().cast(), MSG.len());
            _exit(0);
        }
    }

    pub fn exit_cleanly_on_term() {
        let handler = on_signal as extern "C" fn(c_int) as usize;
        unsafe {
            signal(SIGTERM, handler);
            signal(SIGINT, handler);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod signals {
    pub fn exit_cleanly_on_term() {}
}

fn main() -> ExitCode {
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(cfg)) => cfg,
        Ok(Cli::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Cli::Version) => {
            println!("file-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("file-server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    signals::exit_cleanly_on_term();
    let listener = match TcpListener::bind(cfg.listen.as_str()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("file-server: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| cfg.listen.clone());
    log(&format!(
        "{} file-server listening on {addr}, serving {}",
        now(),
        cfg.file.display()
    ));
    match serve(listener, Arc::new(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file-server: {e}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Cli, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn args_defaults_and_forms() {
        assert_eq!(
            args(&["--file", "/srv/www/index.html"]).unwrap(),
            Cli::Run(Config {
                listen: "0.0.0.0:8080".into(),
                file: "/srv/www/index.html".into(),
                content_type: None
            })
        );
        assert_eq!(
            args(&[
                "--listen=127.0.0.1:9000",
                "--file=/x",
                "--content-type",
                "text/plain"
            ])
            .unwrap(),
            Cli::Run(Config {
                listen: "127.0.0.1:9000".into(),
                file: "/x".into(),
                content_type: Some("text/plain".into())
            })
        );
        assert_eq!(args(&["--help"]).unwrap(), Cli::Help);
        assert_eq!(args(&["-V"]).unwrap(), Cli::Version);
    }

    #[test]
    fn args_errors() {
        assert!(args(&[]).unwrap_err().contains("--file"));
        assert!(args(&["--file"]).unwrap_err().contains("needs a value"));
        assert!(args(&["--file", "/x", "--port", "1"])
            .unwrap_err()
            .contains("--port"));
        assert!(args(&["--file="]).is_err());
    }

    #[test]
    fn parses_a_get() {
        let r = parse_head(b"GET /index.html HTTP/1.1\r\nHost: 10.99.0.2:8080\r\nUser-Agent: curl/7.88\r\nAccept: */*\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/index.html");
        assert_eq!(r.version, Version::Http11);
        assert_eq!(r.header("host"), Some("10.99.0.2:8080"));
        assert_eq!(r.header("USER-AGENT"), Some("curl/7.88"));
        assert!(r.keep_alive());
        assert_eq!(r.request_line(), "GET /index.html HTTP/1.1");
    }

    #[test]
    fn bare_lf_and_http10() {
        let r = parse_head(b"HEAD / HTTP/1.0\nConnection: Keep-Alive\n").unwrap();
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.version, Version::Http10);
        assert!(r.keep_alive());
        let r = parse_head(b"GET / HTTP/1.0").unwrap();
        assert!(!r.keep_alive());
    }

    #[test]
    fn connection_close_tokens() {
        let r = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n").unwrap();
        assert!(!r.keep_alive());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"GET /"[..],
            b"GET  / HTTP/1.1\r\nHost: x",
            b"GET / HTTP/1.1 extra\r\nHost: x",
            b"G(T / HTTP/1.1\r\nHost: x",
            b"GET / FTP/1.0",
            b"GET / HTTP/1.1\r\nno colon here",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded: continuation",
            b"GET / HTTP/1.1\r\nBad Name: x",
            b"GET / HTTP/1.1",
            b"GET /\x01 HTTP/1.1\r\nHost: x",
            b"\xff\xfe / HTTP/1.1",
        ] {
            assert!(
                matches!(parse_head(bad), Err(ParseError::Malformed(_))),
                "{:?} should be rejected",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_head(b"GET / HTTP/2.0"),
            Err(ParseError::UnsupportedVersion)
        );
    }

    #[test]
    fn reads_heads_and_limits_size() {
        let mut r = io::Cursor::new(
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        );
        match read_head(&mut r).unwrap() {
            Head::Complete(h) => assert_eq!(h, b"GET / HTTP/1.1\r\nHost: x\r\n"),
            _ => panic!("first head"),
        }
        match read_head(&mut r).unwrap() {
            Head::Complete(h) => assert!(h.starts_with(b"GET /2 ")),
            _ => panic!("second head"),
        }
        assert!(matches!(read_head(&mut r).unwrap(), Head::Closed));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            read_head(&mut io::Cursor::new(big)).unwrap(),
            Head::TooLarge
        ));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type_for(Path::new("/srv/www/index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type_for(Path::new("/a/b.json")), "application/json");
        assert_eq!(
            content_type_for(Path::new("/a/b")),
            "application/octet-stream"
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_987_753), "2026-11-29T21:29:13Z");
    }

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_current_contents_404_405_and_keep_alive() {
        let dir = std::env::temp_dir().join(format!("file-server-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("index.html");
        std::fs::write(&file, "v1\n").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = Arc::new(Config {
            listen: addr.to_string(),
            file: file.clone(),
            content_type: None,
        });
        std::thread::spawn(move || serve(listener, cfg));

        let out = exchange(
            addr,
            b"GET /anything HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{out}"
        );
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nv1\n"), "{out}");

        // Re-read per request.
        std::fs::write(&file, "version two\n").unwrap();
        let out = exchange(addr, b"GET / HTTP/1.0\r\n\r\n");
        assert!(out.ends_with("\r\n\r\nversion two\n"), "{out}");

        // Two requests on one connection (the first with a body to skip), HEAD.
        let out = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcdHEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.contains("Connection: keep-alive"), "{out}");
        assert!(
            out.ends_with("Connection: close\r\n\r\n"),
            "HEAD has no body: {out}"
        );

        let out = exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET, HEAD\r\n"), "{out}");

        let out = exchange(addr, b"nonsense\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

        std::fs::remove_file(&file).unwrap();
        let out = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
