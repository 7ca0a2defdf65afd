//! `istio-cni` in the embedded cluster, installed in the node's CNI chain the
//! way the node agent installs it: a realistic injected pod starts, its
//! `istio-validation` init container passes because the rules are there, and
//! its netns holds exactly the rules `istio-cni render` prints; unmeshed and
//! excluded-namespace pods get no rules; bad annotations and a missing API
//! fail the sandbox with a readable event, while excluded namespaces still
//! start without any kubeconfig.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod cluster_support;

use std::time::Duration;

use cluster_support::cluster_with_istio_cni;
use istio_cni::capture::NodeEnv;
use istio_cni::cli::{Backend, RenderOptions, render_manifest};
use istio_cni_kind::apiserver::FaultMatch;
use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use testkit::fixtures::{INJECTED_CLASSIC, INJECTED_NATIVE};
use testkit::pods::{phase, running};
use testkit::{Need, gate};

fn create(cluster: &Cluster, ns: &str, pod: Pod) {
    let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
    cluster.block_on(api.create(&PostParams::default(), &pod)).unwrap();
}

/// The `-A` rules of one table, chain by chain, in order, without the
/// implicit `-m tcp`/`-m udp` that `iptables-save` adds.
fn rules_by_chain(text: &str, table: &str) -> Vec<(String, Vec<String>)> {
    testkit::iptables::rules_by_chain(text, table)
        .into_iter()
        .map(|(chain, rules)| {
            let rules = rules
                .iter()
                .map(|r| canonical(&r.replace(" -m tcp", "").replace(" -m udp", "")))
                .collect();
            (chain, rules)
        })
        .collect()
}

/// A rule's words (after its chain) in `iptables-save` order: `-s -d -i -o -p`
/// (each with its `!`), then the remaining matches and the target as written.
fn canonical(rule: &str) -> String {
    let words: Vec<&str> = rule.split(' ').collect();
    let mut base: Vec<(usize, String)> = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let negated = words[i] == "!" && i + 2 < words.len() && ["-s", "-d", "-i", "-o", "-p"].contains(&words[i + 1]);
        let at = if negated { i + 1 } else { i };
        match ["-s", "-d", "-i", "-o", "-p"].iter().position(|o| *o == words[at]) {
            Some(rank) if at + 1 < words.len() => {
                let bang = if negated { "! " } else { "" };
                base.push((rank, format!("{bang}{} {}", words[at], words[at + 1])));
                i = at + 2;
            }
            _ => {
                rest.push(words[i]);
                i += 1;
            }
        }
    }
    base.sort_by_key(|(rank, _)| *rank);
    let mut out: Vec<String> = base.into_iter().map(|(_, w)| w).collect();
    out.extend(rest.into_iter().map(str::to_string));
    out.join(" ")
}

fn sandbox_events(cluster: &Cluster, ns: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.client(), ns);
    let events = cluster.block_on(api.list(&ListParams::default())).unwrap();
    events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
        .filter_map(|e| e.message)
        .collect()
}

/// Runs `body` on a fresh cluster with `istio-cni` installed and deletes it
/// afterwards; skips `test` when not root.
fn with_cluster(test: &str, body: impl FnOnce(&Cluster)) {
    if !gate(test, &[Need::Root]) {
        return;
    }
    let cluster = cluster_with_istio_cni();
    body(&cluster);
    cluster.delete().unwrap();
}

/// Waits up to `timeout` for the first sandbox failures in `ns`, then
/// asserts one names the pod `ns/name` and `cause`.
fn assert_sandbox_failed(cluster: &Cluster, ns: &str, name: &str, cause: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while sandbox_events(cluster, ns).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = sandbox_events(cluster, ns);
    let pod = format!("pod {ns}/{name}");
    assert!(
        events.iter().any(|m| m.contains(&pod) && m.contains(cause)),
        "{events:?}"
    );
}

