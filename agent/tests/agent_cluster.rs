//! The agent as a node process in the embedded cluster, end to end: a meshed
//! pod that raced the agent (validation fails with 126, no rules) is
//! repaired in place once the agent starts; a pod created afterwards gets its
//! rules from the installed plugin on the first try; SIGTERM restores the
//! node's CNI config byte for byte.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{Agent, has_istio_entry, wait_for};
use testkit::pods::{app_restarts, running, validation_exits};
use testkit::{Need, gate, workspace_bin};

fn injected_pod(name: &str) -> Pod {
    let mut pod: Pod = serde_yaml::from_str(testkit::fixtures::INJECTED_CLASSIC).unwrap();
    pod.metadata.name = Some(name.into());
    pod
}

/// The agent's service account with the plugin's and repairPods' rights only.
fn agent_identity(cluster: &Cluster) -> String {
    let client = cluster.client();
    let _ = cluster.block_on(Api::<Namespace>::all(client.clone()).create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).unwrap(),
    ));
    cluster
        .block_on(
            Api::<ServiceAccount>::namespaced(client.clone(), "istio-system").create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "istio-cni"}})).unwrap(),
            ),
        )
        .unwrap();
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "istio-cni"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "nodes", "namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
        ]
    }))
    .unwrap();
    cluster
        .block_on(Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role))
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "istio-cni"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-cni"},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-cni", "namespace": "istio-system"}]
    }))
    .unwrap();
    cluster
        .block_on(Api::<ClusterRoleBinding>::all(client).create(&PostParams::default(), &binding))
        .unwrap();
    cluster.local().unwrap().api().mint_token("istio-system", "istio-cni")
}

/// `(host, port)` of the API server as node processes reach it.
fn api_host_port(cluster: &Cluster) -> (String, String) {
    let kubeconfig = cluster.local().unwrap().node_kubeconfig("x");
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    let (host, port) = server.rsplit_once(':').unwrap();
    (host.to_string(), port.to_string())
}

#[test]
fn the_agent_installs_repairs_a_racing_pod_and_cleans_up() {
    if !gate("the_agent_installs_repairs_a_racing_pod_and_cleans_up", &[Need::Root]) {
        return;
    }
    let istio_cni = workspace_bin("istio-cni", "istio-cni");
    let mesh_probe = workspace_bin("mesh-probe", "istio-cni-kind");
    let cluster = Cluster::create(ClusterSpec {
        images: ImageTable::istio(istio_cni.clone(), mesh_probe),
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(800),
        },
        ..ClusterSpec::default()
    })
    .unwrap();
    let node = &cluster.local().unwrap().nodes()[0];
    let primary = std::fs::read_dir(node.conf_dir())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = std::fs::read(&primary).unwrap();

    // The race: a meshed pod starts before the agent; validation fails with 126.
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(pods.create(&PostParams::default(), &injected_pod("early")))
        .unwrap();
    cluster
        .wait_for_pod("default", "early", Duration::from_secs(30), |p| {
            validation_exits(p).1 == Some(126)
        })
        .expect("istio-validation fails with 126 while the plugin is not installed");

    // The agent's image: its source dir holds istio-cni; a projected SA volume.
    let token = agent_identity(&cluster);
    let image = node.root().join("agent-image");
    let sa_dir = image.join("sa");
    std::fs::create_dir_all(image.join("bin")).unwrap();
    std::fs::create_dir_all(&sa_dir).unwrap();
    std::fs::copy(&istio_cni, image.join("bin/istio-cni")).unwrap();
    std::fs::write(sa_dir.join("token"), &token).unwrap();
    std::fs::write(sa_dir.join("ca.crt"), cluster.local().unwrap().api().ca_pem()).unwrap();
    let (host, port) = api_host_port(&cluster);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let env: Vec<(String, String)> = [
        ("MOUNTED_CNI_NET_DIR", s(&node.conf_dir())),
        ("CNI_BIN_DIR", s(&node.bin_dir())),
        ("CNI_BIN_SOURCE_DIR", s(&image.join("bin"))),
        ("CNI_AGENT_RUN_DIR", s(&node.istio_run_dir())),
        ("SERVICE_ACCOUNT_DIR", s(&sa_dir)),
        ("KUBERNETES_SERVICE_HOST", host),
        ("KUBERNETES_SERVICE_PORT", port),
        ("EXCLUDE_NAMESPACES", "kube-system".into()),
        ("POD_NAMESPACE", "istio-system".into()),
        ("REPAIR_ENABLED", "true".into()),
        ("REPAIR_REPAIR_PODS", "true".into()),
        ("REPAIR_NODE_NAME", node.name().into()),
        ("REPAIR_HOST_PROC", "/proc".into()),
        ("LOG_OUTPUT_LEVEL", "debug".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let started = Instant::now();
    let agent = Agent::start_with(node.command(env!("CARGO_BIN_EXE_istio-cni-agent")), &env);

    wait_for(Duration::from_secs(10), || has_istio_entry(&primary)).expect("the agent inserts istio-cni");
    assert!(node.bin_dir().join("istio-cni").exists());
    assert!(node.istio_run_dir().join("istio-cni-kubeconfig").exists());

    // Repaired in place: validation passes on its next try, the app never restarted.
    let early = cluster
        .wait_for_pod("default", "early", Duration::from_secs(30), running)
        .expect("the racing pod is repaired and Running");
    eprintln!("racing pod Running {:?} after the agent started", started.elapsed());
    assert_eq!(validation_exits(&early).0, Some(0));
    let statuses = early.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    assert!(statuses.is_some(), "a Running pod reports its containers: {early:?}");
    assert_eq!(app_restarts(&early), 0, "the app container never restarted");
    let save = cluster
        .in_pod("default", "early", &["iptables-nft-save"])
        .unwrap_or_default()
        + &cluster
            .in_pod("default", "early", &["iptables-legacy-save"])
            .unwrap_or_default();
    assert!(
        save.contains("-A ISTIO_OUTPUT"),
        "rules programmed in the pod netns:\n{save}"
    );

    // A pod created now gets rules from the plugin on the first try.
    cluster
        .block_on(pods.create(&PostParams::default(), &injected_pod("late")))
        .unwrap();
    let late = cluster
        .wait_for_pod("default", "late", Duration::from_secs(30), running)
        .expect("a pod created after install starts");
    assert_eq!(
        validation_exits(&late),
        (Some(0), None, 0),
        "validation passed the first time"
    );

    // SIGTERM: the node's CNI config is back to the primary's bytes.
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(
        std::fs::read(&primary).unwrap(),
        original,
        "primary config restored byte for byte"
    );
    assert!(!node.bin_dir().join("istio-cni").exists());
    assert!(!node.istio_run_dir().join("istio-cni-kubeconfig").exists());
    cluster.delete().unwrap();
}
