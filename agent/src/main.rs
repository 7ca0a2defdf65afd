//! `istio-cni-agent`: with no subcommand, the node agent (Istio's
//! `install-cni`); `uninstall` cleans a node whose agent died; `manifest`
//! prints the DaemonSet and RBAC.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use istio_cni_agent::config::{InstallSettings, Settings};
use istio_cni_agent::shutdown::{self, Shutdown};
use istio_cni_agent::{install, manifest, run};

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
}

fn main() -> ExitCode {
    // First, before any thread exists: from here on SIGTERM/SIGINT stay
    // pending until the agent takes them (see `shutdown`). `uninstall` and
    // `manifest` never take them: they finish their bounded work, then exit.
    if let Err(e) = shutdown::block() {
        eprintln!("istio-cni-agent: blocking SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
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
            init_logging("info", false);
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
        Some(Command::Run(settings)) => agent(*settings),
        None => agent(cli.settings),
    }
}

fn agent(settings: Settings) -> ExitCode {
    init_logging(&settings.log_level, settings.log_as_json);
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

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(run::log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
