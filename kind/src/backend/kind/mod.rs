//! The kind backend: cluster configs per primary CNI and the ordered plan of `kind`/`docker` commands.
//!
//! Generation is pure: [`cluster_config`], [`plan`], [`teardown_plan`] and
//! [`failure_plan`] only look at a [`KindSpec`] and a [`PlanEnv`], so their
//! output is snapshot-tested in every build. [`start`] runs them.

mod cni;
mod config;
mod start;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use cni::PrimaryCni;
pub use config::cluster_config;
pub use start::start;

use super::env::{Arch, PlanEnv};
use super::images::{self, ImageBuild};
use super::plan::{self, Cmd, Plan, Step, path_arg};
use super::preflight::Tool;
use super::versions::KubeVersion;

/// Where CNI configs and plugins live on a kind node (the standard paths; Helm platform "none").
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The CNI plugin directory on a kind node.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// What cluster to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSpec {
    /// The cluster name (`kind --name`); `KIND_CLUSTER_NAME` overrides it.
    pub name: String,
    /// Worker nodes besides the control plane.
    pub workers: u32,
    /// The primary CNI istio-cni chains onto.
    pub cni: PrimaryCni,
    /// The Kubernetes version (selects the pinned node image).
    pub k8s_version: KubeVersion,
    /// Images built on the host and loaded into the nodes (the agent image is
    /// added when `agent/Dockerfile` exists, see [`PlanEnv::agent_dockerfile`]).
    pub images: Vec<ImageBuild>,
    /// Reuse the cluster when one of this name exists (always so when `KIND_CLUSTER_NAME` is set).
    pub reuse: bool,
    /// Never delete the cluster (also `KEEP_CLUSTER=1`).
    pub keep: bool,
    /// How long to wait for the CNI and the nodes to become ready.
    pub ready_timeout: Duration,
}

impl KindSpec {
    /// One control plane and one worker with kindnet on the default Kubernetes
    /// version, building the test image.
    pub fn new(name: impl Into<String>) -> KindSpec {
        KindSpec {
            name: name.into(),
            workers: 1,
            cni: PrimaryCni::Kindnet,
            k8s_version: KubeVersion::default(),
            images: vec![ImageBuild::test_image()],
            reuse: false,
            keep: false,
            ready_timeout: Duration::from_secs(300),
        }
    }

    /// The same spec with another primary CNI.
    pub fn with_cni(mut self, cni: PrimaryCni) -> KindSpec {
        self.cni = cni;
        self
    }

    /// The same spec with `workers` worker nodes.
    pub fn with_workers(mut self, workers: u32) -> KindSpec {
        self.workers = workers;
        self
    }

    /// The same spec on another Kubernetes version.
    pub fn with_version(mut self, version: KubeVersion) -> KindSpec {
        self.k8s_version = version;
        self
    }

    /// The same spec building `images` (the agent image still comes from the environment).
    pub fn with_images(mut self, images: Vec<ImageBuild>) -> KindSpec {
        self.images = images;
        self
    }

    /// Check what kind would reject later: the cluster name.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)
    }

    /// The tools the plan runs.
    pub fn required_tools(&self) -> Vec<Tool> {
        let mut tools = vec![Tool::Docker, Tool::Kind, Tool::Kubectl];
        tools.extend(self.cni.required_tools());
        tools
    }

    /// The settings after the environment is applied.
    pub fn effective(&self, env: &PlanEnv) -> Effective {
        let name = env.kind_cluster_name.clone().unwrap_or_else(|| self.name.clone());
        let dir = env.cluster_dir(&name);
        Effective {
            reuse: self.reuse || env.kind_cluster_name.is_some(),
            keep: self.keep || env.keep_cluster,
            kubeconfig: dir.join("kubeconfig"),
            logs: dir.join("logs"),
            nodes: node_names(&name, self.workers),
            arch: env.arch,
            dir,
            name,
        }
    }
}

/// A [`KindSpec`] resolved against a [`PlanEnv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The cluster name.
    pub name: String,
    /// Reuse an existing cluster of that name.
    pub reuse: bool,
    /// Never delete it.
    pub keep: bool,
    /// The cluster's working directory.
    pub dir: PathBuf,
    /// Its kubeconfig (written by the plan; the user's kubeconfig is not touched).
    pub kubeconfig: PathBuf,
    /// Where logs are exported on failure.
    pub logs: PathBuf,
    /// The node containers, control plane first.
    pub nodes: Vec<String>,
    /// The Docker host's architecture.
    pub arch: Arch,
}

/// The node container names kind gives a cluster: `<name>-control-plane`, `<name>-worker`, `<name>-worker2`, ...
pub fn node_names(cluster: &str, workers: u32) -> Vec<String> {
    let workers = (1..=workers).map(|n| match n {
        1 => format!("{cluster}-worker"),
        n => format!("{cluster}-worker{n}"),
    });
    std::iter::once(format!("{cluster}-control-plane"))
        .chain(workers)
        .collect()
}

/// A spec kind would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The cluster name is not a lowercase DNS-style name.
    #[error(
        "invalid cluster name {0:?}: use 1 to 50 characters from a-z, 0-9, '-' and '.', starting with a letter or digit"
    )]
    InvalidName(String),
}

/// kind accepts `^[a-z0-9.-]+$`; node container names append up to 14 characters.
pub(crate) fn validate_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=50).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidName(name.to_string()))
    }
}

