//! The `existing` backend: a cluster that is already running, reached through a kubeconfig.
//!
//! Nothing is created or deleted. The kubeconfig is checked up front: the
//! file exists, parses, and names a current context whose cluster has a
//! server. Images can only reach such a cluster through a registry it pulls
//! from, so they are built and pushed only when one is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::config::Kubeconfig;

use super::StartError;
use super::env::PlanEnv;
use super::exec;
use super::images::{self, ImageBuild};
use super::plan::{self, Cmd, Plan, Step};
use super::preflight::{self, Tool, path_lookup};

/// An already running cluster to test against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingSpec {
    /// Its kubeconfig; its current context is used.
    pub kubeconfig: PathBuf,
    /// Images to build and push (the agent image is added when `agent/Dockerfile` exists).
    pub images: Vec<ImageBuild>,
    /// A registry the cluster pulls from (`registry.example:5000/team`); images are pushed there.
    pub registry: Option<String>,
    /// How long to wait for every node to be Ready.
    pub ready_timeout: Duration,
}

impl ExistingSpec {
    /// The cluster of `kubeconfig`, with no images.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> ExistingSpec {
        ExistingSpec {
            kubeconfig: kubeconfig.into(),
            images: Vec::new(),
            registry: None,
            ready_timeout: Duration::from_secs(300),
        }
    }

    /// The tools the plan runs.
    pub fn required_tools(&self, env: &PlanEnv) -> Vec<Tool> {
        let builds = self.registry.is_some() && !images::all_images(&self.images, env).is_empty();
        if builds {
            vec![Tool::Kubectl, Tool::Docker]
        } else {
            vec![Tool::Kubectl]
        }
    }
}

/// A kubeconfig that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    /// The file does not exist.
    #[error("kubeconfig {0} does not exist")]
    Missing(PathBuf),
    /// It cannot be read or is not a kubeconfig.
    #[error("kubeconfig {path} is not a valid kubeconfig: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// It has no `current-context`.
    #[error("kubeconfig {0} has no current-context (set one with `kubectl config use-context NAME`)")]
    NoCurrentContext(PathBuf),
    /// The current context is not among its contexts.
    #[error("kubeconfig {path}: current-context {context:?} is not one of its contexts ({available})")]
    UnknownContext {
        /// The file.
        path: PathBuf,
        /// The current context.
        context: String,
        /// The contexts it has, comma separated.
        available: String,
    },
    /// The context's cluster is missing or has no server.
    #[error("kubeconfig {path}: context {context:?} names cluster {cluster:?}, which is missing or has no server")]
    NoServer {
        /// The file.
        path: PathBuf,
        /// The current context.
        context: String,
        /// The cluster it names.
        cluster: String,
    },
}

/// The current context of an existing cluster's kubeconfig, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeContext {
    /// The kubeconfig.
    pub kubeconfig: PathBuf,
    /// Its current context.
    pub context: String,
    /// The API server URL of that context's cluster.
    pub server: String,
}

/// Check that `kubeconfig` exists, parses, and has a usable current context.
pub fn validate(kubeconfig: &Path) -> Result<KubeContext, KubeconfigError> {
    if !kubeconfig.is_file() {
        return Err(KubeconfigError::Missing(kubeconfig.to_path_buf()));
    }
    let config = Kubeconfig::read_from(kubeconfig).map_err(|error| KubeconfigError::Invalid {
        path: kubeconfig.to_path_buf(),
        message: error.to_string(),
    })?;
    let context = config
        .current_context
        .clone()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| KubeconfigError::NoCurrentContext(kubeconfig.to_path_buf()))?;
    let named = config
        .contexts
        .iter()
        .find(|named| named.name == context)
        .ok_or_else(|| KubeconfigError::UnknownContext {
            path: kubeconfig.to_path_buf(),
            context: context.clone(),
            available: config
                .contexts
                .iter()
                .map(|named| named.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let cluster = named
        .context
        .as_ref()
        .map(|ctx| ctx.cluster.clone())
        .unwrap_or_default();
    let server = config
        .clusters
        .iter()
        .find(|named| named.name == cluster)
        .and_then(|named| named.cluster.as_ref())
        .and_then(|cluster| cluster.server.clone())
        .ok_or_else(|| KubeconfigError::NoServer {
            path: kubeconfig.to_path_buf(),
            context: context.clone(),
            cluster,
        })?;
    Ok(KubeContext {
        kubeconfig: kubeconfig.to_path_buf(),
        context,
        server,
    })
}

/// The plan that prepares an existing cluster: check it answers, wait for
/// its nodes, and build and push images when a registry is given. It has no
/// create and no delete step.
pub fn plan(cluster: &KubeContext, spec: &ExistingSpec, env: &PlanEnv) -> Plan {
    let kubectl = |args: &[&str]| plan::kubectl(&cluster.kubeconfig, args);
    let mut steps = vec![
        plan::tools_note(&spec.required_tools(env)),
        kubectl(&["get", "--raw", "/readyz"]).step("the API server answers"),
        Step::WaitFor {
            probe: kubectl(&["wait", "--for=condition=Ready", "nodes", "--all", "--timeout=30s"]),
            timeout: spec.ready_timeout,
            purpose: "every node Ready".to_string(),
        },
    ];
    let images = images::all_images(&spec.images, env);
    match &spec.registry {
        Some(registry) => {
            let scratch = env.cluster_dir("existing");
            if !images.is_empty() {
                steps.push(Step::MakeDir(scratch.clone()));
            }
            for image in &images {
                steps.extend(image.build_steps(env, &scratch));
                let remote = format!("{}/{}", registry.trim_end_matches('/'), image.tag);
                steps.push(Cmd::new("docker", ["tag", &image.tag, &remote]).step(format!("tag it as {remote}")));
                steps.push(Cmd::new("docker", ["push", &remote]).step(format!("push {remote}")));
            }
        }
        None if !images.is_empty() => steps.push(Step::Note(format!(
            "images not built: no registry given, so the cluster must already pull {}",
            images
                .iter()
                .map(|image| image.tag.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => {}
    }
    steps.push(Step::Note(
        "on drop: nothing (the cluster is not created or deleted here)".to_string(),
    ));
    Plan {
        title: format!("existing cluster: context {} at {}", cluster.context, cluster.server),
        steps,
    }
}

/// Validate the kubeconfig, check the tools, then run [`plan`].
pub fn start(spec: &ExistingSpec, env: &PlanEnv) -> Result<KubeContext, StartError> {
    let cluster = validate(&spec.kubeconfig)?;
    preflight::preflight("existing", &spec.required_tools(env), path_lookup)?;
    exec::run_plan(&plan(&cluster, spec, env)).map_err(StartError::step)?;
    Ok(cluster)
}
