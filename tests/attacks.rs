//! The root helper under attack (issue 12), with real processes: a guest
//! program that would run its own code on the host during the build, a
//! compromised QEMU (its uid) planting symlinks and forging runtime files,
//! one VM's uid reaching for another VM's disk, socket or TAP, and values
//! that would inject QEMU options. The attacker's steps run as the VM's uid
//! (`setpriv --reuid/--regid --clear-groups`). See docs/security.md.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::netns::{self, ChildGuard, NetNs};
use common::opsimage::{ops_image, placeholder_nanos, text};
use common::vm::{self, Guest, Sandbox};
use serde_json::json;

/// Run `argv` as `user` (uid and gid of that name, no supplementary groups).
fn as_user(user: &str, argv: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
            "--",
        ])
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv")
}

fn sh_as(user: &str, script: &str) -> Output {
    as_user(user, &["sh", "-c", script])
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn need_users(test: &str, users: &[&str]) -> bool {
    for u in users {
        if !user_exists(u) {
            netns::skip(
                test,
                &format!("no user {u} (.ci/run creates mcpt-a, mcpt-b, mcpt-c)"),
            );
            return false;
        }
    }
    true
}

/// Compile a C program with Debian's gcc (the attacker's tools).
fn cc(out: &Path, src: &str, args: &[&str]) -> Result<(), String> {
    let c = out.with_extension("c");
    fs::write(&c, src).unwrap();
    let o = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(&c)
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "gcc failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// A guest program built by someone else: dynamically linked (so ops would
/// resolve its libraries by executing it) with a PT_INTERP pointing at the
/// attacker's own static program, which records who ran it in `marker`.
#[test]
fn hostile_pt_interp_never_runs_on_the_host() {
    let test = "hostile_pt_interp_never_runs_on_the_host";
    if !netns::require_root_or_skip(test) || !need_users(test, &["mcpt-a"]) {
        return;
    }
    let ops = match vm::ops() {
        Ok(o) => o,
        Err(e) => return netns::skip(test, &e),
    };
    let sb = Sandbox::new("ptinterp");
    let tools = sb.root.join("tools");
    fs::create_dir_all(&tools).unwrap();
    fs::set_permissions(&sb.root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&tools, fs::Permissions::from_mode(0o755)).unwrap();
    let marker = sb.root.join("marker");
    let interp = tools.join("evil-interp");
    // Freestanding (no libc: a libc program cannot start as a loader): open
    // the marker, write to it, exit.
    let evil = format!(
        r#"static long sys3(long n, long a, long b, long c) {{
  long r; __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}}
static const char path[] = "{}";
static const char msg[] = "ran on the host\n";
void _start(void) {{
  long fd = sys3(2, (long)path, 01 | 0100 | 02000, 0644);
  if (fd >= 0) sys3(1, fd, (long)msg, sizeof msg - 1);
  sys3(231, 0, 0, 0);
}}
"#,
        marker.display()
    );
    if let Err(e) = cc(
        &interp,
        &evil,
        &["-static", "-nostdlib", "-fno-stack-protector", "-O1"],
    ) {
        return netns::skip(test, &e);
    }
    let prog = tools.join("victim");
    cc(
        &prog,
        "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
        &[&format!("-Wl,--dynamic-linker={}", interp.display())],
    )
    .unwrap();
    // The trap works: executed directly, the program runs the attacker's code.
    let _ = Command::new(&prog)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output();
    assert!(
        marker.exists(),
        "test setup: the hostile interpreter did not run when executed"
    );
    fs::remove_file(&marker).unwrap();

    let nanos = sb.root.join("nanos");
    placeholder_nanos(&nanos);
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "x\n").unwrap();
    sb.write_config(
        "web",
        &json!({
            "schema_version": 1, "name": "web", "program": prog,
            "network": { "ip": "10.99.0.2" },
            "volumes": [ { "source": vol, "target": "/srv/www" } ],
            "nanos_dir": nanos, "ops": ops, "accel": "tcg",
            "qemu_user": "mcpt-a", "qemu_group": "mcpt-a"
        }),
    );
    let out = sb.run(None, &["build", "web"]);
    assert!(
        !marker.exists(),
        "the guest program's interpreter ran on the host: {:?}\n{}",
        fs::read_to_string(&marker),
        text(&out)
    );
    // It built cleanly: the program and its interpreter are in the image,
    // where only the guest can run them.
    assert!(out.status.success(), "{}", text(&out));
    let ls = ops_image(
        &ops,
        &sb,
        &["ls", "under-test", &tools.display().to_string()],
    );
    assert!(
        text(&ls).contains("victim") && text(&ls).contains("evil-interp"),
        "{}",
        text(&ls)
    );
    assert!(!marker.exists());

    // A PT_INTERP naming a host file that is not a loader (or not public) is
    // refused with one line naming it, and nothing is half-staged.
    let prog2 = tools.join("victim2");
    cc(
        &prog2,
        "int main(void){return 0;}\n",
        &["-Wl,--dynamic-linker=/etc/shadow"],
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(sb.config_dir.join("web.json")).unwrap()).unwrap();
    cfg["program"] = json!(prog2);
    sb.write_config("web", &cfg);
    let out = sb.run(None, &["build", "web"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/etc/shadow") && err.contains("interpreter"),
        "{err}"
    );
    assert!(fs::read_dir(sb.state_dir.join("web"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains(".tmp-")));
}

/// Two stand-in VMs, `a` (uid mcpt-a) and `b` (uid mcpt-b), serving on the
/// bridge of one namespace.
struct TwoVms {
    sb: Sandbox,
    ns: NetNs,
    a: ChildGuard,
    b: ChildGuard,
}

fn start_vm(sb: &Sandbox, ns: &NetNs, name: &str) -> ChildGuard {
    let child = sb
        .cmd(Some(ns), &["start", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard::new(child)
}

/// One two-VM test at a time: TCG guests on 2 cores starve each other.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn two_vms(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, TwoVms)> {
    if !need_users(test, &["mcpt-a", "mcpt-b"]) {
        return None;
    }
    let heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (sb, ns, guest) = vm::vm_setup(test, false)?;
    let Guest::Standin(_) = &guest else {
        unreachable!()
    };
    for (name, ip, user) in [("a", "10.99.0.2", "mcpt-a"), ("b", "10.99.0.3", "mcpt-b")] {
        let vol = sb.root.join(format!("www-{name}"));
        fs::create_dir_all(&vol).unwrap();
        fs::write(vol.join("index.html"), format!("vm {name}\n")).unwrap();
        let mut cfg = guest.config(name, ip, &vol);
        cfg["qemu_user"] = user.into();
        cfg["qemu_group"] = user.into();
        sb.write_config(name, &cfg);
    }
    let a = start_vm(&sb, &ns, "a");
    let b = start_vm(&sb, &ns, "b");
    for (ip, want) in [("10.99.0.2", "vm a\n"), ("10.99.0.3", "vm b\n")] {
        assert!(
            vm::wait_http(
                &ns,
                &format!("http://{ip}:8080/"),
                want,
                Duration::from_secs(90)
            )
            .is_some(),
            "no HTTP from {ip}"
        );
    }
    Some((heavy, TwoVms { sb, ns, a, b }))
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'))
        .unwrap_or(false)
}

fn stop_and_clean(vms: &mut TwoVms) {
    for (name, g) in [("a", &mut vms.a), ("b", &mut vms.b)] {
        vms.sb.run(Some(&vms.ns), &["stop", name]);
        let _ = g.wait();
        vms.sb.run(Some(&vms.ns), &["cleanup", name]);
    }
}

/// A compromised QEMU (its uid) plants symlinks to a root-owned file under
/// every name root uses, in every directory of the VM's state and runtime
/// trees that uid can write; a whole start/status/stop/cleanup cycle must
/// never write, chmod or chown through them.
#[test]
fn planted_symlinks_never_make_root_write_outside() {
    let test = "planted_symlinks_never_make_root_write_outside";
    let Some((_heavy, mut vms)) = two_vms(test) else {
        return;
    };
    let victim = vms.sb.root.join("victim");
    fs::write(&victim, "root's file\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(&victim).unwrap();
    let names = [
        "launch.json",
        ".launch.json.tmp",
        "qemu.pid",
        "qmp.sock",
        "lock",
        "disk.img",
        "initrd.img",
        "inputs.hash",
        "ops-config.json",
        "vm",
    ];
    let mut planted = Vec::new();
    let mut writable = Vec::new();
    let plant = |planted: &mut Vec<PathBuf>, writable: &mut Vec<PathBuf>, root: &Path| {
        let dirs: Vec<PathBuf> = walk_dirs(root);
        for d in dirs {
            let w = sh_as(
                "mcpt-a",
                &format!("test -w '{}' && test -x '{}'", d.display(), d.display()),
            );
            if !w.status.success() {
                continue;
            }
            writable.push(d.clone());
            for n in names {
                let l = d.join(n);
                let o = sh_as(
                    "mcpt-a",
                    &format!(
                        "rm -rf '{0}'; ln -s '{1}' '{0}'",
                        l.display(),
                        victim.display()
                    ),
                );
                if o.status.success() {
                    planted.push(l);
                }
            }
        }
    };
    plant(&mut planted, &mut writable, &vms.sb.state_dir.join("a"));
    plant(&mut planted, &mut writable, &vms.sb.runtime_dir.join("a"));
    println!("dirs writable by VM a's uid: {writable:?}");
    // QEMU's own dir is the only one.
    assert!(
        writable.iter().all(|d| d.ends_with("a/vm")),
        "VM a's uid can write root's dirs: {writable:?}"
    );
    assert!(!planted.is_empty());
    // A whole cycle by root, a second start included.
    let st = vms.sb.status_json(Some(&vms.ns), "a");
    assert_eq!(st["running"], true, "{st}");
    vms.sb.run(Some(&vms.ns), &["stop", "a"]);
    let _ = vms.a.wait();
    vms.sb.run(Some(&vms.ns), &["cleanup", "a"]);
    vms.a = start_vm(&vms.sb, &vms.ns, "a");
    assert!(vm::wait_http(
        &vms.ns,
        "http://10.99.0.2:8080/",
        "vm a\n",
        Duration::from_secs(90)
    )
    .is_some());
    let after = fs::metadata(&victim).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");
    assert_eq!(
        (after.uid(), after.gid(), after.mode(), after.ino()),
        (before.uid(), before.gid(), before.mode(), before.ino()),
        "root changed the victim through a planted link"
    );
    stop_and_clean(&mut vms);
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk_dirs(&e.path()));
            }
        }
    }
    out
}