/// The plan that brings a cluster up: images, cluster, CNI, readiness, image loading.
pub fn plan(spec: &KindSpec, env: &PlanEnv) -> Plan {
    let eff = spec.effective(env);
    let kubeconfig = path_arg(&eff.kubeconfig);
    let mut steps = plan::docker_preamble(&spec.required_tools());
    steps.push(Step::MakeDir(eff.dir.clone()));
    let images = images::all_images(&spec.images, env);
    for image in &images {
        steps.extend(image.build_steps(env, &eff.dir));
    }
    let create = Cmd::new(
        "kind",
        [
            "create",
            "cluster",
            "--name",
            &eff.name,
            "--kubeconfig",
            &kubeconfig,
            "--retain",
            "--config",
            "-",
        ],
    )
    .stdin_text(cluster_config(spec));
    steps.push(if eff.reuse {
        create.step_unless(
            format!(
                "create cluster {} unless it exists (reused: KIND_CLUSTER_NAME or spec.reuse)",
                eff.name
            ),
            Cmd::new("kind", ["get", "clusters"]),
            eff.name.clone(),
        )
    } else {
        create.step(format!("create cluster {}", eff.name))
    });
    steps.push(
        Cmd::new(
            "kind",
            ["export", "kubeconfig", "--name", &eff.name, "--kubeconfig", &kubeconfig],
        )
        .step("write its kubeconfig (the user's kubeconfig is left alone)"),
    );
    steps.extend(cni::install_steps(spec, &eff));
    steps.extend(ready_steps(spec, &eff));
    for image in &images {
        steps.push(
            Cmd::new("kind", ["load", "docker-image", &image.tag, "--name", &eff.name])
                .step(format!("load {} into every node", image.tag)),
        );
    }
    steps.push(Step::Note(format!(
        "on failure: kind export logs {} --name {}",
        path_arg(&eff.logs),
        eff.name
    )));
    steps.push(Step::Note(drop_note(&eff)));
    Plan {
        title: title(spec, &eff),
        steps,
    }
}

/// The plan run when the harness is done with the cluster (on drop).
pub fn teardown_plan(spec: &KindSpec, env: &PlanEnv) -> Plan {
    let eff = spec.effective(env);
    let steps = if eff.keep {
        vec![Step::Note(drop_note(&eff))]
    } else {
        let mut steps = vec![
            Cmd::new("kind", ["delete", "cluster", "--name", &eff.name]).step(format!("delete cluster {}", eff.name)),
        ];
        if eff.reuse {
            steps.insert(
                0,
                Step::Note("skipped when the cluster existed before this run (reused)".to_string()),
            );
        }
        steps
    };
    Plan {
        title: format!("tear down kind cluster {}", eff.name),
        steps,
    }
}

/// The plan run when bringing the cluster up (or a test on it) fails: export its logs.
pub fn failure_plan(spec: &KindSpec, env: &PlanEnv) -> Plan {
    let eff = spec.effective(env);
    Plan {
        title: format!("collect the logs of kind cluster {}", eff.name),
        steps: vec![
            Step::MakeDir(eff.logs.clone()),
            Cmd::new("kind", ["export", "logs", &path_arg(&eff.logs), "--name", &eff.name])
                .step("export node, container and pod logs"),
        ],
    }
}

fn title(spec: &KindSpec, eff: &Effective) -> String {
    format!(
        "kind cluster {}: {} on Kubernetes {}, 1 control plane + {} worker{}",
        eff.name,
        spec.cni.describe(),
        spec.k8s_version,
        spec.workers,
        if spec.workers == 1 { "" } else { "s" }
    )
}

fn drop_note(eff: &Effective) -> String {
    if eff.keep {
        format!(
            "on drop: cluster kept (KEEP_CLUSTER=1); delete it with: kind delete cluster --name {}",
            eff.name
        )
    } else if eff.reuse {
        format!(
            "on drop: kind delete cluster --name {} (only if this run created it)",
            eff.name
        )
    } else {
        format!("on drop: kind delete cluster --name {}", eff.name)
    }
}

/// Wait for the primary CNI, the nodes and cluster DNS.
fn ready_steps(spec: &KindSpec, eff: &Effective) -> Vec<Step> {
    let kubectl = |args: &[&str]| plan::kubectl(&eff.kubeconfig, args);
    let wait = |probe: Cmd, purpose: String| Step::WaitFor {
        probe,
        timeout: spec.ready_timeout,
        purpose,
    };
    let mut steps: Vec<Step> = spec
        .cni
        .workloads()
        .iter()
        .map(|(namespace, workload)| {
            wait(
                kubectl(&["-n", namespace, "rollout", "status", workload, "--timeout=30s"]),
                format!("{} rolled out", workload),
            )
        })
        .collect();
    steps.extend(plan::ready_steps(
        &eff.kubeconfig,
        spec.ready_timeout,
        "every node Ready (its CNI config is in place)".to_string(),
    ));
    steps
}

impl fmt::Display for PrimaryCni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PrimaryCni {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PrimaryCni::ALL
            .into_iter()
            .find(|cni| cni.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = PrimaryCni::ALL.iter().map(|cni| cni.name()).collect();
                format!("unknown primary CNI {s:?}: expected one of {}", names.join(", "))
            })
    }
}
