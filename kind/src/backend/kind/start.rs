//! [`start`]: runs the plans of a [`KindSpec`] against Docker.

use super::{KindSpec, failure_plan, plan, teardown_plan};
use crate::backend::StartError;
use crate::backend::docker::DockerNodes;
use crate::backend::env::PlanEnv;
use crate::backend::exec::{self, StepError, TeardownGuard};
use crate::backend::plan::Cmd;
use crate::backend::preflight::{self, path_lookup};

/// Check the spec and the tools (at once, before anything runs), then run
/// [`plan`]. The cluster is deleted on drop unless kept
/// ([`KindSpec::keep`], `KEEP_CLUSTER=1`) or reused.
///
/// When a step fails and the cluster exists, its logs are exported (see
/// [`failure_plan`]) and, when this run created it, it is deleted unless kept.
pub fn start(spec: &KindSpec, env: &PlanEnv) -> Result<DockerNodes, StartError> {
    spec.validate()?;
    preflight::preflight("kind", &spec.required_tools(), path_lookup)?;
    preflight::engine("kind", "docker")?;
    let eff = spec.effective(env);
    let existed = eff.reuse && cluster_exists(&eff.name).map_err(StartError::step)?;
    let guard = TeardownGuard::new(teardown_plan(spec, env), !existed && !eff.keep);
    let mut cluster = DockerNodes::new(
        "kind",
        eff.name.clone(),
        &eff.dir,
        eff.nodes.clone(),
        failure_plan(spec, env),
        guard,
    );
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
