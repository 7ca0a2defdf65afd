//! `istio-cni-conformance`: see `istio-cni-conformance run --help`.

use clap::Parser;
use istio_cni_conformance::cli::{Cli, run};

fn main() {
    std::process::exit(run(Cli::parse()));
}
