//! The kubelet's side of node lifecycle: registering the Node object (with
//! `--register-with-taints` and `--node-labels`), posting `Ready`, and the
//! heartbeat: renewing the node's Lease in `kube-node-lease` every
//! [`Heartbeat::interval`], and posting `Ready=True` again when the node
//! lifecycle controller marked it `Unknown` while the kubelet was silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::controllers::node_lifecycle::LEASE_NAMESPACE;
use crate::node::NodeTaint;

/// Every API call of the heartbeat is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Heartbeat timing: the kubelet's renewal and the controller's patience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often the kubelet renews its Lease (kubelet: 10 s, a quarter of
    /// the lease duration).
    pub interval: Duration,
    /// How long a node may stay silent before it is `Unknown`
    /// (kube-controller-manager's `--node-monitor-grace-period`; 40 s).
    pub grace: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(10),
            grace: Duration::from_secs(40),
        }
    }
}

/// What a kubelet registers its node with.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    /// Its address on the cluster network.
    pub ip: String,
    pub pod_cidrs: Vec<String>,
    pub taints: Vec<NodeTaint>,
    pub labels: std::collections::BTreeMap<String, String>,
}

fn api_error(what: &'static str) -> impl Fn(tokio::time::error::Elapsed) -> kube::Error {
    move |_| kube::Error::Service(format!("{what}: timed out").into())
}

fn now_micro() -> Value {
    serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or(Value::Null)
}

fn ready_status(ip: &str, name: &str) -> Value {
    let now = Timestamp::now().to_string();
    json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet-lite is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": "v1.33.0", "containerRuntimeVersion": "istio-cni-kind://0.1", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH, "kernelVersion": "", "osImage": "", "kubeProxyVersion": "", "machineID": "",
            "systemUUID": "", "bootID": ""},
    }})
}

/// Creates the Node object, posts it `Ready`, and takes its Lease.
pub async fn register(client: &kube::Client, reg: &Registration) -> Result<(), kube::Error> {
    let mut labels = reg.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), reg.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    let taints: Vec<_> = reg.taints.iter().map(NodeTaint::to_k8s).collect();
    let object: Node = serde_json::from_value(json!({
        "metadata": {"name": reg.name, "labels": labels},
        "spec": {"podCIDR": reg.pod_cidrs.first(), "podCIDRs": reg.pod_cidrs, "taints": taints},
    }))
    .map_err(kube::Error::SerdeError)?;
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::time::timeout(API_TIMEOUT, nodes.create(&PostParams::default(), &object))
        .await
        .map_err(api_error("registering the node"))??;
    post_ready(&nodes, reg).await?;
    renew(client, &reg.name).await
}

/// Renews (or creates) the node's Lease.
async fn renew(client: &kube::Client, node: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = json!({"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now_micro()});
    let patch = Patch::Merge(json!({ "spec": spec }));
    let patched = tokio::time::timeout(API_TIMEOUT, leases.patch(node, &PatchParams::default(), &patch))
        .await
        .map_err(api_error("renewing the lease"))?;
    match patched {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({"metadata": {"name": node}, "spec": spec}))
                .map_err(kube::Error::SerdeError)?;
            tokio::time::timeout(API_TIMEOUT, leases.create(&PostParams::default(), &lease))
                .await
                .map_err(api_error("creating the lease"))??;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Posts `Ready=True` when the node is not (the controller marked it while
/// the kubelet was silent).
async fn repost_ready(client: &kube::Client, reg: &Registration) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = tokio::time::timeout(API_TIMEOUT, nodes.get(&reg.name))
        .await
        .map_err(api_error("reading the node"))??;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        post_ready(&nodes, reg).await?;
    }
    Ok(())
}

/// Patches the node's status to Ready with its address.
async fn post_ready(nodes: &Api<Node>, reg: &Registration) -> Result<(), kube::Error> {
    let patch = Patch::Merge(ready_status(&reg.ip, &reg.name));
    tokio::time::timeout(
        API_TIMEOUT,
        nodes.patch_status(&reg.name, &PatchParams::default(), &patch),
    )
    .await
    .map_err(api_error("posting the node status"))??;
    Ok(())
}

/// Beats every `interval` until cancelled (dropped); skips beats while
/// `silenced` (a node cut off from the API server).
pub async fn run(client: kube::Client, reg: Registration, interval: Duration, silenced: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if silenced.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(e) = renew(&client, &reg.name).await {
            tracing::warn!(node = %reg.name, "heartbeat: {e}");
            continue;
        }
        if let Err(e) = repost_ready(&client, &reg).await {
            tracing::warn!(node = %reg.name, "heartbeat: {e}");
        }
    }
}
