//! `istio-cni` chained after Debian's `bridge` (+ host-local), run by the
//! harness's libcni-faithful runner, for every CNI version the bridge speaks:
//! the chain's final result is the bridge's result, in that version's format
//! (0.3.x/0.4.0 keep `ips[].version`, 1.0.0 drops it). The pod is in an
//! excluded namespace, so no API server is involved.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::{NetworkConfigList, PodRef, Runner, RuntimeConf};
use serde_json::{Value, json};
use testkit::{Need, Scratch, gate};

/// Random or per-run values replaced so snapshots are stable.
fn normalize(mut v: Value) -> Value {
    if let Some(interfaces) = v.get_mut("interfaces").and_then(Value::as_array_mut) {
        for i in interfaces {
            for (key, placeholder) in [("mac", "<mac>"), ("sandbox", "<netns>")] {
                if i.get(key).is_some() {
                    i[key] = json!(placeholder);
                }
            }
            if let Some(name) = i["name"].as_str()
                && name.starts_with("veth")
            {
                i["name"] = json!("<veth>");
            }
        }
    }
    v
}

#[test]
fn the_bridge_result_comes_back_unchanged_in_each_version() {
    if !gate("the_bridge_result_comes_back_unchanged", &[Need::Root]) {
        return;
    }
    let cluster = Cluster::create(ClusterSpec::default()).unwrap();
    let node = &cluster.local().unwrap().nodes()[0];
    let scratch = Scratch::new("chain");
    let bin = scratch.path().to_path_buf();
    testkit::place_exe(env!("CARGO_BIN_EXE_istio-cni").as_ref(), &bin.join("istio-cni")).unwrap();
    let mut dirs = node.bin_dirs();
    dirs.push(bin.clone());
    let runner = Runner::new(dirs, bin.join("cache")).in_netns(node.netns().clone());

    for (n, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let bridge = json!({"type": "bridge", "bridge": "cni-v", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.252.0.0/24"}]], "dataDir": bin.join("ipam")}});
        let istio = json!({"type": "istio-cni", "name": "istio-cni", "cni_agent_run_dir": "/nonexistent",
            "exclude_namespaces": ["kube-system"]});
        let list = |plugins: Vec<Value>| {
            let doc = json!({"cniVersion": version, "name": "k8s-pod-network", "plugins": plugins});
            NetworkConfigList::from_list_bytes(doc.to_string().as_bytes()).unwrap()
        };
        let pod = PodRef {
            namespace: "kube-system".into(),
            name: format!("coredns-{n}"),
            uid: format!("uid-{n}"),
        };
        let run = |list: &NetworkConfigList, id: &str| {
            let sandbox = node.create_pod_netns(id).unwrap();
            let rt = RuntimeConf::for_pod(id, sandbox.path(), "eth0", &pod);
            let result = runner.add(list, &rt).unwrap_or_else(|e| panic!("{version}: {e}"));
            runner.del(list, &rt).unwrap();
            node.delete_pod_netns(id).unwrap();
            result.raw
        };
        let bridge_only = run(&list(vec![bridge.clone()]), &format!("b{n}"));
        let chained = run(&list(vec![bridge, istio]), &format!("c{n}"));
        // The same shape and version; only the allocation differs. An empty
        // `dns` is the same as none: Debian's bridge (libcni 1.1.2) prints
        // `"dns": {}` in 1.0.0 results, current libcni (and Istio) omit it.
        let mut expected = normalize(bridge_only);
        if version == "1.0.0" && expected["dns"] == json!({}) {
            expected.as_object_mut().unwrap().remove("dns");
        }
        let chained = normalize(chained);
        expected["ips"] = chained["ips"].clone();
        assert_eq!(chained, expected, "{version}");
        assert_eq!(chained["cniVersion"], version);
        assert_eq!(
            chained["ips"][0].get("version").is_some(),
            version != "1.0.0",
            "{version}: ips[].version"
        );
        insta::assert_snapshot!(
            format!("bridge-then-istio-cni-{version}"),
            serde_json::to_string_pretty(&chained).unwrap()
        );
    }
    cluster.delete().unwrap();
}
