//! `purge NAME` and `gc` (issue 15, part 4): what happens to a VM's files
//! once it is removed from the configuration.
//!
//! A removed VM's config is gone, so what to do with it is remembered in its
//! own root-owned state dir: `build` writes `<state>/<name>/removal.json`
//! (`on_remove`, TAP name, uid) from the config it builds. `gc` (the
//! package's `mcp-unikernel-gc.service`, restarted by switch-to-configuration
//! when the set of VMs changes, after the removed instances were stopped)
//! refreshes that record for every VM that has a config and, for every
//! state/runtime dir whose config is gone, purges it when the record says
//! `purge` and leaves it (`list`: `removed (state kept)`) otherwise.
//!
//! `purge` removes the runtime dir, the TAP (only a TAP owned by the VM's
//! uid) and the state dir. It holds the VM's lock (QEMU holds it while it
//! runs, so a running or starting VM is refused) and never follows a link:
//! `std::fs::remove_dir_all` walks with directory fds, `O_NOFOLLOW` and
//! `unlinkat` (std's fix for CVE-2022-21658), so a symlink the VM's uid
//! planted in the dirs it can write is removed, not followed.

use std::fs;
use std::io;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::commands::start::lock_vm;
use crate::config::{self, ConfigError, OnRemove, Validated};
use crate::derive;
use crate::launch::{self, PidState};
use crate::paths::{Roots, VmPaths};
use crate::privs;
use crate::safefs;
use crate::tap;

pub const REMOVAL_RECORD: &str = "removal.json";

/// What is remembered in the state dir for the day the config is gone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemovalRecord {
    pub on_remove: OnRemove,
    pub tap: Option<String>,
    pub uid: Option<u32>,
}

fn record_for(v: &Validated) -> RemovalRecord {
    RemovalRecord {
        on_remove: v.config.on_remove,
        tap: v.tap().map(str::to_owned),
        uid: privs::resolve(&v.config.qemu_user, &v.config.qemu_group)
            .ok()
            .map(|w| w.uid),
    }
}

/// Read `removal.json` from a root-owned state dir (bounded, no links).
pub fn read_record(paths: &VmPaths) -> Option<RemovalRecord> {
    let bytes = safefs::read_untrusted(&paths.state, REMOVAL_RECORD, 4096)
        .ok()
        .flatten()?;
    serde_json::from_slice(&bytes).ok()
}

/// Write the record when it differs (the state dir exists and is ours).
pub fn remember(v: &Validated, paths: &VmPaths) -> Result<()> {
    let rec = record_for(v);
    if read_record(paths).as_ref() == Some(&rec) {
        return Ok(());
    }
    let bytes = serde_json::to_vec(&rec).expect("JSON");
    safefs::write_private(&paths.state, REMOVAL_RECORD, &bytes, 0o600)
        .with_context(|| format!("writing {}", paths.state.join(REMOVAL_RECORD).display()))
}

fn remove_tree(p: &std::path::Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        // A link in place of the dir: remove the link itself.
        Ok(m) if !m.is_dir() => fs::remove_file(p).map(|()| true),
        Ok(_) => fs::remove_dir_all(p).map(|()| true),
    }
}

/// Purge one VM: runtime dir, TAP, state dir. Refuses while it runs.
pub fn purge(roots: &Roots, name: &str) -> Result<()> {
    config::validate_name(name)?;
    let paths = VmPaths::new(roots, name);
    let lock = if paths.lock().exists() {
        Some(lock_vm(&paths, name, "purging it (stop it first)")?)
    } else {
        None
    };
    if let PidState::Running { pid, .. } = launch::inspect(&paths) {
        bail!("VM {name} is running as PID {pid}; stop it first, not purging it");
    }
    // TAP name and owner: the config, else the removal record, else the
    // root-owned launch record; a TAP is removed only when its owner is that uid.
    let cfg = config::load_by_name(&roots.config_dir, name).ok();
    let rec = read_record(&paths);
    let launched = launch::read_record(&paths).ok().flatten();
    let tap_name = cfg
        .as_ref()
        .and_then(|v| v.tap().map(str::to_owned))
        .or_else(|| rec.as_ref().and_then(|r| r.tap.clone()))
        .or_else(|| launched.as_ref().and_then(|r| r.tap.clone()))
        .unwrap_or_else(|| derive::tap_name(name));
    let uid = cfg
        .as_ref()
        .map(record_for)
        .and_then(|r| r.uid)
        .or_else(|| rec.as_ref().and_then(|r| r.uid))
        .or_else(|| launched.as_ref().map(|r| r.uid));
    let mut gone = Vec::new();
    match uid {
        Some(uid) => match tap::remove_owned(&tap_name, uid) {
            Ok(tap::Removed::Removed) => gone.push(format!("TAP {tap_name}")),
            Ok(tap::Removed::Absent) => {}
            Err(e @ tap::NetError::ForeignOwner { .. }) => {
                tracing::warn!(error = %e, "TAP left alone")
            }
            Err(e @ tap::NetError::NotATap(_)) => tracing::warn!(error = %e, "left alone"),
            Err(e) => return Err(e.into()),
        },
        None if tap::iface_exists(&tap_name) => tracing::warn!(
            tap = %tap_name,
            "the VM's uid is unknown (no config, no records); TAP left alone"
        ),
        None => {}
    }
    if remove_tree(&paths.runtime)
        .with_context(|| format!("removing {}", paths.runtime.display()))?
    {
        gone.push(format!("runtime dir {}", paths.runtime.display()));
    }
    if remove_tree(&paths.state).with_context(|| format!("removing {}", paths.state.display()))? {
        gone.push(format!("state dir {}", paths.state.display()));
    }
    drop(lock);
    if gone.is_empty() {
        println!("{name}: nothing to purge");
    } else {
        println!("{name}: purged {}", gone.join(", "));
    }
    Ok(())
}

/// Whether the VM's config file is gone (not merely invalid).
pub fn config_removed(roots: &Roots, name: &str) -> bool {
    matches!(
        config::load_by_name(&roots.config_dir, name),
        Err(ConfigError::Read { ref source, .. }) if source.kind() == io::ErrorKind::NotFound
    )
}

/// Refresh the records of configured VMs; purge removed ones whose record
/// says `purge`. One failure does not stop the others (reported at the end).
pub fn gc(roots: &Roots) -> Result<()> {
    let mut failed = Vec::new();
    for name in super::status::names(roots) {
        let paths = VmPaths::new(roots, &name);
        if !config_removed(roots, &name) {
            if let (Ok(v), true) = (
                config::load_by_name(&roots.config_dir, &name),
                paths.state.is_dir(),
            ) {
                if let Err(e) = remember(&v, &paths) {
                    tracing::warn!(vm = %name, error = %format!("{e:#}"), "cannot record on_remove");
                }
            }
            continue;
        }
        match read_record(&paths).map(|r| r.on_remove) {
            Some(OnRemove::Purge) => {
                if let Err(e) = purge(roots, &name) {
                    eprintln!("error: {name}: {e:#}");
                    failed.push(name);
                }
            }
            _ => println!("{name}: removed (state kept)"),
        }
    }
    if !failed.is_empty() {
        bail!("could not purge: {}", failed.join(", "));
    }
    Ok(())
}
