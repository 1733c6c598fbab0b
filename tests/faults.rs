//! Faults: the helper killed mid-staging, the disk full during staging, a TAP
//! left behind and owned by another user, an interface squatting the TAP name,
//! two starts of one VM at once, and (on Nanos, with MCP_NANOS_DIR) the helper
//! killed during the `ops build` of a start. Each must end in a clear error or
//! a clean recovery, never a half-state. (The same kill during `build` with
//! placeholder Nanos files runs in CI: tests/ops_build.rs.)

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, ChildGuard};
use common::vm::{self, Guest, Sandbox};

fn image_hash(sb: &Sandbox) -> String {
    fs::read_to_string(sb.state_dir.join("web/image/inputs.hash")).unwrap_or_default()
}

fn scratch_dirs(sb: &Sandbox) -> Vec<PathBuf> {
    fs::read_dir(sb.state_dir.join("web"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn helper_killed_during_staging_keeps_last_good_image() {
    let sb = Sandbox::new("killstage");
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "v1").unwrap();
    sb.write_config("web", &vm::build_only_config(&sb, &vol));
    let out = sb.run(None, &["build", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = image_hash(&sb);
    let good_initrd = fs::read(sb.state_dir.join("web/image/initrd.img")).unwrap();

    // Enough data that staging takes a while; kill -9 the helper mid-way.
    let big = vec![7u8; 64 << 20];
    for i in 0..8 {
        fs::write(vol.join(format!("blob{i}")), &big).unwrap();
    }
    let child = sb
        .cmd(None, &["build", "web"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    let t0 = Instant::now();
    while scratch_dirs(&sb).is_empty() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !scratch_dirs(&sb).is_empty(),
        "never saw the staging scratch dir"
    );
    std::thread::sleep(Duration::from_millis(30));
    guard.kill_now();
    let st = guard.wait();
    assert!(
        !st.success(),
        "the build finished before it could be killed; make the volume larger"
    );

    // The last good image is untouched and still the one in place.
    assert_eq!(image_hash(&sb), good);
    assert_eq!(
        fs::read(sb.state_dir.join("web/image/initrd.img")).unwrap(),
        good_initrd
    );
    // The next build removes the scratch and builds cleanly.
    let out = sb.run(None, &["build", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(built)"));
    assert!(
        scratch_dirs(&sb).is_empty(),
        "scratch left: {:?}",
        scratch_dirs(&sb)
    );
    assert_ne!(image_hash(&sb), good);
    assert_eq!(
        fs::metadata(sb.state_dir.join("web/staging/srv/www/blob7"))
            .unwrap()
            .len(),
        64 << 20
    );
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_during_staging_is_a_clear_error_and_keeps_the_old_image() {
    let test = "disk_full_during_staging_is_a_clear_error_and_keeps_the_old_image";
    if !netns::require_root_or_skip(test) {
        return;
    }
    let sb = Sandbox::new("diskfull");
    fs::create_dir_all(&sb.state_dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "mcp-test-tmpfs"])
        .arg(&sb.state_dir)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Tmpfs(sb.state_dir.clone());
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "small").unwrap();
    sb.write_config("web", &vm::build_only_config(&sb, &vol));
    let out = sb.run(None, &["build", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = image_hash(&sb);

    fs::write(vol.join("big.bin"), vec![1u8; 6 << 20]).unwrap();
    let out = sb.run(None, &["build", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains("staging"),
        "{err}"
    );
    assert_eq!(image_hash(&sb), good, "the last good image was replaced");
    assert!(
        scratch_dirs(&sb).is_empty(),
        "half-staged scratch left: {:?}",
        scratch_dirs(&sb)
    );
    assert!(!sb.state_dir.join("web/staging/srv/www/big.bin").exists());
}

fn standin(test: &str) -> Option<(Sandbox, common::netns::NetNs, Guest)> {
    vm::vm_setup(test, false)
}

fn qemus_for(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.starts_with("qemu-system") && c.contains(&needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn tap_left_behind_owned_by_another_user_is_taken_over() {
    let test = "tap_left_behind_owned_by_another_user_is_taken_over";
    let Some((sb, ns, guest)) = standin(test) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "taken over\n").unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    ns.run(&[
        "ip", "tuntap", "add", "dev", "mcp-web", "mode", "tap", "user", "nobody",
    ]);
    let child = sb
        .cmd(Some(&ns), &["start", "web"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    assert!(
        vm::wait_http(
            &ns,
            "http://10.99.0.2:8080/",
            "taken over\n",
            Duration::from_secs(90)
        )
        .is_some(),
        "guest did not come up on the taken-over TAP"
    );
    let owner = ns.run(&["cat", "/sys/class/net/mcp-web/owner"]);
    let qemu_uid = Command::new("id")
        .args(["-u", &vm::qemu_user().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        owner.trim(),
        String::from_utf8_lossy(&qemu_uid.stdout).trim()
    );
    sb.run(Some(&ns), &["stop", "web"]);
    guard.wait();
    sb.run(Some(&ns), &["cleanup", "web"]);
}

#[test]
fn interface_squatting_the_tap_name_is_refused_untouched() {
    let test = "interface_squatting_the_tap_name_is_refused_untouched";
    let Some((sb, ns, guest)) = standin(test) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    ns.run(&[
        "ip",
        "link",
        "add",
        "mcp-web",
        "type",
        "veth",
        "peer",
        "name",
        "mcp-web-peer",
    ]);
    let out = sb.run(Some(&ns), &["start", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mcp-web") && err.contains("not a TAP"),
        "{err}"
    );
    assert!(
        vm::links(&ns).contains("mcp-web"),
        "the squatting interface was removed"
    );
    assert!(qemus_for(&sb.root).is_empty());
}

#[test]
fn two_starts_at_once_one_wins_never_two_qemus() {
    let test = "two_starts_at_once_one_wins_never_two_qemus";
    let Some((sb, ns, guest)) = standin(test) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "only one\n").unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    let spawn = || {
        ChildGuard::new(
            sb.cmd(Some(&ns), &["start", "web"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    let mut a = spawn();
    let mut b = spawn();
    // One of them exits with the clear error; the other becomes QEMU.
    let t0 = Instant::now();
    let (mut winner, mut loser) = loop {
        if let Some(st) = a.try_wait() {
            break (b, (a, st));
        }
        if let Some(st) = b.try_wait() {
            break (a, (b, st));
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "neither start exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!loser.1.success());
    let err = loser.0.stderr_text();
    assert!(
        err.contains("already running or starting") || err.contains("already running"),
        "{err}"
    );
    assert!(vm::wait_http(
        &ns,
        "http://10.99.0.2:8080/",
        "only one\n",
        Duration::from_secs(90)
    )
    .is_some());
    assert_eq!(
        qemus_for(&sb.root).len(),
        1,
        "QEMUs: {:?}",
        qemus_for(&sb.root)
    );
    sb.run(Some(&ns), &["stop", "web"]);
    winner.wait();
    sb.run(Some(&ns), &["cleanup", "web"]);
}

/// A `start` in the background with its output in a file.
fn start_logged(sb: &Sandbox, ns: &common::netns::NetNs, log: &Path) -> ChildGuard {
    let f = fs::File::create(log).unwrap();
    let child = sb
        .cmd(Some(ns), &["start", "web"])
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    ChildGuard::new(child)
}

fn stop_and_cleanup(sb: &Sandbox, ns: &common::netns::NetNs, guard: &mut ChildGuard) {
    let out = sb.run(Some(ns), &["stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    guard.wait();
    sb.run(Some(ns), &["cleanup", "web"]);
}

/// On a real Nanos guest: the helper killed while the `ops build` of a
/// `start` runs leaves no TAP, no QEMU and no pidfile, and takes ops with it;
/// the last good image still boots and serves; new inputs then build cleanly.
#[test]
fn nanos_helper_killed_during_ops_build_last_good_image_still_boots() {
    let test = "nanos_helper_killed_during_ops_build_last_good_image_still_boots";
    let Some((sb, ns, guest)) = vm::vm_setup(test, true) else {
        return;
    };
    let url = "http://10.99.0.2:8080/";
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "last good\n").unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    let out = sb.run(None, &["build", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    fs::write(vol.join("big.bin"), vec![0x5au8; 384 << 20]).unwrap();
    let ops_pid = vm::kill_helper_during_ops_build(
        &sb,
        Some(&ns),
        &["start", "web"],
        Duration::from_millis(300),
    );
    assert_eq!(
        vm::reap_orphan(ops_pid, Duration::from_secs(60)),
        Some(vm::OrphanEnd::Signalled(libc::SIGKILL)),
        "ops did not die with the killed helper"
    );
    assert!(
        !vm::links(&ns).contains("mcp-web"),
        "TAP created by the killed start"
    );
    assert!(
        qemus_for(&sb.root).is_empty(),
        "a QEMU runs after the killed start"
    );
    assert!(
        !sb.runtime_dir.join("web/qemu.pid").exists(),
        "pidfile left by the killed start"
    );

    // Inputs back to the last good image's: it is reused as is, and boots.
    fs::remove_file(vol.join("big.bin")).unwrap();
    let log = sb.root.join("start-2.log");
    let mut g = start_logged(&sb, &ns, &log);
    let served = vm::wait_http(&ns, url, "last good\n", Duration::from_secs(30));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        served.is_some(),
        "the last good image did not serve: {text}"
    );
    assert!(text.contains("reusing the last good image"), "{text}");
    stop_and_cleanup(&sb, &ns, &mut g);

    // New inputs: built cleanly (the killed build's leftovers cleared) and served.
    fs::write(vol.join("index.html"), "rebuilt\n").unwrap();
    let log = sb.root.join("start-3.log");
    let mut g = start_logged(&sb, &ns, &log);
    let served = vm::wait_http(&ns, url, "rebuilt\n", Duration::from_secs(30));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(served.is_some(), "the rebuilt image did not serve: {text}");
    assert!(text.contains("image built"), "{text}");
    assert!(
        scratch_dirs(&sb).is_empty(),
        "scratch left: {:?}",
        scratch_dirs(&sb)
    );
    stop_and_cleanup(&sb, &ns, &mut g);
}
