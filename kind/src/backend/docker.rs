//! [`DockerNodes`]: the node containers of a kind or k3s cluster, brought
//! up by a backend's plan. One type for both: they differ only
//! in their plans; what a running one offers (kubeconfig, logs, teardown on
//! drop, commands on its nodes and in its pods) is the same.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::exec::{self, Captured, ExecError, StepError, TeardownGuard};
use super::plan::{Cmd, Plan};

/// How long one command on a node (or in a pod) may run.
pub const NODE_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A running kind or k3s cluster. Dropping it runs its teardown plan
/// (deletes the cluster) unless it is kept (`KEEP_CLUSTER=1`) or this run
/// reused one that already existed.
///
/// Commands block the calling thread (`kind create cluster` takes a minute
/// or more): from async code, call it inside `spawn_blocking`.
#[derive(Debug)]
pub struct DockerNodes {
    backend: &'static str,
    name: String,
    kubeconfig: PathBuf,
    logs: PathBuf,
    nodes: Vec<String>,
    failure: Plan,
    pub(crate) guard: TeardownGuard,
}

impl DockerNodes {
    /// A cluster about to be brought up: `guard` deletes it on drop, so a
    /// failed start cleans up after itself.
    pub(crate) fn new(
        backend: &'static str,
        name: String,
        dir: &Path,
        nodes: Vec<String>,
        failure: Plan,
        guard: TeardownGuard,
    ) -> DockerNodes {
        DockerNodes {
            backend,
            name,
            kubeconfig: dir.join("kubeconfig"),
            logs: dir.join("logs"),
            nodes,
            failure,
            guard,
        }
    }

    /// `kind` or `k3s`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kubeconfig (written under `target/kind/<cluster>/`; the user's is not touched).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The node containers (their names are also the Kubernetes node names).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Collect the cluster's logs into its logs directory and return it.
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

    /// Runs `argv` on a node (`docker exec <node> ...`).
    pub fn node_exec(&self, node: &str, argv: &[&str]) -> Result<Captured, ExecError> {
        exec::run(&node_exec_cmd(node, argv), NODE_EXEC_TIMEOUT)
    }

    /// Runs `argv` in the netns of the pod with this UID on `node`: the
    /// pod's ready sandbox from `crictl pods`, its pause pid from
    /// `crictl inspectp`, then `nsenter --net` (the node images carry all three).
    pub fn pod_exec(&self, node: &str, pod_uid: &str, argv: &[&str]) -> Result<Captured, ExecError> {
        let sandboxes = exec::run(&pod_sandbox_cmd(node, pod_uid), NODE_EXEC_TIMEOUT)?;
        let sandbox = sandboxes.stdout.lines().map(str::trim).find(|l| !l.is_empty());
        let sandbox = sandbox.ok_or_else(|| ExecError::Io {
            what: format!("finding the sandbox of pod {pod_uid} on {node}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "crictl lists no ready sandbox"),
        })?;
        let inspect = exec::run(&inspect_sandbox_cmd(node, sandbox), NODE_EXEC_TIMEOUT)?;
        let pid = sandbox_pid(&inspect.stdout).ok_or_else(|| ExecError::Io {
            what: format!("reading the pid of sandbox {sandbox} on {node}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no .info.pid in crictl inspectp"),
        })?;
        exec::run(&nsenter_cmd(node, pid, argv), NODE_EXEC_TIMEOUT)
    }
}

/// `docker exec <node> <argv>`.
pub fn node_exec_cmd(node: &str, argv: &[&str]) -> Cmd {
    Cmd::new("docker", ["exec", node].into_iter().chain(argv.iter().copied()))
}

/// The pod's ready sandbox ids, by the UID label kubelet puts on it.
pub fn pod_sandbox_cmd(node: &str, pod_uid: &str) -> Cmd {
    on(node, pod_sandbox_argv(pod_uid))
}

/// The sandbox's status and runtime info (JSON).
pub fn inspect_sandbox_cmd(node: &str, sandbox: &str) -> Cmd {
    on(node, inspect_sandbox_argv(sandbox))
}

/// `argv` in the network namespace of process `pid` on the node.
pub fn nsenter_cmd(node: &str, pid: u32, argv: &[&str]) -> Cmd {
    on(node, nsenter_argv(&pid.to_string(), argv))
}

fn on(node: &str, argv: Vec<String>) -> Cmd {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    node_exec_cmd(node, &argv)
}

/// On a node: the ready sandbox ids of the pod with this UID (the label
/// kubelet puts on a sandbox), one per line.
pub fn pod_sandbox_argv(pod_uid: &str) -> Vec<String> {
    let label = format!("io.kubernetes.pod.uid={pod_uid}");
    ["crictl", "pods", "--label", &label, "--state", "ready", "-q"]
        .map(String::from)
        .to_vec()
}

/// On a node: a sandbox's status and runtime info (JSON).
pub fn inspect_sandbox_argv(sandbox: &str) -> Vec<String> {
    ["crictl", "inspectp", "-o", "json", sandbox].map(String::from).to_vec()
}

/// On a node: `argv` in the network namespace of process `pid`.
pub fn nsenter_argv(pid: &str, argv: &[&str]) -> Vec<String> {
    ["nsenter", "--target", pid, "--net", "--"]
        .iter()
        .chain(argv)
        .map(|a| a.to_string())
        .collect()
}

/// The pause pid of `crictl inspectp -o json` (containerd's `.info.pid`).
pub fn sandbox_pid(inspect: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(inspect).ok()?;
    let pid = value.pointer("/info/pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_exec_commands() {
        assert_eq!(
            pod_sandbox_cmd("c-worker", "u-1").to_string(),
            "docker exec c-worker crictl pods --label io.kubernetes.pod.uid=u-1 --state ready -q"
        );
        assert_eq!(
            inspect_sandbox_cmd("c-worker", "abc").to_string(),
            "docker exec c-worker crictl inspectp -o json abc"
        );
        assert_eq!(
            nsenter_cmd("c-worker", 42, &["iptables-save"]).to_string(),
            "docker exec c-worker nsenter --target 42 --net -- iptables-save"
        );
        assert_eq!(sandbox_pid(r#"{"status": {}, "info": {"pid": 1234}}"#), Some(1234));
        assert_eq!(sandbox_pid(r#"{"info": {"pid": 0}}"#), None);
        assert_eq!(sandbox_pid("not json"), None);
    }
}