/// A compromised QEMU of VM a forges what it can: its pidfile names VM b's
/// QEMU, its QMP socket is swapped for a link to VM b's, the launch record
/// (if it could write it) names an unrelated idle TAP. `stop a` and
/// `cleanup a` must end a alone and remove a's TAP alone.
#[test]
fn forged_runtime_files_never_make_stop_or_cleanup_touch_another_vm() {
    let test = "forged_runtime_files_never_make_stop_or_cleanup_touch_another_vm";
    let Some((_heavy, mut vms)) = two_vms(test) else {
        return;
    };
    let (sb, ns) = (&vms.sb, &vms.ns);
    // An idle TAP of someone else's.
    ns.run(&[
        "ip", "tuntap", "add", "dev", "mcp-idle", "mode", "tap", "user", "nobody",
    ]);
    let b_pid = vms.b.id();
    let a_vm = sb.runtime_dir.join("a/vm");
    let b_sock = sb.runtime_dir.join("b/vm/qmp.sock");
    // As a's uid: pidfile -> b's PID, qmp.sock -> b's socket.
    let o = sh_as(
        "mcpt-a",
        &format!(
            "echo {b_pid} > '{0}/qemu.pid' && rm -f '{0}/qmp.sock' && ln -s '{1}' '{0}/qmp.sock'",
            a_vm.display(),
            b_sock.display()
        ),
    );
    assert!(o.status.success(), "{}", text(&o));
    // ...and the launch record, naming the idle TAP and b's PID.
    let rec = sb.runtime_dir.join("a/launch.json");
    let forged = json!({"name": "a", "pid": b_pid, "start_ticks": 0, "boot_id": "x", "uid": 0,
        "tap": "mcp-idle", "ip": null, "image_hash": "h", "started_unix": 0});
    let o = sh_as("mcpt-a", &format!("echo '{forged}' > '{}'", rec.display()));
    assert!(
        !o.status.success(),
        "VM a's uid could rewrite the launch record"
    );
    let o = sh_as(
        "mcpt-a",
        &format!(
            "mv '{0}' '{0}.old' && echo '{forged}' > '{0}'",
            rec.display()
        ),
    );
    assert!(
        !o.status.success(),
        "VM a's uid could replace the launch record"
    );

    let out = sb.run(Some(ns), &["stop", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    println!("stop a: {}", text(&out).trim());
    let _ = vms.a.wait();
    assert!(alive(b_pid), "stop a ended VM b's QEMU");
    assert!(
        vm::http_get(ns, "http://10.99.0.3:8080/").is_some(),
        "VM b stopped serving"
    );
    let out = sb.run(Some(ns), &["cleanup", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    let links = vm::links(ns);
    assert!(
        links.contains("mcp-idle"),
        "cleanup a removed an unrelated TAP:\n{links}"
    );
    assert!(
        links.contains("mcp-b"),
        "cleanup a removed VM b's TAP:\n{links}"
    );
    assert!(
        !links.contains("mcp-a:"),
        "cleanup a left a's TAP:\n{links}"
    );
    stop_and_clean(&mut vms);
}

/// One uid per VM: VM a's uid can open neither VM b's image, nor its QMP
/// socket, nor its TAP; and the image a's own QEMU boots is not writable by
/// a's uid (guest writes never persist: the disk is a snapshot, the initrd
/// is in RAM).
#[test]
fn one_vms_uid_cannot_reach_another_vms_disk_socket_or_tap() {
    let test = "one_vms_uid_cannot_reach_another_vms_disk_socket_or_tap";
    let Some((_heavy, mut vms)) = two_vms(test) else {
        return;
    };
    let sb = &vms.sb;
    let img_b = sb.state_dir.join("b/image/initrd.img");
    let img_a = sb.state_dir.join("a/image/initrd.img");
    let sock_b = sb.runtime_dir.join("b/vm/qmp.sock");
    assert!(img_b.is_file() && img_a.is_file());
    let py = |script: &str| as_user("mcpt-a", &["/usr/bin/python3", "-c", script]);
    let o = py(&format!("open('{}','rb').read(1)", img_b.display()));
    assert!(
        !o.status.success() && text(&o).contains("Permission denied"),
        "{}",
        text(&o)
    );
    let o = py(&format!(
        "import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}')",
        sock_b.display()
    ));
    assert!(
        !o.status.success() && text(&o).contains("Permission denied"),
        "{}",
        text(&o)
    );
    // TUNSETIFF on b's TAP as a's uid (the TAP is owned by b's uid).
    let o = vms.ns.cmd("setpriv")
        .args(["--reuid=mcpt-a", "--regid=mcpt-a", "--clear-groups", "--", "/usr/bin/python3", "-c",
            "import fcntl,struct,sys\nf=open('/dev/net/tun','r+b',buffering=0)\nfcntl.ioctl(f,0x400454ca,struct.pack('16sH22x',b'mcp-b',0x1002))"])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Operation not permitted"),
        "{}",
        text(&o)
    );
    // Its own image: readable (QEMU boots it), never writable.
    let o = py(&format!("open('{}','rb').read(1)", img_a.display()));
    assert!(o.status.success(), "{}", text(&o));
    let o = py(&format!("open('{}','r+b')", img_a.display()));
    assert!(
        !o.status.success() && text(&o).contains("Permission denied"),
        "{}",
        text(&o)
    );
    let m = fs::metadata(&img_a).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o640));
    stop_and_clean(&mut vms);
}

/// With a Nanos kernel: a file the guest writes on its disk is gone after
/// the VM restarts (QEMU runs the disk with a throwaway overlay).
#[test]
fn nanos_guest_write_is_gone_after_restart() {
    let test = "nanos_guest_write_is_gone_after_restart";
    let Some((sb, ns, guest)) = vm::vm_setup(test, true) else {
        return;
    };
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let Guest::Nanos { dir, ops, .. } = &guest else {
        unreachable!()
    };
    let probe = match vm::net_probe() {
        Ok(p) => p,
        Err(e) => return netns::skip(test, &e),
    };
    let vol = sb.root.join("data");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("seed"), "from the host\n").unwrap();
    sb.write_config(
        "probe",
        &json!({
            "schema_version": 1, "name": "probe", "program": probe,
            "args": ["--listen", "0.0.0.0:8080"], "memory_mib": 128, "accel": vm::accel(),
            "network": { "ip": "10.99.0.2" },
            "volumes": [ { "source": vol, "target": "/data" } ],
            "nanos_dir": dir, "ops": ops,
            // Room on the guest's disk for its write.
            "ops_extra": { "BaseVolumeSz": "32m" },
            "qemu_user": vm::qemu_user().unwrap(), "qemu_group": vm::qemu_user().unwrap(),
            "stop_timeout_secs": 20
        }),
    );
    let url = |p: &str| format!("http://10.99.0.2:8080{p}");
    for round in 0..2 {
        let mut g = start_vm(&sb, &ns, "probe");
        assert!(
            vm::wait_http(&ns, &url("/"), "net-probe ready\n", Duration::from_secs(60)).is_some()
        );
        let read = vm::http_get(&ns, &url("/read/data/guest-wrote")).unwrap();
        if round == 0 {
            assert_eq!(read, "missing\n");
            let w = vm::http_get(&ns, &url("/write/data/guest-wrote")).unwrap();
            assert_eq!(w, "written\n", "the guest could not write its disk");
            assert_eq!(
                vm::http_get(&ns, &url("/read/data/guest-wrote")).unwrap(),
                "written by the guest\n"
            );
        } else {
            assert_eq!(read, "missing\n", "a guest write survived the restart");
        }
        sb.run(Some(&ns), &["stop", "probe"]);
        let _ = g.wait();
        sb.run(Some(&ns), &["cleanup", "probe"]);
    }
    assert!(!vol.join("guest-wrote").exists());
}
