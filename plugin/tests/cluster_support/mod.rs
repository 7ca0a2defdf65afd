//! The embedded cluster the plugin's cluster tests share: one node whose
//! primary conflist chains this build's `istio-cni` (debug logs,
//! kube-system excluded), reaching the API with the admin token.
#![allow(dead_code)]

use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use serde_json::json;
use testkit::workspace_bin;

/// Istio's images as this workspace's binaries.
pub fn images() -> ImageTable {
    ImageTable::istio(
        env!("CARGO_BIN_EXE_istio-cni"),
        workspace_bin("mesh-probe", "istio-cni-kind"),
    )
}

/// A 1-node cluster with `istio-cni` appended to the primary conflist.
pub fn cluster_with_istio_cni() -> Cluster {
    let cluster = Cluster::create(ClusterSpec {
        images: images(),
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        ..ClusterSpec::default()
    })
    .unwrap();
    let local = cluster.local().unwrap();
    let node = &local.nodes()[0];
    testkit::place_exe(
        env!("CARGO_BIN_EXE_istio-cni").as_ref(),
        &node.bin_dir().join("istio-cni"),
    )
    .unwrap();
    let run_dir = node.istio_run_dir();
    std::fs::create_dir_all(&run_dir).unwrap();
    let kubeconfig = local.node_kubeconfig(&local.api().admin_token());
    std::fs::write(run_dir.join("istio-cni-kubeconfig"), kubeconfig).unwrap();
    let conf = std::fs::read_dir(node.conf_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&conf).unwrap()).unwrap();
    list["plugins"].as_array_mut().unwrap().push(json!({
        "type": "istio-cni", "name": "istio-cni", "plugin_log_level": "debug",
        "cni_agent_run_dir": run_dir, "exclude_namespaces": ["kube-system"], "pod_namespace": "istio-system",
    }));
    std::fs::write(&conf, serde_json::to_string_pretty(&list).unwrap()).unwrap();
    cluster
}
