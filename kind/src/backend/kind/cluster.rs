//! [`KindCluster`]: runs the plans of a [`KindSpec`] against Docker.

use std::path::{Path, PathBuf};

use super::{KindSpec, failure_plan, plan, teardown_plan};
use crate::backend::env::PlanEnv;
use crate::backend::exec::{self, StepError, TeardownGuard};
use crate::backend::plan::{Cmd, Plan};
use crate::backend::preflight::{self, path_lookup};
use crate::backend::{RealCluster, StartError};

/// A running kind cluster. Dropping it deletes the cluster, unless it is
/// kept (`KEEP_CLUSTER=1`, [`KindSpec::keep`]) or this run reused a cluster
/// that already existed.
///
/// Running commands blocks the calling thread (`kind create cluster` takes a
/// minute or more): from async code, call it inside `spawn_blocking`.
#[derive(Debug)]
pub struct KindCluster {
    name: String,
    kubeconfig: PathBuf,
    logs: PathBuf,
    failure: Plan,
    guard: TeardownGuard,
}

impl KindCluster {
    /// Check the spec and the tools (at once, before anything runs), then run [`plan`].
    ///
    /// When a step fails and the cluster exists, its logs are exported (see
    /// [`failure_plan`]) and, when this run created it, it is deleted unless kept.
    pub fn start(spec: &KindSpec, env: &PlanEnv) -> Result<KindCluster, StartError> {
        spec.validate().map_err(|error| StartError::Spec(error.to_string()))?;
        preflight::preflight("kind", &spec.required_tools(), path_lookup)?;
        let eff = spec.effective(env);
        let existed = eff.reuse && cluster_exists(&eff.name).map_err(StartError::step)?;
        let guard = TeardownGuard::new(teardown_plan(spec, env), !existed && !eff.keep);
        let mut cluster = KindCluster {
            name: eff.name.clone(),
            kubeconfig: eff.kubeconfig.clone(),
            logs: eff.logs.clone(),
            failure: failure_plan(spec, env),
            guard,
        };
        if let Err(error) = exec::run_plan(&plan(spec, env)) {
            // A step before `kind create cluster` failed, or the create itself
            // cleaned up: no cluster, so no logs and nothing to delete.
            let logs = if cluster_exists(&eff.name).unwrap_or(false) {
                cluster.export_logs().ok()
            } else {
                cluster.guard.disarm();
                None
            };
            // Dropping `cluster` deletes what this run created (unless kept).
            return Err(StartError::Step {
                error: Box::new(error),
                logs,
            });
        }
        Ok(cluster)
    }

    /// Export the cluster's logs into its logs directory and return it.
    pub fn export_logs(&self) -> Result<PathBuf, StepError> {
        exec::run_plan_all(&self.failure)?;
        Ok(self.logs.clone())
    }

    /// Delete the cluster now, as dropping it would (nothing when it is kept or was reused).
    pub fn delete(mut self) -> Result<(), StepError> {
        self.guard.teardown_now()
    }

    /// Whether dropping this value deletes the cluster.
    pub fn deletes_on_drop(&self) -> bool {
        self.guard.is_armed()
    }
}

impl RealCluster for KindCluster {
    fn name(&self) -> &str {
        &self.name
    }

    fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// Whether `kind get clusters` lists `name`.
fn cluster_exists(name: &str) -> Result<bool, StepError> {
    let cmd = Cmd::new("kind", ["get", "clusters"]);
    let listed = exec::run(&cmd, exec::PROBE_TIMEOUT).map_err(|source| StepError {
        number: 0,
        purpose: "list kind clusters".to_string(),
        rendered: cmd.to_string(),
        source,
    })?;
    Ok(listed.stdout.lines().any(|line| line.trim() == name))
}
