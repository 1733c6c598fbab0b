//! PID validation with real processes and /proc: a pidfile naming an
//! unrelated live process is stale (reported by `status`, which changes
//! nothing; removed by `cleanup`; the process never signalled); a process
//! that references the VM's runtime dir and has the recorded start time and
//! uid is trusted, and `stop` ends it through its pidfd.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::ChildGuard;
use common::vm::Sandbox;
use serde_json::json;

// Read /proc here independently of src/procinfo.rs on purpose: if the
// helper's parser took the wrong field, a record made with the same parser
// would still "match" and the trust test would pass for the wrong reason.
fn start_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

fn alive(pid: u32) -> bool {
    // Zombies count as dead: only a running process counts.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn record(sb: &Sandbox, name: &str, pid: u32, ticks: u64) {
    let run = sb.runtime_dir.join(name);
    fs::create_dir_all(run.join("vm")).unwrap();
    fs::write(run.join("vm/qemu.pid"), format!("{pid}\n")).unwrap();
    // The test's processes run as root (uid 0).
    let rec = json!({
        "name": name, "pid": pid, "start_ticks": ticks, "boot_id": boot_id(), "uid": 0,
        "tap": null, "ip": "10.99.0.2", "image_hash": "h", "started_unix": 0
    });
    fs::write(run.join("launch.json"), rec.to_string()).unwrap();
}

fn sleeper(args: &[&str]) -> ChildGuard {
    let child = Command::new("sleep")
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard::new(child)
}

#[test]
fn pidfile_naming_unrelated_process_is_stale_and_process_survives() {
    let sb = Sandbox::new("pidreuse");
    let sleep = sleeper(&["300"]);
    let pid = sleep.id();
    // The PID of an unrelated process, as after PID reuse; the record's start
    // time is right, so only the cmdline check can tell.
    record(&sb, "web", pid, start_ticks(pid));
    let st = sb.status_json(None, "web");
    assert_eq!(st["running"], false, "{st}");
    let reason = st["stale"].as_str().expect("stale reported");
    assert!(reason.contains(&pid.to_string()), "{reason}");
    // status is read-only: only cleanup (holding the VM's lock) removes them.
    assert!(
        sb.runtime_dir.join("web/vm/qemu.pid").exists()
            && sb.runtime_dir.join("web/launch.json").exists(),
        "status removed runtime files"
    );
    fs::create_dir_all(sb.state_dir.join("web")).unwrap();
    let out = sb.run(None, &["cleanup", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !sb.runtime_dir.join("web/vm/qemu.pid").exists()
            && !sb.runtime_dir.join("web/launch.json").exists(),
        "cleanup kept the stale runtime files"
    );
    assert!(alive(pid), "cleanup signalled the unrelated process");

    // stop must not signal it either.
    record(&sb, "web", pid, start_ticks(pid));
    let out = sb.run(None, &["stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("not running"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pid), "the unrelated process was signalled");
}

#[test]
fn wrong_start_time_is_stale_even_when_cmdline_matches() {
    let sb = Sandbox::new("pidtime");
    let run = sb.runtime_dir.join("web");
    fs::create_dir_all(&run).unwrap();
    // A process whose cmdline references the runtime dir...
    let arg = format!("{}", run.join("vm/qmp.sock").display());
    let child = Command::new("sh")
        .args(["-c", "exec sleep 300", &arg])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    let pid = guard.id();
    std::thread::sleep(Duration::from_millis(50));
    // ...but not the recorded start time: a PID reused by another process.
    record(&sb, "web", pid, start_ticks(pid) + 1);
    let st = sb.status_json(None, "web");
    assert_eq!(st["running"], false, "{st}");
    assert!(st["stale"].as_str().unwrap().contains("PID reused"), "{st}");
    assert!(alive(pid));
}

/// A live process (our child) whose command line references the VM's runtime
/// dir, as QEMU's does: `sh -c LOOP <runtime>/qmp.sock`.
fn vm_like_process(sb: &Sandbox) -> (ChildGuard, std::path::PathBuf) {
    let run = sb.runtime_dir.join("web");
    fs::create_dir_all(&run).unwrap();
    let arg = format!("{}", run.join("vm/qmp.sock").display());
    let child = Command::new("sh")
        .args(["-c", "while :; do sleep 1; done", &arg])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    (ChildGuard::new(child), run)
}

#[test]
fn validated_process_is_running_and_stop_ends_it_by_pidfd() {
    let sb = Sandbox::new("pidok");
    let (guard, _run) = vm_like_process(&sb);
    let pid = guard.id();
    record(&sb, "web", pid, start_ticks(pid));
    let st = sb.status_json(None, "web");
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["pid"], pid);
    // No config and no QMP socket: stop falls back to SIGTERM via the pidfd.
    let out = sb.run(None, &["stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SIGTERM"), "{text}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(pid), "stop did not end the validated process");
}

/// The boot id a unit sees can differ from the one the rest of its container
/// sees (systemd's ProtectKernelTunables= remounts /proc/sys): a live VM
/// whose record carries another boot id is still trusted, since its start
/// time, uid and command line match. (A PID from before a reboot has another
/// start time: see wrong_start_time_is_stale_even_when_cmdline_matches.)
#[test]
fn another_boot_id_alone_does_not_make_a_live_vm_stale() {
    let sb = Sandbox::new("pidboot");
    let (guard, run) = vm_like_process(&sb);
    let pid = guard.id();
    record(&sb, "web", pid, start_ticks(pid));
    let p = run.join("launch.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    rec["boot_id"] = "00000000-0000-0000-0000-000000000000".into();
    fs::write(&p, rec.to_string()).unwrap();
    let st = sb.status_json(None, "web");
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["pid"], pid, "{st}");
    assert!(alive(pid));
}

#[test]
fn a_record_for_another_uid_is_not_trusted() {
    let sb = Sandbox::new("piduid");
    let (guard, run) = vm_like_process(&sb);
    let pid = guard.id();
    record(&sb, "web", pid, start_ticks(pid));
    let p = run.join("launch.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    rec["uid"] = 4242.into();
    fs::write(&p, rec.to_string()).unwrap();
    let st = sb.status_json(None, "web");
    assert_eq!(st["running"], false, "{st}");
    assert!(st["stale"].as_str().unwrap().contains("uid"), "{st}");
    assert!(alive(pid));
}
