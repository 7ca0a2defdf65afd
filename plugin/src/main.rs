//! `istio-cni`: the chained CNI plugin when the runtime sets `CNI_COMMAND`,
//! otherwise its command line (`render`, `validate`).

use clap::Parser;
use istio_cni::cli::{Cli, run};
use istio_cni::cni::logsink::{BufferLayer, LogBuffer};
use istio_cni::cni::skel::Request;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() {
    // Logs go to stderr (and, for CNI calls, to the node agent); stdout
    // belongs to the CNI reply.
    let buffer = LogBuffer::default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ISTIO_CNI_LOG").unwrap_or_else(|_| "info".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(BufferLayer(buffer.clone()))
        .init();
    let code = match Request::from_env(|k| std::env::var(k).ok()) {
        Ok(Some(request)) => istio_cni::cni::plugin::main(&request, &buffer),
        Ok(None) => run(Cli::parse()),
        Err(e) => {
            print!("{}", e.to_json(istio_cni::cni::version::CURRENT));
            1
        }
    };
    std::process::exit(code);
}
