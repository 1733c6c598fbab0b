//! The ops config (JSON) for a VM's image build. Pure: rendered from the
//! validated config and the list of top-level entries of the staging tree;
//! compared with expected files in tests.
//!
//! ops never sees the guest program as its program: it finds a dynamically
//! linked program's libraries by *executing* it (`LD_TRACE_LOADED_OBJECTS=1`),
//! which would run guest code on the host. So the helper resolves the
//! libraries itself (src/elfdeps.rs), stages program, interpreter and
//! libraries at their paths in the staging tree, hands ops a static
//! placeholder program (never executed either: it has no dynamic section),
//! and names the real program and its argv in the manifest passthrough
//! (`program`, `arguments`), which ops applies last.
//!
//! ops resolves `Dirs` entries relative to its working directory (the
//! staging root) and puts each file at that same path in the image.

use serde_json::{json, Map, Value};

use crate::config::{ResolvedNet, Validated};

/// The Nanos version name the helper writes to `latest.txt` in the VM's ops
/// home when a local Nanos dir is configured, so ops never asks the network.
pub const LOCAL_NANOS_VERSION: &str = "0.0.0-local";

/// Name ops gives the image: it lands at `$OPS_HOME/.ops/images/<IMAGE_NAME>`.
pub const IMAGE_NAME: &str = "disk";

/// Guest dir holding the placeholder program; volumes may not use it.
pub const RESERVED_GUEST_DIR: &str = "/.mcp-unikernel";

/// The placeholder program ops is given, relative to the staging root.
pub const PLACEHOLDER: &str = ".mcp-unikernel/placeholder";

/// `dirs`: the top-level entries of the staging tree (volumes, the program
/// and its libraries), relative, sorted.
pub fn render(v: &Validated, dirs: &[String]) -> Value {
    let c = &v.config;
    let mut cfg = Map::new();
    cfg.insert("Args".into(), json!([]));
    cfg.insert("Env".into(), json!(c.env));
    if !dirs.is_empty() {
        cfg.insert("Dirs".into(), json!(dirs));
    }
    if !c.klibs.is_empty() {
        cfg.insert("Klibs".into(), json!(c.klibs));
    }
    if let Some(dir) = &c.nanos_dir {
        cfg.insert("Kernel".into(), json!(dir.join("kernel.img")));
        cfg.insert("Boot".into(), json!(dir.join("boot.img")));
        cfg.insert("KlibDir".into(), json!(dir.join("klibs")));
        cfg.insert("NanosVersion".into(), json!(LOCAL_NANOS_VERSION));
    }
    let mut run = Map::new();
    run.insert("ImageName".into(), json!(IMAGE_NAME));
    run.insert("Memory".into(), json!(format!("{}M", c.memory_mib)));
    run.insert("CPUs".into(), json!(c.vcpus));

    let mut manifest = Map::new();
    if let Some(p) = &c.program {
        let mut argv = vec![json!(p)];
        argv.extend(c.args.iter().map(|a| json!(a)));
        manifest.insert("program".into(), json!(p));
        manifest.insert("arguments".into(), Value::Array(argv));
    }
    // The program's exit code reaches QEMU's exit status (isa-debug-exit).
    manifest.insert("debug_exit".into(), json!("t"));
    if let ResolvedNet::Bridge(b) = &v.net {
        run.insert("IPAddress".into(), json!(b.ip.to_string()));
        run.insert("NetMask".into(), json!(b.netmask.to_string()));
        run.insert("Gateway".into(), json!(b.gateway.to_string()));
        // ops's --netmask flag (default 255.255.255.0) overrides
        // RunConfig.NetMask; the manifest passthrough is applied last.
        manifest.insert("netmask".into(), json!(b.netmask.to_string()));
        // Without NameServers ops writes `nameserver 8.8.8.8`; the helper's
        // own /etc/resolv.conf in the staging tree (`resolv_conf`, in Dirs,
        // which ops adds after its own) replaces that file either way.
        if !b.nameservers.is_empty() {
            let ns: Vec<String> = b.nameservers.iter().map(|a| a.to_string()).collect();
            cfg.insert("NameServers".into(), json!(ns));
        }
        // The ntp klib's servers: without them it uses pool.ntp.org.
        if !b.ntp_servers.is_empty() || c.klibs.iter().any(|k| k == "ntp") {
            let ntp: Vec<String> = b.ntp_servers.iter().map(|a| a.to_string()).collect();
            manifest.insert("ntp_servers".into(), json!(ntp));
        }
    }
    // Allowlisted operator extras (src/config/ops_extra.rs): manifest
    // options are merged, the helper's own keys win.
    for (k, val) in &v.ops_extra {
        match (k.as_str(), val) {
            ("ManifestPassthrough", Value::Object(extra)) => {
                for (mk, mv) in extra {
                    manifest.entry(mk.clone()).or_insert_with(|| mv.clone());
                }
            }
            _ => {
                cfg.insert(k.clone(), val.clone());
            }
        }
    }
    cfg.insert("ManifestPassthrough".into(), Value::Object(manifest));
    cfg.insert("RunConfig".into(), Value::Object(run));
    Value::Object(cfg)
}

/// The guest's `/etc/resolv.conf`, staged by the helper for every guest
/// (src/guestfiles.rs): exactly the configured resolvers, or none — ops's
/// own file would say `nameserver 8.8.8.8`, which the isolated bridge never
/// reaches.
pub fn resolv_conf(v: &Validated) -> String {
    let servers = match &v.net {
        ResolvedNet::Bridge(b) => b.nameservers.clone(),
        ResolvedNet::User { .. } => Vec::new(),
    };
    if servers.is_empty() {
        return "# mcp-unikernel: no resolver (network.nameservers is empty: this guest reaches none)\n"
            .into();
    }
    let mut s = String::from(
        "# mcp-unikernel: network.nameservers (the gateway, the only host this guest reaches)\n",
    );
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    s
}

/// A minimal static x86-64 ELF executable (`exit(0)`), the program ops is
/// given. It has no dynamic section, so ops never executes it either.
pub fn placeholder_elf() -> Vec<u8> {
    const BASE: u64 = 0x400000;
    let code: [u8; 12] = [
        0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (exit)
        0x31, 0xff, // xor edi, edi
        0x0f, 0x05, // syscall
        0xeb, 0xfe, // jmp $
        0x90,
    ];
    let entry = BASE + 64 + 56;
    let size = (64 + 56 + code.len()) as u64;
    let mut e = Vec::with_capacity(size as usize);
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&entry.to_le_bytes());
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                              // PT_LOAD, R+X, the whole file at BASE.
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&5u32.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes());
    e.extend_from_slice(&BASE.to_le_bytes());
    e.extend_from_slice(&BASE.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(&code);
    e
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholder_is_a_static_elf_that_exits_zero() {
        let bytes = super::placeholder_elf();
        let elf = goblin::elf::Elf::parse(&bytes).unwrap();
        assert!(elf.interpreter.is_none() && elf.libraries.is_empty() && elf.dynamic.is_none());
        let dir = std::env::temp_dir().join(format!("mcp-placeholder-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("placeholder");
        std::fs::write(&p, &bytes).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let st = std::process::Command::new(&p).status().unwrap();
        assert!(st.success(), "{st}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
