//! The `mcp-unikernel` command: what the systemd unit runs (start, stop,
//! cleanup) and what operators use to look (status, list, check-config).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mcp_unikernel::commands::{build, cleanup, credcheck, purge, ready, start, status, stop};
use mcp_unikernel::config;
use mcp_unikernel::paths::Roots;

#[derive(Parser)]
#[command(
    name = "mcp-unikernel",
    version,
    about = "Run Nanos unikernels as systemd services: stage volumes, build with ops, \
             put the VM on a TAP on an isolated bridge, exec QEMU, validate PIDs.",
    after_help = "Config schema: docs/config-schema.md. Logs go to stderr (the journal under systemd); \
                  set MCP_LOG=debug for more. Errors exit with status 2 (one line naming the field and value)."
)]
struct Cli {
    /// Directory holding <name>.json instance configs.
    #[arg(
        long,
        env = "MCP_CONFIG_DIR",
        default_value = "/etc/mcp-unikernel",
        global = true
    )]
    config_dir: PathBuf,
    /// Root of per-VM state (staging tree, ops home, last good image).
    #[arg(
        long,
        env = "MCP_STATE_DIR",
        default_value = "/var/lib/mcp-unikernel",
        global = true
    )]
    state_dir: PathBuf,
    /// Root of per-VM runtime files (QMP socket, pidfile, launch record).
    #[arg(
        long,
        env = "MCP_RUNTIME_DIR",
        default_value = "/run/mcp-unikernel",
        global = true
    )]
    runtime_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate, stage volumes, build the image if its inputs changed, create
    /// the TAP, then exec QEMU (as the VM's QEMU user) in this process.
    Start {
        name: String,
        /// Boot the last good image without looking at the inputs (the
        /// systemd unit's build instance has just run `build`).
        #[arg(long)]
        no_build: bool,
    },
    /// Stage volumes and build the image if any input changed (as `start`
    /// does), without creating a TAP or starting QEMU. `ops` runs as the
    /// VM's user, without network.
    Build { name: String },
    /// Power the guest down over QMP; `quit` after the stop timeout; SIGKILL
    /// (through a pidfd) as the last resort. Prints which one ended it.
    Stop { name: String },
    /// Remove the TAP (only if owned by the VM's user), QEMU's runtime dir and
    /// the launch record (refuses while the VM runs). Safe to run twice.
    Cleanup { name: String },
    /// Show one VM (or all): running or not from validated PIDs, health
    /// (starting/ready/unhealthy), PID, IP, TAP, uptime, image hash.
    /// Read-only: stale runtime files are reported only.
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show every VM that has a config, state or runtime dir.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a VM's state dir, runtime dir and TAP (refuses while it runs;
    /// never follows links). For a VM removed from the configuration.
    Purge { name: String },
    /// For each VM whose config is gone: purge it when it was declared with
    /// `on_remove = "purge"`, else keep it (`list`: removed (state kept)).
    Gc,
    /// Validate a config file without touching anything; print the derived
    /// values (TAP, MAC, netmask) as JSON.
    CheckConfig { file: PathBuf },
    /// Probe the guest from the host (the VM unit's ExecStartPost=) until its
    /// `readiness` probe answers; fail after `readiness.timeout_secs` with one
    /// line naming the probe and the last error.
    WaitReady { name: String },
    /// One health probe (the health timer's oneshot): count consecutive
    /// failures; at `health.failures` restart the VM through systemctl.
    Health {
        name: String,
        /// systemctl used to restart the VM.
        #[arg(long, default_value = "systemctl")]
        systemctl: String,
    },
    /// Print `mcp-unikernel@NAME.service` when NAME runs and a credential
    /// file (ID=PATH, as in its build unit's LoadCredential=) differs from
    /// its last good build (the NixOS activation script's check). Read-only.
    CredentialsChanged {
        name: String,
        #[arg(value_name = "ID=PATH")]
        credentials: Vec<String>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let to_tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(to_tty)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // The journal stamps lines itself.
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let roots = match Roots::absolute(&cli.config_dir, &cli.state_dir, &cli.runtime_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result: anyhow::Result<()> = match cli.command {
        Cmd::Start { name, no_build } => {
            start::run(&roots, &name, !no_build).map(|never| match never {})
        }
        Cmd::Build { name } => build::run(&roots, &name).map(|_| ()),
        Cmd::Stop { name } => stop::run(&roots, &name).map(|_| ()),
        Cmd::Cleanup { name } => cleanup::run(&roots, &name),
        Cmd::Status { name, json } => {
            let list = match name {
                Some(n) => vec![status::one(&roots, &n)],
                None => status::names(&roots)
                    .iter()
                    .map(|n| status::one(&roots, n))
                    .collect(),
            };
            status::print(&list, json)
        }
        Cmd::List { json } => {
            let list: Vec<_> = status::names(&roots)
                .iter()
                .map(|n| status::one(&roots, n))
                .collect();
            status::print(&list, json)
        }
        Cmd::Purge { name } => purge::purge(&roots, &name),
        Cmd::Gc => purge::gc(&roots),
        Cmd::WaitReady { name } => ready::wait_ready(&roots, &name),
        Cmd::Health { name, systemctl } => ready::health_check(&roots, &name, &systemctl),
        Cmd::CredentialsChanged { name, credentials } => {
            credcheck::run(&roots, &name, &credentials)
        }
        Cmd::CheckConfig { file } => config::load_file(&file).map_err(Into::into).and_then(|v| {
            let out = serde_json::json!({
                "ok": true,
                "name": v.config.name,
                "network": v.net,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Not 1: the unit counts QEMU's 1 (the guest program exited 0) as
            // success, and a `start` that fails before exec must not.
            ExitCode::from(2)
        }
    }
}
