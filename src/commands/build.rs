//! `build NAME` (the build unit's ExecStart): stage the volumes and build the
//! image if any input changed, exactly as `start` does, without creating a
//! TAP or starting QEMU.

use anyhow::Result;

use crate::commands::start::{ensure_state, lock_vm};
use crate::config;
use crate::image;
use crate::paths::{Roots, VmPaths};
use crate::privs;

pub fn run(roots: &Roots, name: &str) -> Result<image::Image> {
    let v = config::load_by_name(&roots.config_dir, name)?;
    config::check_conflicts(&roots.config_dir, &v)?;
    let who = privs::resolve(&v.config.qemu_user, &v.config.qemu_group)?;
    let paths = VmPaths::new(roots, name);
    ensure_state(roots, &paths)?;
    let _lock = lock_vm(&paths, name, "building (stop it first)")?;
    // What `gc` does with this state once the config is gone.
    crate::commands::purge::remember(&v, &paths)?;
    let img = image::ensure(&v, &paths, &who)?;
    println!(
        "{name}: image {} ({})",
        &img.hash[..16],
        if img.rebuilt {
            "built"
        } else {
            "unchanged, not rebuilt"
        }
    );
    Ok(img)
}
