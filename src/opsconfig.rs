//! The ops config (JSON) for a VM's image build. Pure: rendered from the
//! validated config and the VM's paths; compared with expected files in tests.
//!
//! ops resolves `Dirs` entries relative to its working directory and puts
//! each file at that same relative path in the image, so the helper runs
//! `ops build` from the staging root and lists every volume's guest path
//! (without its leading `/`).

use serde_json::{json, Map, Value};

use crate::config::{ResolvedNet, Validated};

/// The Nanos version name the helper writes to `latest.txt` in the VM's ops
/// home when a local Nanos dir is configured, so ops never asks the network.
pub const LOCAL_NANOS_VERSION: &str = "0.0.0-local";

/// Name ops gives the image: it lands at `$OPS_HOME/.ops/images/<IMAGE_NAME>`.
pub const IMAGE_NAME: &str = "disk";

pub fn render(v: &Validated) -> Value {
    let c = &v.config;
    let mut cfg = Map::new();
    if let Some(p) = &c.program {
        cfg.insert("Program".into(), json!(p));
    }
    cfg.insert("Args".into(), json!(c.args));
    cfg.insert("Env".into(), json!(c.env));
    let dirs: Vec<String> = c
        .volumes
        .iter()
        .map(|vol| {
            vol.target
                .strip_prefix("/")
                .unwrap_or(&vol.target)
                .display()
                .to_string()
        })
        .collect();
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
    if let ResolvedNet::Bridge(b) = &v.net {
        run.insert("IPAddress".into(), json!(b.ip.to_string()));
        run.insert("NetMask".into(), json!(b.netmask.to_string()));
        run.insert("Gateway".into(), json!(b.gateway.to_string()));
        // ops's --netmask flag (default 255.255.255.0) overrides
        // RunConfig.NetMask; the manifest passthrough is applied last.
        cfg.insert(
            "ManifestPassthrough".into(),
            json!({ "netmask": b.netmask.to_string() }),
        );
        if !b.nameservers.is_empty() {
            let ns: Vec<String> = b.nameservers.iter().map(|a| a.to_string()).collect();
            cfg.insert("NameServers".into(), json!(ns));
        }
    }
    cfg.insert("RunConfig".into(), Value::Object(run));
    merge_extra(&mut cfg, &c.ops_extra);
    Value::Object(cfg)
}

/// `ops_extra` keys override top-level keys; `RunConfig` and
/// `ManifestPassthrough` objects are merged one level deep.
fn merge_extra(cfg: &mut Map<String, Value>, extra: &Value) {
    let Value::Object(extra) = extra else { return };
    for (k, v) in extra {
        match (cfg.get_mut(k), v) {
            (Some(Value::Object(dst)), Value::Object(src))
                if k == "RunConfig" || k == "ManifestPassthrough" =>
            {
                for (k2, v2) in src {
                    dst.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                cfg.insert(k.clone(), v.clone());
            }
        }
    }
}
