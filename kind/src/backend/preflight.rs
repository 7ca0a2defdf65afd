//! Preflight: are the tools a backend drives on `PATH`?
//!
//! Only `PATH` is searched — nothing is run, pulled or contacted — so a
//! machine without Docker or kind gets an answer at once, naming every
//! missing tool and how to install it.

use std::fmt;
use std::path::{Path, PathBuf};

use super::versions;

/// A command-line tool a backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    /// The Docker CLI (and, behind it, a running Docker engine).
    Docker,
    /// kind: Kubernetes in Docker.
    Kind,
    /// kubectl: applies manifests and waits for rollouts.
    Kubectl,
    /// Helm: renders the Cilium chart.
    Helm,
    /// curl: downloads the CNI plugins flannel needs.
    Curl,
    /// tar: unpacks them.
    Tar,
}

impl Tool {
    /// The program looked up on `PATH`.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Docker => "docker",
            Tool::Kind => "kind",
            Tool::Kubectl => "kubectl",
            Tool::Helm => "helm",
            Tool::Curl => "curl",
            Tool::Tar => "tar",
        }
    }

    /// How to install it (one line).
    pub fn install_hint(self) -> String {
        match self {
            Tool::Docker => "a Docker engine and its CLI, https://docs.docker.com/engine/install/ (Debian: \
                             apt-get install docker.io); the daemon must be running and usable by this user"
                .to_string(),
            Tool::Kind => format!(
                "{kind}, a release binary from https://github.com/kubernetes-sigs/kind/releases/tag/{kind} \
                 or `go install sigs.k8s.io/kind@{kind}`",
                kind = versions::KIND
            ),
            Tool::Kubectl => {
                "https://kubernetes.io/docs/tasks/tools/ (Debian: apt-get install kubernetes-client)".to_string()
            }
            Tool::Helm => "Helm 3, https://helm.sh/docs/intro/install/".to_string(),
            Tool::Curl => "Debian: apt-get install curl".to_string(),
            Tool::Tar => "Debian: apt-get install tar".to_string(),
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

/// Tools a backend needs that are not on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingTools {
    /// The backend that needs them (`kind`, `k3s`, `existing`).
    pub backend: &'static str,
    /// The missing tools, in the order they were asked for.
    pub missing: Vec<Tool>,
}

impl fmt::Display for MissingTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.missing.iter().map(|tool| tool.program()).collect();
        writeln!(
            f,
            "the {} backend needs {} on PATH; install:",
            self.backend,
            names.join(", ")
        )?;
        for tool in &self.missing {
            writeln!(f, "  - {}: {}", tool.program(), tool.install_hint())?;
        }
        write!(
            f,
            "(only the real-cluster tests, behind `--features kind`, need them; the cluster configs and \
             plans are snapshot-tested in every build)"
        )
    }
}

/// Check that every tool in `needed` is found by `lookup` (usually [`path_lookup`]).
pub fn preflight<F>(backend: &'static str, needed: &[Tool], lookup: F) -> Result<(), MissingTools>
where
    F: Fn(&str) -> Option<PathBuf>,
{
    let mut missing = Vec::new();
    for &tool in needed {
        if !missing.contains(&tool) && lookup(tool.program()).is_none() {
            missing.push(tool);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingTools { backend, missing })
    }
}

/// Find `program` as an executable file in a directory of this process's `PATH`.
pub fn path_lookup(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
