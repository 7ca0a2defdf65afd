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

/// A Docker CLI whose engine does not answer (not running, or its socket
/// not usable by this user): the CLI alone cannot run a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {backend} backend needs a running Docker engine, and `{program} version` could not reach one: {detail}\n\
     start it (systemctl start docker) or make its socket usable by this user (the docker group)"
)]
pub struct NoEngine {
    /// The backend that needs it.
    pub backend: &'static str,
    /// The CLI that was asked.
    pub program: String,
    /// What it said.
    pub detail: String,
}

/// How long the engine has to answer `docker version`.
pub const ENGINE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks the Docker CLI `program` for the engine's version: a quick, local
/// call that fails at once where no daemon listens.
pub fn engine(backend: &'static str, program: &str) -> Result<(), NoEngine> {
    use super::exec::{self, ExecError};
    use super::plan::Cmd;

    let cmd = Cmd::new(program, ["version", "--format", "{{.Server.Version}}"]);
    let failed = |detail: String| NoEngine {
        backend,
        program: program.to_string(),
        detail,
    };
    match exec::run(&cmd, ENGINE_TIMEOUT) {
        Ok(out) if !out.stdout.trim().is_empty() => Ok(()),
        Ok(_) => Err(failed("it printed no server version".into())),
        Err(ExecError::Failed { stderr, .. }) => {
            let line = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(no output)");
            Err(failed(line.trim().to_string()))
        }
        Err(e) => Err(failed(e.to_string())),
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
