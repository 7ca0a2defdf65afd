//! Commands on the nodes of an existing cluster, where the harness has no
//! Docker to reach them: a node shell per node, as `kubectl debug node/…`
//! makes one — a privileged pod bound to the node that shares its PID
//! namespace. A command enters the namespaces of the node's pid 1 (mount,
//! UTS, IPC, network) with `nsenter`, so it runs the node's own binaries on
//! the node's own files; a command in a pod's netns then goes the way it
//! does on kind and k3s (`crictl` finds the sandbox's pid, `nsenter --net`).
//!
//! The shell's image needs only `nsenter` and `sleep` (Debian's slim image
//! by default; `ISTIO_CNI_NODE_SHELL_IMAGE` names another, e.g. a mirror).
//! Shells live in `default` (where `kubectl debug node/…` puts its pods),
//! are deleted with the cluster handle, and end on their own after an hour
//! (`activeDeadlineSeconds`) if the run dies before that.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ClusterError;
use super::remote::Connection;
use crate::backend::docker;
use crate::backend::versions::TEST_IMAGE_BASE;

/// Where the shells run.
pub const NAMESPACE: &str = "default";
/// The shells' image unless named otherwise: it has `nsenter` and `sleep`.
pub const DEFAULT_IMAGE: &str = TEST_IMAGE_BASE;
/// Names the image of the shells.
pub const IMAGE_ENV: &str = "ISTIO_CNI_NODE_SHELL_IMAGE";
/// How long a shell may take to start (its image may need a pull).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of a command's stdout (or stderr) kept.
const OUTPUT_LIMIT: u64 = 16 << 20;
/// A shell that outlives its run ends by itself after this long.
const LIFETIME_SECONDS: i64 = 3600;

/// The shells started so far, one per node.
pub(super) struct NodeShells {
    image: String,
    shells: Mutex<HashMap<String, String>>,
}

impl NodeShells {
    /// No shell yet; the image `image`, else from [`IMAGE_ENV`], else
    /// Debian's slim one.
    pub(super) fn new(image: Option<String>) -> NodeShells {
        let image = image
            .or_else(|| std::env::var(IMAGE_ENV).ok())
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        NodeShells {
            image,
            shells: Mutex::new(HashMap::new()),
        }
    }

    /// `argv` on `node`, in its pid 1's namespaces; its stdout.
    pub(super) fn node_exec(&self, api: &Connection, node: &str, argv: &[&str]) -> Result<String, ClusterError> {
        if argv.is_empty() {
            return Err(ClusterError::EmptyCommand);
        }
        let place = format!("on node {node} (through a node shell)");
        let shell = self.shell(api, node)?;
        let full = on_node(argv);
        let pods: Api<Pod> = Api::namespaced(api.client(), NAMESPACE);
        api.block_on(run(&pods, &shell, &full))
            .map_err(ClusterError::exec(argv, place))
    }

    /// `argv` in the netns of the pod with this UID on `node`.
    pub(super) fn pod_exec(
        &self,
        api: &Connection,
        node: &str,
        uid: &str,
        argv: &[&str],
    ) -> Result<String, ClusterError> {
        let sandboxes = self.node_exec(api, node, &strs(&docker::pod_sandbox_argv(uid)))?;
        let sandbox = sandboxes.lines().map(str::trim).find(|l| !l.is_empty());
        let sandbox = sandbox.ok_or_else(|| ClusterError::NoSandbox {
            pod: format!("uid {uid} on {node} (crictl lists no ready sandbox)"),
        })?;
        let inspect = self.node_exec(api, node, &strs(&docker::inspect_sandbox_argv(sandbox)))?;
        let pid = docker::sandbox_pid(&inspect).ok_or_else(|| ClusterError::NoSandbox {
            pod: format!("uid {uid} on {node} (no .info.pid in crictl inspectp {sandbox})"),
        })?;
        let target = pid.to_string();
        self.node_exec(api, node, &strs(&docker::nsenter_argv(&target, argv)))
    }

