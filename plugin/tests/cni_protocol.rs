//! `istio-cni` as the runtime calls it, with bad input: the right CNI error
//! code and message on stdout, exit 1, nothing else on stdout, never a panic.

mod support;

use std::io::Write;
use std::process::Output;

fn call(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = support::plugin_command(env).spawn().unwrap();
    // The plugin may exit before reading stdin (e.g. on an environment error).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

const ADD: &[(&str, &str)] = &[
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/var/run/netns/does-not-exist"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
    ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"),
];

fn with(
    base: &[(&'static str, &'static str)],
    key: &'static str,
    value: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<_> = base.iter().filter(|(k, _)| *k != key).copied().collect();
    if !value.is_empty() {
        env.push((key, value));
    }
    env
}

/// The single JSON error document on stdout.
fn error(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {stdout}"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "no panic");
    doc
}

const CONF: &str =
    r#"{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "cni_agent_run_dir": "/nonexistent"}"#;

#[test]
fn missing_or_invalid_environment_is_code_4_naming_the_variables() {
    let e = error(&call(&with(ADD, "CNI_NETNS", ""), CONF));
    assert_eq!(e["code"], 4);
    assert_eq!(e["msg"], "required env variables [CNI_NETNS] missing");
    let e = error(&call(&with(ADD, "CNI_COMMAND", "REBOOT"), CONF));
    assert_eq!(
        (e["code"].as_u64(), e["msg"].as_str()),
        (Some(4), Some("unknown CNI_COMMAND: REBOOT"))
    );
    let e = error(&call(&with(ADD, "CNI_IFNAME", "a-very-long-interface-name"), CONF));
    assert_eq!(e["code"], 4);
    let e = error(&call(&with(ADD, "CNI_ARGS", "K8S_POD_NAME=web;BOGUS=1"), CONF));
    assert!(e["msg"].as_str().unwrap().contains("unknown args"), "{e}");
}

#[test]
fn undecodable_and_invalid_configs_are_codes_6_7_and_1() {
    assert_eq!(error(&call(ADD, r#"{"cniVersion": "1.0.0", "name": "#))["code"], 6);
    assert_eq!(
        error(&call(ADD, r#"{"cniVersion": "1.0.0", "type": "istio-cni"}"#))["code"],
        7
    );
    let wrong_type = r#"{"cniVersion": "1.0.0", "name": "n", "exclude_namespaces": "kube-system"}"#;
    let e = error(&call(ADD, wrong_type));
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().contains("exclude_namespaces"), "{e}");
    let e = error(&call(ADD, r#"{"cniVersion": "0.5.0", "name": "n"}"#));
    assert_eq!(e["code"], 1);
    let bad_prev = r#"{"cniVersion": "1.0.0", "name": "n", "prevResult": {"cniVersion": "0.4.0", "ips": []}}"#;
    assert_eq!(error(&call(ADD, bad_prev))["code"], 6);
}

#[test]
fn a_meshed_pod_without_api_access_fails_closed_naming_the_cause() {
    let e = error(&call(ADD, CONF));
    assert_eq!(e["code"], 11);
    assert!(
        e["msg"].as_str().unwrap().contains("/nonexistent/istio-cni-kubeconfig"),
        "{e}"
    );
}

#[test]
fn the_plugins_own_netns_is_code_8() {
    let env = with(
        &with(ADD, "CNI_NETNS", "/proc/self/ns/net"),
        "CNI_ARGS",
        "IgnoreUnknown=1",
    );
    // /proc/self is the plugin itself, so this is its own netns.
    assert_eq!(error(&call(&env, CONF))["code"], 8);
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let del = with(&with(ADD, "CNI_COMMAND", "DEL"), "CNI_NETNS", "");
    for _ in 0..2 {
        let out = call(&del, CONF);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_excluded_pod_passes_the_prev_result_through_without_any_api() {
    let conf = r#"{"cniVersion": "0.4.0", "name": "k8s-pod-network", "type": "istio-cni", "cni_agent_run_dir": "/nonexistent",
        "exclude_namespaces": ["kube-system"], "prevResult": {"cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}], "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 0}], "dns": {}}}"#;
    let out = call(
        &with(
            ADD,
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1",
        ),
        conf,
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let conf: serde_json::Value = serde_json::from_str(conf).unwrap();
    assert_eq!(result, conf["prevResult"]);
}

#[test]
fn version_works_with_empty_stdin() {
    let out = call(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        versions,
        ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    );
}

#[test]
fn a_meshed_pod_with_a_missing_netns_fails_naming_it() {
    use istio_cni_kind::cluster::{Cluster, ClusterSpec};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, PostParams};

    if !testkit::gate("a_meshed_pod_with_a_missing_netns", &[testkit::Need::Root]) {
        return;
    }
    let cluster = Cluster::create(ClusterSpec::default()).unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "annotations": {"sidecar.istio.io/status": "{}"}},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "web", "image": "web"}, {"name": "istio-proxy", "image": "proxyv2"}]}}))
    .unwrap();
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster.block_on(api.create(&PostParams::default(), &pod)).unwrap();
    let dir = std::env::temp_dir().join(format!("istio-cni-protocol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server = cluster.local().unwrap().api();
    server
        .write_kubeconfig(&dir.join("istio-cni-kubeconfig"), &server.admin_token())
        .unwrap();
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "istio-cni", "cni_agent_run_dir": dir});

    let e = error(&call(ADD, &conf.to_string()));
    let msg = e["msg"].as_str().unwrap();
    assert_eq!(e["code"], 999, "{msg}");
    assert!(
        msg.contains("pod default/web") && msg.contains("/var/run/netns/does-not-exist"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    cluster.delete().unwrap();
}
