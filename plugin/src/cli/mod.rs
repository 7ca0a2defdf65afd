//! The command line when `istio-cni` runs outside a container runtime:
//! `render` (the rules for a pod manifest) and `validate` (the
//! `istio-validation` init-container probe).

mod render;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use render::{RenderError, RenderOptions, render_manifest};

#[derive(Debug, Parser)]
#[command(
    name = "istio-cni",
    version,
    about = "Istio's chained CNI plugin for sidecar pods: programs traffic redirection in the pod's network namespace",
    long_about = "Istio's chained CNI plugin for sidecar pods.\n\nThe container runtime runs it with CNI_COMMAND set, after the primary CNI plugin. Run by hand, it renders the rules it would program for a pod manifest, or runs the istio-validation probe."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the rules the plugin would program for each pod in a manifest.
    ///
    /// Reads a Pod, or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
    /// CronJob or List (YAML with several documents, or JSON) and prints, per
    /// pod, the iptables-restore payload or nftables transaction, or
    /// `# skip: <reason>`. Owner groups and the IPv4 loopback CIDR are read
    /// from ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE] and
    /// ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR, as the plugin does.
    Render(RenderArgs),
    /// Run the istio-validation probe: pass (exit 0) when this netns redirects
    /// traffic to the sidecar, else exit 126.
    ///
    /// Accepts the argument list Istio injects into the istio-validation
    /// init container (`istio-iptables -p 15001 -z 15006 ... --run-validation
    /// --skip-rule-apply`); see `istio-cni validate --help`.
    #[command(disable_help_flag = true)]
    Validate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<OsString>,
    },
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Manifest to read (`-` for stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// Also render IPv6 rules, as for a pod whose netns has an IPv6 address.
    #[arg(long)]
    pub ipv6: bool,
    /// Rule backend: iptables (default) or nftables (Istio's native_nftables).
    #[arg(long, value_enum, default_value_t = Backend::Iptables)]
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Iptables,
    Nftables,
}

/// Runs the CLI and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Render(args) => render::run(&args),
        Command::Validate { args } => crate::validate::main(&args),
    }
}
