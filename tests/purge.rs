//! State on removal (issue 15, part 4), with a real guest through the real
//! helper (the Linux stand-in; Nanos with MCP_NANOS_DIR changes nothing
//! here): `purge` refuses while the VM runs; after the VM died (kill -9,
//! so its TAP and runtime files are left) and its config was removed, `list`
//! shows it as `removed (state kept)` and `gc` keeps it (on_remove = keep);
//! `purge` then leaves nothing of it on disk or in `ip link`, and follows
//! none of the symlinks planted in its dirs. A VM declared with
//! on_remove = "purge" is purged by `gc` once its config is gone.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use common::netns::ChildGuard;
use common::vm;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn purge_refuses_while_running_then_leaves_nothing() {
    let test = "purge_refuses_while_running_then_leaves_nothing";
    let Some((sb, ns, guest)) = vm::vm_setup(test, false) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "purge me\n").unwrap();
    sb.write_config("web", &guest.config("web", "10.99.0.2", &vol));
    let child = sb
        .cmd(Some(&ns), &["start", "web"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut qemu = ChildGuard::new(child);
    assert!(
        vm::wait_http(
            &ns,
            "http://10.99.0.2:8080/",
            "purge me\n",
            Duration::from_secs(90)
        )
        .is_some(),
        "the guest did not serve"
    );
    let state = sb.state_dir.join("web");
    let runtime = sb.runtime_dir.join("web");

    // 1. Running: refused, nothing removed, still serving.
    let out = sb.run(Some(&ns), &["purge", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    assert!(state.join("image").is_dir() && runtime.join("launch.json").is_file());
    assert!(vm::links(&ns).contains("mcp-web"));
    assert!(vm::http_get(&ns, "http://10.99.0.2:8080/").is_some());

    // 2. Links planted where the VM's uid (vm/) and root (state) write, to a
    //    directory outside that must survive.
    let sentinel = sb.root.join("sentinel");
    fs::create_dir_all(&sentinel).unwrap();
    fs::write(sentinel.join("keep"), "keep\n").unwrap();
    symlink(&sentinel, runtime.join("vm/evil")).unwrap();
    symlink(&sentinel, state.join("evil")).unwrap();
    symlink(sentinel.join("keep"), state.join("evil-file")).unwrap();

    // 3. QEMU killed: TAP, launch record and runtime files are left behind.
    qemu.kill_now();
    qemu.wait();
    assert!(vm::links(&ns).contains("mcp-web"), "TAP gone already");

    // 4. Config removed: listed as removed, kept by gc (on_remove = keep).
    fs::remove_file(sb.config_dir.join("web.json")).unwrap();
    let out = sb.run(Some(&ns), &["list"]);
    assert!(
        text(&out).contains("removed (state kept)"),
        "{}",
        text(&out)
    );
    let j: serde_json::Value =
        serde_json::from_slice(&sb.run(Some(&ns), &["list", "--json"]).stdout).unwrap();
    assert_eq!(j[0]["removed"], true, "{j}");
    let out = sb.run(Some(&ns), &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("web: removed (state kept)"),
        "{}",
        text(&out)
    );
    assert!(state.join("image").is_dir(), "gc removed a kept VM's state");

    // 5. purge by hand: nothing left, no link followed.
    let out = sb.run(Some(&ns), &["purge", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    println!("{}", text(&out).trim());
    assert!(!state.exists() && !runtime.exists(), "{}", text(&out));
    assert!(!vm::links(&ns).contains("mcp-web"), "{}", vm::links(&ns));
    assert_eq!(fs::read_to_string(sentinel.join("keep")).unwrap(), "keep\n");
    let out = sb.run(Some(&ns), &["list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // Twice is fine; a name that is no VM name is refused.
    assert!(sb.run(Some(&ns), &["purge", "web"]).status.success());
    let out = sb.run(Some(&ns), &["purge", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn gc_purges_a_removed_vm_declared_with_on_remove_purge() {
    let test = "gc_purges_a_removed_vm_declared_with_on_remove_purge";
    let Some((sb, ns, guest)) = vm::vm_setup(test, false) else {
        return;
    };
    let vol = sb.root.join("www");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("index.html"), "x\n").unwrap();
    let mut purged = guest.config("gone", "10.99.0.2", &vol);
    purged["on_remove"] = "purge".into();
    sb.write_config("gone", &purged);
    let mut kept = guest.config("kept", "10.99.0.3", &vol);
    kept["qemu_user"] = "mcpt-a".into();
    kept["qemu_group"] = "mcpt-a".into();
    sb.write_config("kept", &kept);
    for n in ["gone", "kept"] {
        let out = sb.run(Some(&ns), &["build", n]);
        assert!(out.status.success(), "build {n}: {}", text(&out));
    }
    // While configured, gc changes nothing.
    let out = sb.run(Some(&ns), &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(sb.state_dir.join("gone/image").is_dir());

    for n in ["gone", "kept"] {
        fs::remove_file(sb.config_dir.join(format!("{n}.json"))).unwrap();
    }
    let out = sb.run(Some(&ns), &["gc"]);
    assert!(out.status.success(), "{}", text(&out));
    println!("{}", text(&out).trim());
    assert!(!sb.state_dir.join("gone").exists(), "{}", text(&out));
    assert!(sb.state_dir.join("kept/image").is_dir(), "{}", text(&out));
    assert!(text(&out).contains("kept: removed (state kept)"));
}
