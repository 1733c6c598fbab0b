//! `credentials-changed NAME ID=PATH...`: run by the NixOS activation script
//! (nixos/lib/credentials.nix) after the secrets are in place. Credential
//! files live outside the Nix store, so switch-to-configuration cannot see
//! their content change; this compares each host file with the keyed digest
//! of the last good build (src/credentials.rs) and prints
//! `mcp-unikernel@NAME.service` when the VM runs and a credential changed,
//! which the script appends to /run/nixos/activation-restart-list:
//! switch-to-configuration then restarts exactly that instance (its build
//! bakes the new content). Prints nothing for a VM that is not running (its
//! next start rebuilds anyway) or whose file is missing (a restart would only
//! fail it; the next start says which file). Read-only; never prints content
//! or digests.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::commands::ready::vm_unit;
use crate::config::{self, valid_credential_name};
use crate::credentials::{self, Change};
use crate::launch;
use crate::paths::{Roots, VmPaths};

pub fn run(roots: &Roots, name: &str, pairs: &[String]) -> Result<()> {
    // The name must be one the helper accepts (it ends up in a unit name).
    let path = roots.config_dir.join(format!("{name}.json"));
    if let Err(e) = config::load_by_name(&roots.config_dir, name) {
        // A VM whose config is gone or broken is not restarted from here.
        tracing::warn!(error = %e, "{name}: not checking credentials ({})", path.display());
        return Ok(());
    }
    let mut parsed: Vec<(String, PathBuf)> = vec![];
    for p in pairs {
        let Some((id, file)) = p.split_once('=') else {
            bail!("argument {p:?}: expected ID=PATH");
        };
        if !valid_credential_name(id) || !file.starts_with('/') {
            bail!("argument {p:?}: expected ID=/absolute/path with a valid credential id");
        }
        parsed.push((id.to_owned(), PathBuf::from(file)));
    }
    let paths = VmPaths::new(roots, name);
    if launch::running(&paths).is_none() {
        return Ok(());
    }
    match credentials::compare(&paths, &parsed)? {
        Change::Unchanged => {}
        Change::Changed(names) => {
            tracing::info!(
                "{name}: credential content changed ({}); restart requested",
                names.join(", ")
            );
            println!("{}", vm_unit(name));
        }
        Change::Unreadable(why) => {
            tracing::warn!("{name}: {why}; the running VM is left as it is");
        }
    }
    Ok(())
}
