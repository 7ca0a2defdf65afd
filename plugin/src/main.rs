//! `istio-cni`: the chained CNI plugin when the runtime sets `CNI_COMMAND`,
//! otherwise its command line (`render`, `validate`).

use clap::Parser;
use istio_cni::cli::{Cli, run};
use istio_cni::cni::skel::Request;

fn main() {
    // Logs go to stderr only: stdout belongs to the CNI reply.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ISTIO_CNI_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let code = match Request::from_env(|k| std::env::var(k).ok()) {
        Ok(Some(request)) => istio_cni::cni::plugin::main(&request),
        Ok(None) => run(Cli::parse()),
        Err(e) => {
            print!("{}", e.to_json(istio_cni::cni::version::CURRENT));
            1
        }
    };
    std::process::exit(code);
}
