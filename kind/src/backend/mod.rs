//! Drivers for real clusters: kind, k3s (in Docker) and an existing cluster.
//!
//! Each backend separates pure generation from execution:
//!
//! - a spec (what cluster) and a [`PlanEnv`] (what exists on this machine)
//!   give configs and [`Plan`]s — ordered steps that render as a shell
//!   script; these are snapshot-tested in every build;
//! - [`preflight`] checks `PATH` for the tools a plan runs and names each
//!   missing one with how to install it, before anything is started;
//! - a runner ([`kind::start`], [`k3s::start`] give the [`DockerNodes`] they
//!   started; [`existing::start`] the [`KubeContext`](existing::KubeContext)
//!   it checked) executes the plans ([`exec`]) and, for the clusters it
//!   creates, runs the teardown plan on drop unless `KEEP_CLUSTER=1`.
//!
//! Tests reach them through [`crate::cluster::Cluster::create`] with a
//! [`crate::cluster::Target`]; its providers turn what these runners
//! started into a [`crate::cluster::Cluster`].
//!
//! The `kind` cargo feature gates the tests that run real clusters; the
//! code itself compiles in every build.
//!
//! [`preflight`]: preflight::preflight

pub mod docker;
pub mod env;
pub mod exec;
pub mod existing;
pub mod images;
pub mod k3s;
pub mod kind;
pub mod plan;
pub mod preflight;
pub mod versions;

use std::path::{Path, PathBuf};

pub use docker::DockerNodes;
pub use env::PlanEnv;
pub use plan::{Plan, Step};

use exec::StepError;
use plan::ManifestSource;
use preflight::MissingTools;

/// Applies manifests (YAML, one or more documents) with `kubectl` through
/// the API server of `kubeconfig` (the cluster called `name`).
pub fn apply(name: &str, kubeconfig: &Path, yaml: &str) -> Result<(), StepError> {
    let step = Step::ApplyManifest {
        kubeconfig: kubeconfig.to_path_buf(),
        source: ManifestSource::Inline(yaml.to_string()),
        purpose: "apply manifests".to_string(),
    };
    exec::run_plan(&Plan {
        title: format!("apply manifests to {name}"),
        steps: vec![step],
    })
}

/// Why a backend could not bring its cluster up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spec is invalid.
    #[error("invalid cluster spec: {0}")]
    Spec(#[from] kind::SpecError),
    /// Tools are missing (nothing was run).
    #[error(transparent)]
    Tools(#[from] MissingTools),
    /// The Docker CLI is there but its engine does not answer (nothing else was run).
    #[error(transparent)]
    Engine(#[from] preflight::NoEngine),
    /// The existing cluster's kubeconfig is unusable.
    #[error(transparent)]
    Kubeconfig(#[from] existing::KubeconfigError),
    /// A step of the plan failed.
    #[error("{error}{}", logs_note(.logs))]
    Step {
        /// The failed step.
        error: Box<StepError>,
        /// Where the cluster's logs were exported, if that worked.
        logs: Option<PathBuf>,
    },
}

impl StartError {
    /// A failed step with no logs exported.
    pub fn step(error: StepError) -> StartError {
        StartError::Step {
            error: Box::new(error),
            logs: None,
        }
    }
}

fn logs_note(logs: &Option<PathBuf>) -> String {
    match logs {
        Some(dir) => format!("\n  cluster logs: {}", dir.display()),
        None => String::new(),
    }
}
