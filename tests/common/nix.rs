//! Evaluating the repository's pure-Nix functions (nixos/lib/*.nix) with a
//! bare `nix-instantiate`, as CI can without nixpkgs.

use std::process::{Command, Stdio};

/// `nix-instantiate --eval --strict --json --expr EXPR`; Ok(json) or Err(stderr).
pub fn nix_eval(expr: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "--expr", expr])
        .env(
            "NIX_CONFIG",
            "substituters =\nexperimental-features = nix-command flakes\nbuild-users-group =",
        )
        .stdin(Stdio::null())
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed JSON"))
}
