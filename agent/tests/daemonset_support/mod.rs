//! The agent deployed as its DaemonSet on the embedded cluster, for the
//! opt-in feature tests: the cluster with the agent's image directory and
//! Istio's images, `istio-cni-agent manifest --set ... | kubectl apply`, the
//! rollout, removal, and the nodes' CNI files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use istio_cni_kind::node::Node;
use testkit::{Kubectl, Need, Scratch};

pub const NS: &str = "istio-system";

/// A cluster of `nodes` nodes whose images run the agent (from its image
/// directory under `images`), the plugin, and Istio's proxy and sample app.
pub fn cluster(images: &Scratch, nodes: u32) -> Cluster {
    let plugin = testkit::workspace_bin("istio-cni", "istio-cni");
    let mesh_probe = testkit::workspace_bin("mesh-probe", "istio-cni-kind");
    agent_cluster(images, nodes, ImageTable::istio(plugin, mesh_probe))
}

/// A cluster of `nodes` nodes with `table`'s images and the agent's (its
/// image directory under `images`).
pub fn agent_cluster(images: &Scratch, nodes: u32, table: ImageTable) -> Cluster {
    let plugin = testkit::workspace_bin("istio-cni", "istio-cni");
    let table = table
        .with_agent_dir(
            &images.join("agent"),
            Path::new(env!("CARGO_BIN_EXE_istio-cni-agent")),
            &plugin,
        )
        .expect("laying out the agent image");
    Cluster::create(ClusterSpec {
        nodes,
        profile: Profile::Ptp,
        images: table,
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        },
        ..ClusterSpec::default()
    })
    .expect("creating the cluster")
}

/// A test's cluster with its kubectl; the scratch dir holds the agent's
/// image and kubectl's cache, so it goes last.
pub struct Setup {
    pub kubectl: Kubectl,
    pub cluster: Cluster,
    pub scratch: Scratch,
}

/// Gates `test` on root, the CNI plugins and kubectl, then makes the scratch
/// dir `label`, the cluster `make` builds on it, and its kubectl; `None`
/// after the skip.
pub fn setup(test: &str, label: &str, make: impl FnOnce(&Scratch) -> Cluster) -> Option<Setup> {
    let gated = testkit::gate(test, &[Need::Root, Need::CniPlugins])
        && (testkit::kubectl_path().is_some()
            || testkit::skip(test, "kubectl not found in PATH (ci/setup installs it)"));
    if !gated {
        return None;
    }
    let scratch = Scratch::new(label);
    let cluster = make(&scratch);
    let kubectl = Kubectl::new(test, cluster.kubeconfig_path(), &scratch).expect("kubectl (gated)");
    Some(Setup {
        kubectl,
        cluster,
        scratch,
    })
}

/// `istio-cni-agent manifest --set <each>`.
pub fn manifest(sets: &[&str]) -> Vec<u8> {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_istio-cni-agent"));
    cmd.arg("manifest");
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("istio-cni-agent manifest");
    assert!(
        out.status.success(),
        "manifest {sets:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Applies the manifest for `sets` (creating the namespace once).
pub fn apply(kubectl: &Kubectl, sets: &[&str]) {
    let _ = kubectl.run(&["create", "namespace", NS]);
    kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&manifest(sets)))
        .ok();
}

/// Waits for the DaemonSet's rollout to finish.
pub fn rollout(kubectl: &Kubectl) {
    kubectl.ok(&["-n", NS, "rollout", "status", "ds/istio-cni-node", "--timeout=180s"]);
}

/// Deletes the DaemonSet (its pods run the agent's SIGTERM path) and waits
/// for every agent pod to be gone.
pub fn delete_daemonset(kubectl: &Kubectl) {
    kubectl.ok(&["-n", NS, "delete", "ds", "istio-cni-node", "--wait", "--timeout=120s"]);
    agents_gone(kubectl);
}

/// Waits for every agent pod to be gone.
pub fn agents_gone(kubectl: &Kubectl) {
    kubectl.ok(&[
        "-n",
        NS,
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "k8s-app=istio-cni-node",
        "--timeout=120s",
    ]);
}

/// `kubectl get pods` of the agent pods (and `more` arguments): `output`.
fn get_agents(kubectl: &Kubectl, more: &[&str], output: &str) -> String {
    let mut args = vec!["-n", NS, "get", "pods", "-l", "k8s-app=istio-cni-node"];
    args.extend_from_slice(more);
    args.extend(["-o", output]);
    kubectl.ok(&args)
}

/// The agent pod on `node`.
pub fn agent_pod(kubectl: &Kubectl, node: &str) -> String {
    let name = get_agents(
        kubectl,
        &["--field-selector", &format!("spec.nodeName={node}")],
        "jsonpath={.items[0].metadata.name}",
    );
    assert!(!name.is_empty(), "no agent pod on {node}");
    name
}

/// The pods' Ready condition, for [`agents`].
pub const READY: &str = r#"{.status.conditions[?(@.type=="Ready")].status}"#;

/// One line per agent pod, sorted: `fields` (a JSONPath template over the
/// pod, e.g. `{.spec.nodeName} READY`).
pub fn agents(kubectl: &Kubectl, fields: &str) -> Vec<String> {
    let out = get_agents(
        kubectl,
        &[],
        &format!("jsonpath={{range .items[*]}}{fields}{{\"\\n\"}}{{end}}"),
    );
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    lines.sort();
    lines
}

/// Per node: its CNI config files (name → bytes) and the names in its plugin dir.
pub type NodeFiles = BTreeMap<String, (BTreeMap<String, Vec<u8>>, Vec<String>)>;

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

/// Every node's CNI files now.
pub fn node_files(cluster: &Cluster) -> NodeFiles {
    per_node(cluster, |node| {
        let conf = sorted_entries(&node.conf_dir())
            .into_iter()
            .filter(|(_, p)| p.is_file())
            .map(|(name, p)| (name, std::fs::read(p).unwrap_or_default()))
            .collect();
        let bin = sorted_entries(&node.bin_dir())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        (conf, bin)
    })
}

/// Each node's primary `.conflist` (the file the agent chains into).
pub fn conflists(cluster: &Cluster) -> Vec<(String, PathBuf)> {
    per_node(cluster, |node| {
        sorted_entries(&node.conf_dir())
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| p.extension().is_some_and(|e| e == "conflist"))
            .unwrap_or_else(|| panic!("{}: no .conflist", node.name()))
    })
}

/// `f` of each node of the (local) cluster, with the node's name.
fn per_node<T, C: FromIterator<(String, T)>>(cluster: &Cluster, f: impl Fn(&Node) -> T) -> C {
    let local = cluster.local().expect("a local cluster");
    local
        .nodes()
        .iter()
        .map(|node| (node.name().to_string(), f(node)))
        .collect()
}

/// Whether `bytes` are a conflist with an `istio-cni` plugin entry.
pub fn has_entry(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| {
        v["plugins"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["type"] == "istio-cni"))
    })
}
