//! Values two VMs may not share: the IP and TAP on the bridge, and the QEMU
//! user (one uid per VM: a QEMU escape of one VM must not own another's disk,
//! socket or TAP). The NixOS module asserts the same at build time; this
//! catches configs written by hand.

use std::fs;
use std::path::{Path, PathBuf};

use super::{invalid, ConfigError, ResolvedNet, Validated};
use crate::derive;

/// Refuse a VM whose IP, TAP name or QEMU user is also declared by another
/// config in the same directory.
pub fn check_conflicts(config_dir: &Path, v: &Validated) -> Result<(), ConfigError> {
    let Ok(entries) = fs::read_dir(config_dir) else {
        return Ok(());
    };
    let mut others: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && *p != v.source)
        .collect();
    others.sort();
    for other in others {
        // Only the fields that can collide are read; a broken neighbour is its
        // own problem and reported when it starts.
        let Ok(text) = fs::read_to_string(&other) else {
            continue;
        };
        let Ok(raw) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let name = raw["name"].as_str().unwrap_or_default();
        if name == v.config.name || name.is_empty() {
            continue;
        }
        let also = |field: &str, value: &str| {
            invalid(
                &v.source,
                field,
                value,
                &format!("also used by {} ({})", name, other.display()),
            )
        };
        let net = &raw["network"];
        if let ResolvedNet::Bridge(mine) = &v.net {
            if net["mode"].as_str().unwrap_or("bridge") == "bridge" {
                if net["ip"].as_str() == Some(mine.ip.to_string().as_str()) {
                    return Err(also("network.ip", &mine.ip.to_string()));
                }
                let their_tap = net["tap"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| derive::tap_name(name));
                if their_tap == mine.tap {
                    return Err(also("network.tap", &mine.tap));
                }
            }
        }
        let their_user = raw["qemu_user"].as_str().unwrap_or("mcp-qemu");
        if their_user == v.config.qemu_user {
            return Err(also("qemu_user", &v.config.qemu_user));
        }
    }
    Ok(())
}