/// Asserts the pod's netns holds the nat rules `istio-cni render` prints
/// for `manifest`.
fn assert_rules_as_rendered(cluster: &Cluster, ns: &str, name: &str, manifest: &str) {
    let save = cluster.in_pod(ns, name, &["iptables-nft-save"]).unwrap();
    let opts = RenderOptions {
        ipv6: false,
        backend: Backend::Iptables,
        node: NodeEnv::default(),
    };
    let rendered = render_manifest(manifest, &opts).unwrap();
    assert_eq!(
        rules_by_chain(&save, "nat"),
        rules_by_chain(&rendered, "nat"),
        "{ns}/{name} iptables-save:\n{save}"
    );
}

#[test]
fn an_injected_pod_is_programmed_and_its_validation_passes() {
    with_cluster("an_injected_pod_is_programmed", |cluster| {
        let manifest = INJECTED_CLASSIC.to_owned();
        create(cluster, "default", serde_yaml::from_str(&manifest).unwrap());
        let pod = cluster
            .wait_for_pod("default", "hello", Duration::from_secs(30), running)
            .unwrap_or_else(|e| panic!("{e}\nsandbox events: {:?}", sandbox_events(cluster, "default")));
        let status = pod.status.unwrap();
        let validation = &status.init_container_statuses.unwrap()[0];
        assert_eq!(validation.name, "istio-validation");
        let done = validation.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (done.exit_code, validation.restart_count),
            (0, 0),
            "validation passed the first time"
        );
        let log = cluster
            .pod_logs("default", "hello", "istio-validation")
            .unwrap_or_default();
        assert!(log.contains("Validation passed"), "{log}");

        assert_rules_as_rendered(cluster, "default", "hello", &manifest);
    });
}

#[test]
fn unmeshed_and_excluded_pods_get_no_rules() {
    with_cluster("unmeshed_and_excluded_pods_get_no_rules", |cluster| {
        let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "plain"}, "spec": {"containers": [
            {"name": "app", "image": "mesh-probe", "args": ["echo", "--port", "80"]}]}}))
        .unwrap();
        create(cluster, "default", plain);
        // A meshed-looking pod in an excluded namespace.
        let mut excluded: Pod = serde_yaml::from_str(INJECTED_CLASSIC).unwrap();
        excluded.metadata.namespace = Some("kube-system".into());
        excluded.spec.as_mut().unwrap().init_containers = None;
        create(cluster, "kube-system", excluded);
        for (ns, name) in [("default", "plain"), ("kube-system", "hello")] {
            cluster
                .wait_for_pod(ns, name, Duration::from_secs(30), running)
                .unwrap();
            let save = cluster.in_pod(ns, name, &["iptables-nft-save"]).unwrap();
            assert!(!save.contains("ISTIO"), "{ns}/{name} has rules:\n{save}");
        }
    });
}

#[test]
fn bad_annotations_and_a_missing_api_fail_closed_with_events() {
    with_cluster("bad_annotations_fail_closed", |cluster| {
        let bad = INJECTED_CLASSIC.replace(
            "    traffic.sidecar.istio.io/excludeInboundPorts: \"15020\"",
            "    traffic.sidecar.istio.io/excludeInboundPorts: \"15020\"\n    traffic.sidecar.istio.io/excludeOutboundPorts: \"*\"",
        );
        create(cluster, "default", serde_yaml::from_str(&bad).unwrap());
        assert_sandbox_failed(
            cluster,
            "default",
            "hello",
            "excludeOutboundPorts",
            Duration::from_secs(20),
        );

        // Without the kubeconfig, meshed pods fail; excluded namespaces start.
        let run_dir = cluster.local().unwrap().nodes()[0].istio_run_dir();
        std::fs::remove_file(run_dir.join("istio-cni-kubeconfig")).unwrap();
        let plain: Pod = serde_json::from_value(json!({"metadata": {"name": "dns"}, "spec": {"containers": [
            {"name": "dns", "image": "mesh-probe", "args": ["echo", "--port", "53"]}]}}))
        .unwrap();
        create(cluster, "kube-system", plain);
        cluster
            .wait_for_pod("kube-system", "dns", Duration::from_secs(30), running)
            .unwrap();
    });
}

/// The injected classic pod without its validation init container (a
/// skipped pod gets no rules, so validation would rightly fail), edited.
fn skipped_variant(name: &str, edit: impl Fn(&mut serde_json::Value)) -> Pod {
    let mut pod: serde_json::Value = serde_yaml::from_str(INJECTED_CLASSIC).unwrap();
    pod["metadata"]["name"] = json!(name);
    pod["spec"].as_object_mut().unwrap().remove("initContainers");
    edit(&mut pod);
    serde_json::from_value(pod).unwrap()
}

