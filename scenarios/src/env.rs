//! Where scenarios run: the cluster backend and the project binaries.
//!
//! On the embedded cluster, container images are local executables: the
//! image table maps Istio's `proxyv2` to `istio-cni validate` (the
//! `istio-validation` init container) or mesh-probe's capturing proxy
//! (`istio-proxy`), the apps to mesh-probe, and the agent's image to a
//! directory laid out like `agent/Dockerfile`'s image (agent and plugin), so
//! the agent's DaemonSet runs as on any cluster. On kind and existing
//! clusters the same pod specs use the project's test image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use istio_cni_kind::backend::versions::KubeVersion;
use istio_cni_kind::cluster::{Cluster, ClusterError, ClusterSpec, Reaper, Target as ClusterTarget};
use istio_cni_kind::kubelet::{Backoff, ImageTable};

use crate::error::{Error, Several};
use crate::scenario::Stop;
use crate::system::System;
use testkit::Scratch;

/// Picks the Kubernetes version (the pinned `kindest/node` image) of kind
/// clusters, `1.33` or `v1.32`: the second axis of a CI matrix, which passes
/// it down to every scenario's cluster without a flag per call site.
pub const KIND_K8S_VERSION: &str = "KIND_K8S_VERSION";

/// [`KIND_K8S_VERSION`], when set and not empty.
fn kind_version() -> Result<Option<KubeVersion>, Stop> {
    parse_kind_version(std::env::var(KIND_K8S_VERSION).ok())
}

fn parse_kind_version(value: Option<String>) -> Result<Option<KubeVersion>, Stop> {
    match value {
        Some(value) if !value.trim().is_empty() => value
            .parse()
            .map(Some)
            .map_err(|e| Stop::Fail(format!("{KIND_K8S_VERSION}={value}: {e}"))),
        _ => Ok(None),
    }
}

/// Which cluster a scenario gets.
#[derive(Debug, Clone)]
pub enum Target {
    /// A fresh embedded cluster per scenario.
    Local,
    /// A kind cluster (feature `kind`) with this primary CNI.
    Kind { cni: String },
    /// An already running cluster.
    Existing { kubeconfig: PathBuf },
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Local => "local",
            Target::Kind { .. } => "kind",
            Target::Existing { .. } => "existing",
        }
    }
}

/// Why the workspace binaries are not there.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    /// Where they are is found from the running executable's path.
    #[error("current executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// cargo, building the missing ones, did not start.
    #[error("running cargo build: {0}")]
    Cargo(#[source] std::io::Error),
    /// cargo built, and failed: `(binary, package)` of each missing one.
    #[error("cargo build of {missing:?} failed ({status})")]
    Build {
        missing: Vec<(&'static str, &'static str)>,
        status: std::process::ExitStatus,
    },
}

/// The workspace binaries scenarios install and run.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub istio_cni: PathBuf,
    pub agent: PathBuf,
    pub mesh_probe: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `dir` (a cargo target profile dir).
    pub fn in_dir(dir: &Path) -> Binaries {
        Binaries {
            istio_cni: dir.join("istio-cni"),
            agent: dir.join("istio-cni-agent"),
            mesh_probe: dir.join("mesh-probe"),
        }
    }

    /// The binaries next to the running executable (the runner, or a test
    /// binary in `target/<profile>/deps`), building missing ones with cargo.
    pub fn locate() -> Result<Binaries, BinariesError> {
        let exe = std::env::current_exe().map_err(BinariesError::CurrentExe)?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bins = Binaries::in_dir(&dir);
        let missing: Vec<(&'static str, &'static str)> = [
            (&bins.istio_cni, "istio-cni", "istio-cni"),
            (&bins.agent, "istio-cni-agent", "istio-cni-agent"),
            (&bins.mesh_probe, "mesh-probe", "istio-cni-kind"),
        ]
        .into_iter()
        .filter(|(p, _, _)| !p.exists())
        .map(|(_, bin, pkg)| (bin, pkg))
        .collect();
        if !missing.is_empty() {
            let release = dir.ends_with("release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.arg("build");
            if release {
                cmd.arg("--release");
            }
            for (bin, pkg) in &missing {
                cmd.args(["-p", pkg, "--bin", bin]);
            }
            let status = cmd.status().map_err(BinariesError::Cargo)?;
            if !status.success() {
                return Err(BinariesError::Build { missing, status });
            }
        }
        Ok(bins)
    }
}

/// The environment every scenario body gets.
#[derive(Debug, Clone)]
pub struct Env {
    pub target: Target,
    pub bins: Binaries,
    /// The embedded clusters made through this env (and its clones), so a
    /// runner that gives up on a hung scenario can tear them down ([`Env::reap`]).
    reapers: Arc<Mutex<Vec<Reaper>>>,
    /// The image table with the agent's image directory, laid out on first
    /// use; the directory is removed when the last table naming it (this
    /// env's, every cluster's) is gone.
    agent_image: Arc<Mutex<Option<ImageTable>>>,
    /// What scenarios deploy as the agent ([`System::project`] by default).
    pub system: Arc<System>,
    /// The plugin the agent image carries, when not [`Binaries::istio_cni`].
    image_plugin: Option<PathBuf>,
}

impl Env {
    /// An env on `target`; an [`Error::Binaries`] when the workspace
    /// binaries are missing and cannot be built.
    pub fn new(target: Target) -> Result<Env, Error> {
        Ok(Env {
            target,
            bins: Binaries::locate()?,
            reapers: Arc::default(),
            agent_image: Arc::default(),
            system: Arc::default(),
            image_plugin: None,
        })
    }

