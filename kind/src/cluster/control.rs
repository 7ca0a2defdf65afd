//! The control socket of a cluster started by `istio-cni-cluster up`: the
//! `node add|remove|list` commands reach the running cluster through it.
//!
//! The `up` process owns the cluster (its namespaces, kubelets, API server),
//! so only it can add a node; it listens on a Unix socket in its state
//! directory (per user, mode 0600). A request is one JSON line, the answer
//! one JSON line; both are bounded, and a client that stalls is dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as K8sNode;
use kube::api::Api;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::node::{NodeSpec, NodeTaint};

/// The largest request or answer line.
const MAX_LINE: u64 = 1 << 20;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command may take (a removal waits for the node's pods).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Request {
    /// Add a node (`name`: the next free `node-N` when absent).
    Add {
        name: Option<String>,
        /// `key=value:Effect` each.
        taints: Vec<String>,
        labels: BTreeMap<String, String>,
    },
    /// Remove a node.
    Remove { name: String },
    /// The nodes.
    List,
}

/// One node as `node list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub name: String,
    /// The `Ready` condition's status (`True`, `False`, `Unknown`), with
    /// `,SchedulingDisabled` when cordoned, as kubectl shows it.
    pub status: String,
    pub internal_ip: String,
    pub pod_cidr: String,
    pub taints: Vec<String>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    /// Done; the nodes after it.
    Nodes(Vec<NodeRow>),
    /// Refused or failed, saying why.
    Error(String),
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no cluster is listening on {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the cluster on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster on {path} answered something unreadable: {source}")]
    Answer {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Sends `request` to the cluster listening on `socket`.
pub fn call(socket: &Path, request: &Request) -> Result<Answer, ControlError> {
    let path = socket.display().to_string();
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect {
        path: path.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|source| ControlError::Answer {
        path: path.clone(),
        source,
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut answer)
        .map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ControlError::Answer { path, source })
}

/// Binds the socket (replacing a stale one), readable by this user only.
pub fn listen(socket: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers requests on `listener` one at a time until `stop` is set (the
/// owner then connects once to wake it).
pub fn serve(listener: &UnixListener, cluster: &Cluster, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let mut line = String::new();
        let read = stream
            .try_clone()
            .and_then(|s| BufReader::new(s.take(MAX_LINE)).read_line(&mut line));
        let answer = match read {
            Err(e) => Answer::Error(format!("reading the request: {e}")),
            Ok(_) => match serde_json::from_str::<Request>(&line) {
                Ok(request) => handle(cluster, request),
                Err(e) => Answer::Error(format!("unreadable request: {e}")),
            },
        };
        if let Ok(mut text) = serde_json::to_string(&answer) {
            text.push('\n');
            let _ = stream.write_all(text.as_bytes());
        }
    }
}

/// Carries out one request.
pub fn handle(cluster: &Cluster, request: Request) -> Answer {
    let done = match request {
        Request::Add { name, taints, labels } => add(cluster, name, &taints, labels),
        Request::Remove { name } => cluster.remove_node(&name).map_err(|e| e.to_string()),
        Request::List => Ok(()),
    };
    match done.and_then(|()| rows(cluster)) {
        Ok(rows) => Answer::Nodes(rows),
        Err(e) => Answer::Error(e),
    }
}

fn add(
    cluster: &Cluster,
    name: Option<String>,
    taints: &[String],
    labels: BTreeMap<String, String>,
) -> Result<(), String> {
    let local = cluster.local().map_err(|e| e.to_string())?;
    let name = match name {
        Some(name) => name,
        None => (0..)
            .map(|i| format!("node-{i}"))
            .find(|n| local.node(n).is_none())
            .unwrap_or_default(),
    };
    let taints = taints
        .iter()
        .map(|t| t.parse::<NodeTaint>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let spec = NodeSpec {
        taints,
        labels,
        ..NodeSpec::new(name).layout(local.node_layout())
    };
    cluster.add_node(spec).map_err(|e| e.to_string())
}

fn rows(cluster: &Cluster) -> Result<Vec<NodeRow>, String> {
    let local = cluster.local().map_err(|e| e.to_string())?;
    let api: Api<K8sNode> = Api::all(cluster.client());
    let objects = cluster
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), api.list(&Default::default())).await })
        .map_err(|_| "listing nodes: timed out".to_string())?
        .map_err(|e| format!("listing nodes: {e}"))?;
    let rows = local
        .nodes()
        .iter()
        .map(|node| {
            let object = objects
                .items
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(node.name()));
            let spec = object.and_then(|o| o.spec.as_ref());
            let ready = object
                .and_then(|o| o.status.as_ref()?.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .map_or("Unknown", |c| c.status.as_str());
            let mut status = match ready {
                "True" => "Ready".to_string(),
                "False" => "NotReady".to_string(),
                _ => "NotReady(Unknown)".to_string(),
            };
            if spec.and_then(|s| s.unschedulable) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let taints = spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .map(|t| match t.value.as_deref() {
                    Some(v) if !v.is_empty() => format!("{}={v}:{}", t.key, t.effect),
                    _ => format!("{}:{}", t.key, t.effect),
                })
                .collect();
            NodeRow {
                name: node.name().to_string(),
                status,
                internal_ip: node.ip().to_string(),
                pod_cidr: node.pod_cidr().to_string(),
                taints,
            }
        })
        .collect();
    Ok(rows)
}
