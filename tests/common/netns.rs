//! Network namespaces and child processes for tests, with guards that clean
//! up on drop (also when a test panics): a namespace is deleted, a child is
//! killed by its own PID only if it is still ours and unreaped.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created for one test; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> NetNs {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let short: String = prefix.chars().take(8).collect();
        let name = format!("mcpt-{short}-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = NetNs { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program`: the namespace is entered, then program
    /// is exec'd in place (same PID as the spawned child).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn try_run(&self, argv: &[&str]) -> Output {
        self.cmd(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .expect("spawn in namespace")
    }

    /// Run and return stdout; panic with the command, status and stderr on failure.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.try_run(argv);
        assert!(
            out.status.success(),
            "in {}: {:?} failed ({}): {}",
            self.name,
            argv,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process we started; on drop, if it has not been reaped, it gets
/// SIGKILL by its PID and is reaped.
pub struct ChildGuard {
    child: Child,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard {
            child,
            reaped: None,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    pub fn wait(&mut self) -> ExitStatus {
        if let Some(st) = self.reaped {
            return st;
        }
        let st = self.child.wait().expect("wait for child");
        self.reaped = Some(st);
        st
    }

    /// SIGKILL now (our own child, by PID), without reaping.
    pub fn kill_now(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
        }
    }

    /// Whatever the child wrote to a piped stderr (after it exited).
    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Report a test as skipped, by name with the reason: on stderr, and in the
/// file named by MCP_SKIP_LOG (tests/run lists and counts those).
pub fn skip(test: &str, reason: &str) {
    let line = format!("skipped: {test} ({reason})");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("MCP_SKIP_LOG") {
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// True when running as root; otherwise reports the test skipped.
pub fn require_root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        skip(
            test,
            "needs root for namespaces, TAPs and QEMU as another user",
        );
        false
    }
}
