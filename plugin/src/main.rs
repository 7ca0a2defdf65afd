//! `istio-cni`: the chained CNI plugin when the runtime sets `CNI_COMMAND`,
//! otherwise its command line (`render`, `validate`).

use clap::Parser;
use istio_cni::cli::{Cli, run};
use istio_cni::cni::logsink::{BufferLayer, LogBuffer};
use istio_cni::cni::skel::Request;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::reload;
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
    // The records for the agent follow the config's `plugin_log_level`,
    // known only once stdin is read: info until then.
    let (level, level_handle) = reload::Layer::new(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(BufferLayer(buffer.clone()).with_filter(level))
        .init();
    let set_level = |l: LevelFilter| {
        let _ = level_handle.reload(l);
    };
    let code = match Request::from_env(|k| std::env::var(k).ok()) {
        Ok(Some(request)) => istio_cni::cni::plugin::main(&request, &buffer, &set_level),
        Ok(None) => run(Cli::parse()),
        Err(e) => {
            print!("{}", e.to_json(istio_cni::cni::version::CURRENT));
            1
        }
    };
    std::process::exit(code);
}
