//! The seed's story on the embedded cluster, with the real kubectl 1.33 and
//! helm 4: the agent deployed as its DaemonSet (`istio-cni-agent manifest |
//! kubectl apply -f -`, or `helm install` of `agent/chart`), one Ready pod per
//! node through its `/readyz` probe, the plugin in every node's CNI config;
//! then removed (`kubectl delete ds`, `helm uninstall`) and every node's CNI
//! files byte-identical to before: the agent's SIGTERM cleanup ran in its pod.
//! Needs root (or ci/test's user namespace).

mod daemonset_support;

use daemonset_support::{
    READY, Setup, agent_cluster, agents, agents_gone, apply, delete_daemonset, has_entry, node_files, rollout, setup,
};
use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::kubelet::ImageTable;
use testkit::{Kubectl, Scratch};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/chart");

/// Two nodes whose only image is the agent's.
fn cluster(images: &Scratch) -> Cluster {
    agent_cluster(images, 2, ImageTable::new())
}

fn every_node_has_the_plugin(cluster: &Cluster) {
    for (node, (conf, bin)) in node_files(cluster) {
        let chained = conf
            .iter()
            .any(|(name, bytes)| name.ends_with(".conflist") && has_entry(bytes));
        assert!(
            chained,
            "{node}: no istio-cni entry in {:?}",
            conf.keys().collect::<Vec<_>>()
        );
        assert!(
            bin.iter().any(|b| b == "istio-cni"),
            "{node}: no istio-cni binary in {bin:?}"
        );
    }
}

/// One Ready agent pod per node, each on a different node.
fn one_ready_agent_per_node(kubectl: &Kubectl) {
    let lines = agents(kubectl, &format!("{{.spec.nodeName}} {READY}"));
    assert_eq!(lines, ["node-0 True", "node-1 True"]);
}

#[test]
fn the_agent_daemonset_from_its_manifest_installs_and_cleans_up() {
    let test = "the_agent_daemonset_from_its_manifest_installs_and_cleans_up";
    let Some(Setup {
        kubectl,
        cluster,
        scratch: _scratch,
    }) = setup(test, "journey-manifest", cluster)
    else {
        return;
    };
    let before = node_files(&cluster);

    apply(&kubectl, &[]);
    rollout(&kubectl);
    one_ready_agent_per_node(&kubectl);
    every_node_has_the_plugin(&cluster);

    delete_daemonset(&kubectl);
    assert_eq!(
        node_files(&cluster),
        before,
        "the nodes' CNI files differ from before the install"
    );
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let test = "helm_installs_upgrades_and_uninstalls_the_chart";
    let Some(Setup {
        kubectl,
        cluster,
        scratch,
    }) = setup(test, "journey-helm", cluster)
    else {
        return;
    };
    let Some(helm) = Kubectl::helm(test, cluster.kubeconfig_path(), &scratch) else {
        return;
    };
    let before = node_files(&cluster);

    helm.ok(&[
        "install",
        "istio-cni",
        CHART,
        "-n",
        "istio-system",
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
    ]);
    one_ready_agent_per_node(&kubectl);
    every_node_has_the_plugin(&cluster);

    // A repair-mode change rolls the DaemonSet; --wait returns once it is done.
    helm.ok(&[
        "upgrade",
        "istio-cni",
        CHART,
        "-n",
        "istio-system",
        "--set",
        "repair.repairPods=false",
        "--set",
        "repair.deletePods=true",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let mode = kubectl.ok(&[
        "-n",
        "istio-system",
        "get",
        "configmap",
        "istio-cni-config",
        "-o",
        "jsonpath={.data.REPAIR_DELETE_PODS}",
    ]);
    assert_eq!(mode, "true");
    rollout(&kubectl);
    one_ready_agent_per_node(&kubectl);
    every_node_has_the_plugin(&cluster);

    helm.ok(&[
        "uninstall",
        "istio-cni",
        "-n",
        "istio-system",
        "--wait",
        "--timeout",
        "3m",
    ]);
    agents_gone(&kubectl);
    assert_eq!(
        node_files(&cluster),
        before,
        "the nodes' CNI files differ from before the install"
    );
}
