//! What a plan depends on outside its spec: paths, files that exist, environment variables.
//!
//! [`PlanEnv::detect`] reads them from this process; tests build a
//! `PlanEnv` by hand so that plans are reproducible.

use std::path::{Path, PathBuf};

/// Name of the variable that makes the kind backend reuse (or create and reuse) a named cluster.
pub const KIND_CLUSTER_NAME: &str = "KIND_CLUSTER_NAME";
/// Name of the variable that keeps clusters after the tests (`KEEP_CLUSTER=1`).
pub const KEEP_CLUSTER: &str = "KEEP_CLUSTER";

/// CPU architecture of the Docker host (the nodes run on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
}

impl Arch {
    /// The architecture of this machine (x86-64 unless it is aarch64: kind has images for these two).
    pub fn host() -> Arch {
        if std::env::consts::ARCH == "aarch64" {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// The Go name used in release file names (`amd64`, `arm64`).
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// The environment a plan is generated for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEnv {
    /// The workspace root (holds `Cargo.toml`, `agent/`).
    pub repo_root: PathBuf,
    /// Cargo's target directory (release binaries are staged from `<target_dir>/release`).
    pub target_dir: PathBuf,
    /// Where kubeconfigs, logs and image build contexts go (one subdirectory per cluster).
    pub workdir: PathBuf,
    /// The agent's Dockerfile, when it exists: the plan builds the agent image only then.
    pub agent_dockerfile: Option<PathBuf>,
    /// `KIND_CLUSTER_NAME`: reuse this cluster (create it when it does not exist yet).
    pub kind_cluster_name: Option<String>,
    /// `KEEP_CLUSTER=1`: never delete the cluster.
    pub keep_cluster: bool,
    /// The Docker host's architecture.
    pub arch: Arch,
}

impl PlanEnv {
    /// An environment for the workspace at `repo_root` with nothing taken from
    /// this process: no agent Dockerfile, no variables, `amd64`.
    pub fn fixed(repo_root: impl Into<PathBuf>) -> PlanEnv {
        let repo_root = repo_root.into();
        let target_dir = repo_root.join("target");
        PlanEnv {
            workdir: target_dir.join("kind"),
            target_dir,
            repo_root,
            agent_dockerfile: None,
            kind_cluster_name: None,
            keep_cluster: false,
            arch: Arch::Amd64,
        }
    }

    /// The environment of this process for the workspace at `repo_root`:
    /// `KIND_CLUSTER_NAME`, `KEEP_CLUSTER`, `CARGO_TARGET_DIR`, whether
    /// `agent/Dockerfile` exists, and the host architecture.
    pub fn detect(repo_root: impl Into<PathBuf>) -> PlanEnv {
        let mut env = PlanEnv::fixed(repo_root);
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
            env.target_dir = env.repo_root.join(dir);
            env.workdir = env.target_dir.join("kind");
        }
        let dockerfile = env.repo_root.join("agent").join("Dockerfile");
        env.agent_dockerfile = dockerfile.is_file().then_some(dockerfile);
        env.kind_cluster_name = std::env::var(KIND_CLUSTER_NAME)
            .ok()
            .filter(|name| !name.trim().is_empty());
        env.keep_cluster = std::env::var(KEEP_CLUSTER).is_ok_and(|value| is_truthy(&value));
        env.arch = Arch::host();
        env
    }

    /// [`PlanEnv::detect`] for this workspace (the parent of the `kind` crate).
    pub fn detect_workspace() -> PlanEnv {
        PlanEnv::detect(workspace_root())
    }

    /// The working directory of one cluster.
    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.workdir.join(cluster)
    }
}

/// The workspace root this crate was built in.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn is_truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}
