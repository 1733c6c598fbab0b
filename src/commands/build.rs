//! `build NAME`: stage the volumes and build the image if any input changed,
//! exactly as `start` does, without creating a TAP or starting QEMU.

use anyhow::{bail, Result};

use crate::commands::start::ensure_dir;
use crate::config;
use crate::image;
use crate::lock::{LockError, StartLock};
use crate::paths::{Roots, VmPaths};

pub fn run(roots: &Roots, name: &str) -> Result<image::Image> {
    let v = config::load_by_name(&roots.config_dir, name)?;
    let paths = VmPaths::new(roots, name);
    ensure_dir(&roots.state_dir, 0o755)?;
    ensure_dir(&paths.state, 0o711)?;
    let _lock = match StartLock::acquire(&paths.lock()) {
        Ok(l) => l,
        Err(LockError::Busy { .. }) => {
            bail!("VM {name} is running or starting; stop it before building")
        }
        Err(e) => return Err(e.into()),
    };
    let img = image::ensure(&v, &paths)?;
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
