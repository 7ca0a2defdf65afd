//! `istio-cni-agent` (also answering as `install-cni`): with no subcommand,
//! the node agent (Istio's `install-cni`); `uninstall` cleans a node whose
//! agent died; `manifest` prints the DaemonSet and RBAC; `version`.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use istio_cni_agent::config::{InstallSettings, LogSettings, Settings};
use istio_cni_agent::shutdown::{self, Shutdown};
use istio_cni_agent::{install, logging, manifest, run};

#[derive(Parser)]
#[command(
    name = "istio-cni-agent",
    version,
    about = "Istio CNI node agent: installs istio-cni into the node's CNI config, keeps it there, repairs pods, cleans up",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (the default when no subcommand is given).
    Run(Box<Settings>),
    /// Remove istio-cni from this node (CNI config entry, kubeconfig, binary) without a running agent.
    Uninstall {
        #[command(flatten)]
        install: Box<InstallSettings>,
    },
    /// Print the Kubernetes objects that deploy the agent.
    Manifest(manifest::ManifestArgs),
    /// Print the version (Istio's install-cni has this subcommand too).
    Version {
        /// Only the version number.
        #[arg(short, long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = istio_cni_agent::config::parse_go_bool, action = clap::ArgAction::Set)]
        short: bool,
    },
}

/// The name Istio's chart runs (`command: ["install-cni"]`): the image puts
/// this binary there too, and it answers under either name.
const ISTIO_NAME: &str = "install-cni";

fn main() -> ExitCode {
    // First, before any thread exists: from here on SIGTERM/SIGINT stay
    // pending until the agent takes them (see `shutdown`). `uninstall` and
    // `manifest` never take them: they finish their bounded work, then exit.
    if let Err(e) = shutdown::block() {
        eprintln!("istio-cni-agent: blocking SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = program_name(args.first());
    let cli = match Cli::command()
        .name(name)
        .bin_name(name)
        .try_get_matches_from(&args)
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let cmd = Cli::command().name(name);
            match istio_cni_agent::config::env_value_error(&cmd, &e, &args, |k| std::env::var_os(k)) {
                Some(message) => {
                    eprintln!("{name}: {message}");
                    return ExitCode::from(2);
                }
                None => e.exit(),
            }
        }
    };
    match cli.command {
        Some(Command::Manifest(args)) => match manifest::render(&args) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("istio-cni-agent manifest: {e}");
                ExitCode::from(2)
            }
        },
        Some(Command::Uninstall { install }) => {
            let _ = logging::init(&default_log_settings());
            match install::uninstall(&install) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("istio-cni-agent uninstall: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Version { short }) => {
            let version = env!("CARGO_PKG_VERSION");
            if short {
                println!("{version}");
            } else {
                println!("{name} version {version} (istio-cni-agent: Istio's install-cni for the sidecar data plane)");
            }
            ExitCode::SUCCESS
        }
        Some(Command::Run(settings)) => agent(*settings),
        None => agent(cli.settings),
    }
}

/// `install-cni` when invoked under Istio's name, else our own.
fn program_name(argv0: Option<&std::ffi::OsString>) -> &'static str {
    let invoked = argv0
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str());
    if invoked == Some(ISTIO_NAME) {
        ISTIO_NAME
    } else {
        "istio-cni-agent"
    }
}

/// Logging for the subcommands that take no logging flags.
fn default_log_settings() -> LogSettings {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        log: LogSettings,
    }
    // Parsing no arguments yields the defaults; it cannot fail.
    Defaults::try_parse_from(["defaults"])
        .map(|d| d.log)
        .unwrap_or_else(|e| e.exit())
}

fn agent(settings: Settings) -> ExitCode {
    match logging::init(&settings.log) {
        Ok(notes) => {
            for note in notes {
                tracing::info!(target: "cni-agent", "{note}");
            }
        }
        Err(e) => {
            eprintln!("istio-cni-agent: {e}");
            return ExitCode::FAILURE;
        }
    }
    if settings.install.ambient_enabled {
        let msg = "AMBIENT_ENABLED=true: this agent implements Istio's sidecar data plane only, not ambient mode; \
                   run Istio's own install-cni for ambient, or set AMBIENT_ENABLED=false (the chart's ambient.enabled)";
        tracing::error!(target: "cni-agent", "{msg}");
        eprintln!("istio-cni-agent: {msg}");
        return ExitCode::FAILURE;
    }
    let ambient_only = settings.ambient_only_given();
    if !ambient_only.is_empty() {
        tracing::info!(
            target: "cni-agent",
            "sidecar data plane: ignoring ambient-only settings {}",
            ambient_only.join(", ")
        );
    }
    let obsolete = settings.obsolete_given();
    if !obsolete.is_empty() {
        tracing::info!(target: "cni-agent", "ignoring settings Istio no longer reads: {}", obsolete.join(", "));
    }
    let shutdown = match Shutdown::listen() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("istio-cni-agent: signal thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("istio-cni-agent: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(settings, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "cni-agent", "{e}");
            eprintln!("istio-cni-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