    /// Deletes every shell this run started.
    pub(super) fn delete(&self, api: &Connection) -> Result<(), ClusterError> {
        let shells: Vec<(String, String)> = match self.shells.lock() {
            Ok(mut shells) => shells.drain().collect(),
            Err(_) => return Ok(()),
        };
        let pods: Api<Pod> = Api::namespaced(api.client(), NAMESPACE);
        let mut first = None;
        for (_, name) in shells {
            let gone = api.block_on(pods.delete(&name, &DeleteParams::default().grace_period(0)));
            match gone {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    first.get_or_insert(ClusterError::Api {
                        what: format!("deleting node shell {NAMESPACE}/{name}"),
                        source,
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The shell of `node`: started (and awaited Running) the first time.
    fn shell(&self, api: &Connection, node: &str) -> Result<String, ClusterError> {
        let mut shells = self.shells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(name) = shells.get(node) {
            return Ok(name.clone());
        }
        let pods: Api<Pod> = Api::namespaced(api.client(), NAMESPACE);
        let spec = shell_pod(node, &self.image)?;
        let created = api
            .block_on(pods.create(&PostParams::default(), &spec))
            .map_err(|source| ClusterError::Api {
                what: format!("creating a node shell on {node}"),
                source,
            })?;
        let name = created.metadata.name.unwrap_or_default();
        shells.insert(node.to_string(), name.clone());
        // Running, or a state it will not leave by itself (an image that
        // cannot be pulled: name another with ISTIO_CNI_NODE_SHELL_IMAGE).
        let settled = |pod: Option<&Pod>| pod.is_some_and(|p| shell_state(p) != ShellState::Starting);
        let seen = api.block_on(async {
            tokio::time::timeout(START_TIMEOUT, await_condition(pods.clone(), &name, settled)).await
        });
        let not_ready = |last_seen: String| ClusterError::PodNotReady {
            pod: format!("{NAMESPACE}/{name} (the node shell on {node}, image {})", self.image),
            timeout: START_TIMEOUT,
            last_seen,
        };
        match seen {
            Ok(Ok(Some(pod))) => match shell_state(&pod) {
                ShellState::Running => Ok(name),
                ShellState::Stuck(why) => Err(not_ready(format!(
                    "{why} (set {IMAGE_ENV} to an image this cluster can pull)"
                ))),
                ShellState::Starting => Err(not_ready("starting".into())),
            },
            Ok(Ok(None)) => Err(not_ready("deleted".into())),
            Ok(Err(e)) => Err(not_ready(e.to_string())),
            Err(_) => Err(not_ready("still starting".into())),
        }
    }
}

/// Where a shell pod is.
#[derive(Debug, PartialEq, Eq)]
enum ShellState {
    Starting,
    Running,
    /// Ended, or waiting for what will not come: why.
    Stuck(String),
}

fn shell_state(pod: &Pod) -> ShellState {
    let Some(status) = pod.status.as_ref() else {
        return ShellState::Starting;
    };
    match status.phase.as_deref() {
        Some("Running") => return ShellState::Running,
        Some(phase @ ("Failed" | "Succeeded")) => return ShellState::Stuck(format!("phase {phase}")),
        _ => {}
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref());
    for w in waiting {
        let reason = w.reason.as_deref().unwrap_or_default();
        if matches!(
            reason,
            "ErrImagePull"
                | "ImagePullBackOff"
                | "InvalidImageName"
                | "ErrImageNeverPull"
                | "CreateContainerConfigError"
        ) {
            return ShellState::Stuck(format!("{reason}: {}", w.message.as_deref().unwrap_or_default()));
        }
    }
    ShellState::Starting
}

fn strs(argv: &[String]) -> Vec<&str> {
    argv.iter().map(String::as_str).collect()
}

/// `argv` run by the shell in the node's own namespaces.
pub fn on_node(argv: &[&str]) -> Vec<String> {
    ["nsenter", "--target", "1", "--mount", "--uts", "--ipc", "--net", "--"]
        .iter()
        .chain(argv)
        .map(|a| a.to_string())
        .collect()
}

/// The shell pod for `node`: bound to it, tolerating every taint, sharing
/// its PID and network namespaces, privileged (entering pid 1's mount
/// namespace needs CAP_SYS_ADMIN and CAP_SYS_PTRACE over it).
pub fn shell_pod(node: &str, image: &str) -> Result<Pod, ClusterError> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "istio-cni-node-shell-",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "istio-cni-node-shell",
                "app.kubernetes.io/managed-by": "istio-cni-conformance",
            },
        },
        "spec": {
            "nodeName": node,
            "hostPID": true,
            "hostNetwork": true,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": LIFETIME_SECONDS,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "shell",
                "image": image,
                "command": ["sleep", LIFETIME_SECONDS.to_string()],
                "securityContext": {"privileged": true},
            }],
        },
    });
    serde_json::from_value(pod).map_err(|e| ClusterError::Create {
        step: "node shell pod",
        source: e.into(),
    })
}

/// Why a command in a shell failed.
#[derive(Debug, thiserror::Error)]
enum ShellError {
    #[error("exec through the API server: {0}")]
    Attach(#[source] kube::Error),
    #[error("reading its output: {0}")]
    Read(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{status}: {stderr}")]
    Failed { status: String, stderr: String },
}

/// Runs `argv` in the shell pod `name`; its stdout when it exits 0.
async fn run(pods: &Api<Pod>, name: &str, argv: &[String]) -> Result<String, ShellError> {
    let params = AttachParams::default().stdin(false).stdout(true).stderr(true);
    let work = async {
        let mut process = pods.exec(name, argv, &params).await.map_err(ShellError::Attach)?;
        let stdout = process.stdout();
        let stderr = process.stderr();
        let status = process.take_status();
        let (out, err) = tokio::join!(read_bounded(stdout), read_bounded(stderr));
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let _ = process.join().await;
        let (out, err) = (out.map_err(ShellError::Read)?, err.map_err(ShellError::Read)?);
        match status {
            Some(s) if s.status.as_deref() != Some("Success") => Err(ShellError::Failed {
                status: s.message.unwrap_or_else(|| "failed".into()),
                stderr: err.trim().to_string(),
            }),
            _ => Ok(out),
        }
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| ShellError::Timeout(COMMAND_TIMEOUT))?
}

/// All of `stream` (up to [`OUTPUT_LIMIT`]) as text; nothing without one.
async fn read_bounded(stream: Option<impl AsyncRead + Unpin>) -> Result<String, std::io::Error> {
    let Some(stream) = stream else {
        return Ok(String::new());
    };
    let mut bytes = Vec::new();
    stream.take(OUTPUT_LIMIT).read_to_end(&mut bytes).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_enter_the_nodes_namespaces() {
        assert_eq!(
            on_node(&["crictl", "pods", "-q"]).join(" "),
            "nsenter --target 1 --mount --uts --ipc --net -- crictl pods -q"
        );
    }

    #[test]
    fn the_shell_pod() {
        let pod = shell_pod("worker-2", "mirror.example/debian:bookworm-slim").unwrap();
        insta::assert_snapshot!(serde_yaml::to_string(&pod).unwrap());
    }
}