    /// The same env deploying `system` (its inputs checked first: an
    /// [`Error::System`] names the bad one).
    pub fn with_system(self, system: System) -> Result<Env, Error> {
        system.check()?;
        Ok(Env {
            system: Arc::new(system),
            ..self
        })
    }

    /// An embedded-cluster env whose binaries may not exist (unit tests).
    pub fn local_for_tests() -> Env {
        Env {
            target: Target::Local,
            bins: Binaries::in_dir(Path::new("/nonexistent")),
            reapers: Arc::default(),
            agent_image: Arc::default(),
            system: Arc::default(),
            image_plugin: None,
        }
    }

    /// The same env whose agent image carries `plugin` as its `istio-cni`
    /// (an image of its own, laid out on first use): the agent installs
    /// that binary on the nodes, while `istio-validation` stays
    /// [`Binaries::istio_cni`] (a half-rolled agent image: the pods are
    /// as before).
    pub fn with_image_plugin(&self, plugin: &Path) -> Env {
        Env {
            agent_image: Arc::default(),
            image_plugin: Some(plugin.to_path_buf()),
            ..self.clone()
        }
    }

    /// The same env with its own record of clusters: one per scenario run.
    pub fn scoped(&self) -> Env {
        Env {
            reapers: Arc::default(),
            ..self.clone()
        }
    }

    /// Tears down every embedded cluster made through this scope, even while
    /// the scenario that made them still holds them (it hung); what failed.
    pub fn reap(&self) -> Result<(), Several<ClusterError>> {
        let reapers = std::mem::take(&mut *self.reapers.lock().unwrap_or_else(|p| p.into_inner()));
        let errors: Vec<ClusterError> = reapers.iter().filter_map(|r| r.reap().err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Several(errors))
        }
    }

    /// Container images as local executables and directories (embedded
    /// cluster). The agent's image is a directory holding the agent (also
    /// as `install-cni`) and the plugin; where it cannot be laid out (the
    /// binaries are missing, as in unit tests) the agent runs bare. The
    /// system under test's entries (`--image`) come before every other.
    pub fn images(&self) -> Result<ImageTable, Stop> {
        let mut table = self.base_images()?;
        for entry in &self.system.images {
            table = table.add_entry(entry).map_err(|e| Stop::Fail(e.to_string()))?;
        }
        Ok(table)
    }

    fn base_images(&self) -> Result<ImageTable, Stop> {
        let table = ImageTable::istio(&self.bins.istio_cni, &self.bins.mesh_probe);
        if !(self.bins.agent.is_file() && self.bins.istio_cni.is_file()) {
            return Ok(table.with_agent(&self.bins.agent));
        }
        let mut slot = self.agent_image.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(table) = &*slot {
            return Ok(table.clone());
        }
        let guard = Arc::new(
            Scratch::create("istio-cni-agent-image")
                .map_err(|e| Stop::Fail(format!("laying out the agent image: {e}")))?,
        );
        let dir = guard.path();
        let plugin = self.image_plugin.as_deref().unwrap_or(&self.bins.istio_cni);
        let table = table
            .with_agent_dir(dir, &self.bins.agent, plugin)
            .map_err(|e| Stop::Fail(format!("laying out the agent image in {}: {e}", dir.display())))?
            .holding(guard);
        *slot = Some(table.clone());
        Ok(table)
    }

    /// A cluster for one scenario: `spec` on this env's backend, with the
    /// env's images and a short kubelet backoff (scenarios wait on restarts).
    pub fn cluster(&self, spec: ClusterSpec) -> Result<Cluster, Stop> {
        let spec = ClusterSpec {
            target: match &self.target {
                Target::Local => ClusterTarget::Local,
                Target::Kind { cni } => {
                    let mut b = ClusterTarget::kind();
                    if let ClusterTarget::Kind {
                        cni: c, k8s_version, ..
                    } = &mut b
                    {
                        *c = cni.parse().map_err(|e| Stop::Fail(format!("--cni {cni}: {e}")))?;
                        if let Some(version) = kind_version()? {
                            *k8s_version = version;
                        }
                    }
                    b
                }
                Target::Existing { kubeconfig } => ClusterTarget::existing(kubeconfig.clone()),
            },
            images: self.images()?,
            backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(1),
            },
            ..spec
        };
        let local = matches!(self.target, Target::Local);
        let cluster = Cluster::create(spec).map_err(|e| {
            // ClusterError says "creating the cluster" itself.
            let hint = if local && !nix::unistd::geteuid().is_root() {
                " (the embedded cluster needs root: run as root or inside \
                 `unshare --map-auto --map-root-user --net --mount`)"
            } else {
                ""
            };
            Stop::Fail(format!("{e}{hint}"))
        })?;
        if let Some(reaper) = cluster.reaper() {
            self.reapers.lock().unwrap_or_else(|p| p.into_inner()).push(reaper);
        }
        Ok(cluster)
    }

    /// Whether this env runs the embedded cluster (node files and processes are reachable).
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local)
    }
}

#[cfg(test)]
mod kind_version_tests {
    use super::*;

    #[test]
    fn kind_k8s_version_picks_a_pinned_image_or_names_the_variable() {
        assert_eq!(parse_kind_version(None).unwrap(), None);
        assert_eq!(parse_kind_version(Some(" ".into())).unwrap(), None);
        assert_eq!(
            parse_kind_version(Some("1.32".into())).unwrap(),
            Some(KubeVersion::V1_32)
        );
        assert_eq!(
            parse_kind_version(Some("v1.33".into())).unwrap(),
            Some(KubeVersion::V1_33)
        );
        match parse_kind_version(Some("1.20".into())) {
            Err(Stop::Fail(message)) => assert!(message.starts_with("KIND_K8S_VERSION=1.20: unsupported"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
