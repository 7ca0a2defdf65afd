//! `istio-cni`: the chained CNI plugin binary and its command line.

use clap::Parser;
use istio_cni::cli::{Cli, run};

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ISTIO_CNI_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    std::process::exit(run(Cli::parse()));
}
