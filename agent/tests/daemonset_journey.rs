//! The seed's story on the embedded cluster, with the real kubectl 1.33 and
//! helm 4: the agent deployed as its DaemonSet (`istio-cni-agent manifest |
//! kubectl apply -f -`, or `helm install` of `agent/chart`), one Ready pod per
//! node through its `/readyz` probe, the plugin in every node's CNI config;
//! then removed (`kubectl delete ds`, `helm uninstall`) and every node's CNI
//! files byte-identical to before: the agent's SIGTERM cleanup ran in its pod.
//! Needs root (or ci/test's user namespace).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use testkit::{Kubectl, Need, Scratch};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/chart");

fn cluster(images: &Scratch) -> Cluster {
    let plugin = testkit::workspace_bin("istio-cni", "istio-cni");
    let table = ImageTable::new()
        .with_agent_dir(
            &images.join("agent"),
            Path::new(env!("CARGO_BIN_EXE_istio-cni-agent")),
            &plugin,
        )
        .expect("laying out the agent image");
    Cluster::create(ClusterSpec {
        nodes: 2,
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

/// Per node: its CNI config files (name → bytes) and the names in its plugin dir.
type NodeFiles = BTreeMap<String, (BTreeMap<String, Vec<u8>>, Vec<String>)>;

/// Every node's CNI files now.
fn node_files(cluster: &Cluster) -> NodeFiles {
    let local = cluster.local().expect("a local cluster");
    let read_dir = |dir: PathBuf| -> Vec<(String, PathBuf)> {
        let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        entries
    };
    local
        .nodes()
        .iter()
        .map(|node| {
            let conf = read_dir(node.conf_dir())
                .into_iter()
                .filter(|(_, p)| p.is_file())
                .map(|(name, p)| (name, std::fs::read(p).unwrap_or_default()))
                .collect();
            let bin = read_dir(node.bin_dir()).into_iter().map(|(name, _)| name).collect();
            (node.name().to_string(), (conf, bin))
        })
        .collect()
}

fn every_node_has_the_plugin(cluster: &Cluster) {
    for (node, (conf, bin)) in node_files(cluster) {
        let chained = conf.iter().any(|(name, bytes)| {
            name.ends_with(".conflist") && String::from_utf8_lossy(bytes).contains("\"type\": \"istio-cni\"")
        });
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
    let out = kubectl.ok(&[
        "-n",
        "istio-system",
        "get",
        "pods",
        "-l",
        "k8s-app=istio-cni-node",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
    ]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["node-0 True", "node-1 True"], "{out}");
}

#[test]
fn the_agent_daemonset_from_its_manifest_installs_and_cleans_up() {
    if !testkit::gate(
        "the_agent_daemonset_from_its_manifest_installs_and_cleans_up",
        &[Need::Root, Need::CniPlugins],
    ) {
        return;
    }
    let scratch = Scratch::new("journey-manifest");
    let cluster = cluster(&scratch);
    let Some(kubectl) = Kubectl::new("journey-manifest", cluster.kubeconfig_path(), &scratch) else {
        return;
    };
    let before = node_files(&cluster);

    let manifest = std::process::Command::new(env!("CARGO_BIN_EXE_istio-cni-agent"))
        .arg("manifest")
        .output()
        .expect("istio-cni-agent manifest");
    assert!(manifest.status.success());
    kubectl.ok(&["create", "namespace", "istio-system"]);
    kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(&manifest.stdout))
        .ok();
    kubectl.ok(&[
        "-n",
        "istio-system",
        "rollout",
        "status",
        "ds/istio-cni-node",
        "--timeout=120s",
    ]);
    one_ready_agent_per_node(&kubectl);
    every_node_has_the_plugin(&cluster);

    kubectl.ok(&[
        "-n",
        "istio-system",
        "delete",
        "ds",
        "istio-cni-node",
        "--wait",
        "--timeout=120s",
    ]);
    kubectl.ok(&[
        "-n",
        "istio-system",
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "k8s-app=istio-cni-node",
        "--timeout=120s",
    ]);
    assert_eq!(
        node_files(&cluster),
        before,
        "the nodes' CNI files differ from before the install"
    );
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart() {
    if !testkit::gate(
        "helm_installs_upgrades_and_uninstalls_the_chart",
        &[Need::Root, Need::CniPlugins],
    ) {
        return;
    }
    let scratch = Scratch::new("journey-helm");
    let cluster = cluster(&scratch);
    let (Some(kubectl), Some(helm)) = (
        Kubectl::new("journey-helm", cluster.kubeconfig_path(), &scratch),
        Kubectl::helm("journey-helm", cluster.kubeconfig_path(), &scratch),
    ) else {
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
    kubectl.ok(&[
        "-n",
        "istio-system",
        "rollout",
        "status",
        "ds/istio-cni-node",
        "--timeout=120s",
    ]);
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
    kubectl.ok(&[
        "-n",
        "istio-system",
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "k8s-app=istio-cni-node",
        "--timeout=120s",
    ]);
    assert_eq!(
        node_files(&cluster),
        before,
        "the nodes' CNI files differ from before the install"
    );
}