#[test]
fn every_skip_reason_leaves_the_pod_alone_and_native_sidecars_are_programmed() {
    with_cluster("every_skip_reason", |cluster| {
        let proxy = |pod: &mut serde_json::Value| -> usize {
            pod["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .position(|c| c["name"] == "istio-proxy")
                .unwrap()
        };
        let skipped = [
            skipped_variant("inject-label-false", |p| {
                p["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")
            }),
            skipped_variant("inject-annotation-false", |p| {
                p["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false")
            }),
            skipped_variant("disable-envoy", |p| {
                let i = proxy(p);
                p["spec"]["containers"][i]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "DISABLE_ENVOY", "value": "true"}));
            }),
            skipped_variant("gateway", |p| {
                let i = proxy(p);
                p["spec"]["containers"][i]["args"] = json!(["proxy", "router"]);
            }),
            skipped_variant("has-istio-init", |p| {
                p["spec"]["initContainers"] =
                    json!([{"name": "istio-init", "image": "shell", "args": ["-c", "exit 0"]}]);
            }),
            skipped_variant("not-injected", |p| {
                p["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("sidecar.istio.io/status");
            }),
            skipped_variant("interception-none", |p| {
                p["metadata"]["annotations"]["sidecar.istio.io/interceptionMode"] = json!("NONE")
            }),
        ];
        for pod in skipped {
            create(cluster, "default", pod);
        }
        let manifest = INJECTED_NATIVE.to_owned();
        create(cluster, "default", serde_yaml::from_str(&manifest).unwrap());

        for name in [
            "inject-label-false",
            "inject-annotation-false",
            "disable-envoy",
            "gateway",
            "has-istio-init",
            "not-injected",
            "interception-none",
        ] {
            cluster
                .wait_for_pod("default", name, Duration::from_secs(30), running)
                .unwrap_or_else(|e| panic!("{e}\nsandbox events: {:?}", sandbox_events(cluster, "default")));
            let save = cluster.in_pod("default", name, &["iptables-nft-save"]).unwrap();
            assert!(!save.contains("ISTIO"), "{name} was programmed:\n{save}");
        }
        let native = cluster
            .wait_for_pod("default", "hello-native", Duration::from_secs(30), running)
            .unwrap_or_else(|e| panic!("{e}\nsandbox events: {:?}", sandbox_events(cluster, "default")));
        let inits = native.status.unwrap().init_container_statuses.unwrap();
        let validation = inits.iter().find(|c| c.name == "istio-validation").unwrap();
        assert_eq!(
            validation
                .state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            0
        );
        assert!(
            inits
                .iter()
                .any(|c| c.name == "istio-proxy" && c.state.as_ref().unwrap().running.is_some())
        );
        assert_rules_as_rendered(cluster, "default", "hello-native", &manifest);
    });
}

#[test]
fn a_meshed_pod_fails_closed_while_the_api_fails() {
    with_cluster("a_meshed_pod_fails_closed", |cluster| {
        // Only the plugin GETs pods by name (kubelet lists and watches).
        let faults = cluster.local().unwrap().api().faults();
        faults.inject_errors_forever(FaultMatch::any().verb("get").resource("pods").name("hello"), 503);
        create(cluster, "default", serde_yaml::from_str(INJECTED_CLASSIC).unwrap());
        assert_sandbox_failed(
            cluster,
            "default",
            "hello",
            "cannot read it from the Kubernetes API",
            Duration::from_secs(30),
        );
        let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
        // (A list: GETs of this pod are what fails.)
        let pods = cluster.block_on(api.list(&ListParams::default())).unwrap();
        let pod = pods
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("hello"))
            .unwrap();
        assert_eq!(phase(pod), "Pending", "no sandbox while the API fails");
        // When the API recovers, the retried sandbox succeeds.
        faults.clear();
        cluster
            .wait_for_pod("default", "hello", Duration::from_secs(40), running)
            .unwrap();
    });
}
