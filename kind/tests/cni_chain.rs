//! The libcni-faithful runner against Debian's real plugins, on a one-node
//! cluster network per test: ADD/CHECK/DEL for every profile as `.conflist`
//! and `.conf`, `prevResult` handed along a chain (tuning, portmap and a
//! recording script), config selection, typed plugin errors, timeouts,
//! VERSION/STATUS and GC of stale attachments.
//!
//! Needs root; without it the tests print `SKIP:` and pass (they panic when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod node_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use istio_cni_kind::cni::{
    CachedAttachment, ChainedPlugin, CniError, GcAttachment, NetworkConfigList, PodRef, Profile, RuntimeConf,
    select_network,
};
use istio_cni_kind::node::{Node, NodeSpec, PodSandbox};
use node_support::{NODE, Scratch, cluster, gate, node_and, run_ok, teardown_clean, write_script};
use rstest::rstest;
use serde_json::{Value, json};

fn pod_rt(sandbox: &PodSandbox) -> RuntimeConf {
    let pod = PodRef {
        namespace: "default".into(),
        name: sandbox.id.clone(),
        uid: format!("uid-{}", sandbox.id),
    };
    RuntimeConf::for_pod(sandbox.id.clone(), sandbox.path(), "eth0", &pod)
}

/// `ip -o -4 addr show dev eth0` inside the sandbox ("" when eth0 is gone).
fn pod_ipv4(sandbox: &PodSandbox) -> String {
    let out = sandbox
        .command("ip")
        .args(["-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
        .expect("running ip in the sandbox");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn default_route(sandbox: &PodSandbox) -> String {
    run_ok(sandbox.command("ip").args(["-4", "route", "show", "default"]))
}

fn cache_path(node: &Node, network: &str, sandbox: &PodSandbox) -> std::path::PathBuf {
    node.cni_cache_dir()
        .join("results")
        .join(format!("{network}-{}-eth0", sandbox.id))
}

/// Runs `test` on node "n0" of a one-node cluster network rooted in a scratch
/// dir of its own (`scratch_name`), then tears the network down.
fn on_one_node(scratch_name: &str, test: impl FnOnce(&Scratch, &Node)) {
    let scratch = Scratch::new(scratch_name);
    let (net, _harness) = cluster(&scratch, &[NodeSpec::new("n0")]);
    test(&scratch, &net.nodes()[0]);
    net.teardown().expect("teardown");
}

#[rstest]
fn add_check_del_for_every_profile(
    #[values(Profile::Bridge, Profile::Ptp, Profile::Macvlan, Profile::Ipvlan)] profile: Profile,
    #[values(false, true)] single_conf: bool,
) {
    let name = format!(
        "add_check_del_for_every_profile[{profile},{}]",
        if single_conf { "conf" } else { "conflist" }
    );
    if !gate(&name, NODE) {
        return;
    }
    let scratch = Scratch::new(&format!("chain-{profile}-{single_conf}"));
    let (net, _harness) = cluster(&scratch, &[NodeSpec::new("n0")]);
    let node = &net.nodes()[0];
    let cfg = if single_conf {
        node.profile(profile).single_conf()
    } else {
        node.profile(profile)
    };
    let generated = cfg.generate().expect("generating the profile");
    let written = node.write_cni_config(&generated).expect("writing the config");
    assert_eq!(
        written.extension().and_then(|e| e.to_str()),
        Some(if single_conf { "conf" } else { "conflist" })
    );

    let selection = node.select_network().expect("selecting the network");
    assert_eq!(selection.network.source.as_deref(), Some(written.as_path()));
    assert!(selection.skipped.is_empty());
    let list = selection.network;
    let network = list.name.clone();

    let sandbox = node.create_pod_netns("pod-a").expect("creating the sandbox");
    let rt = pod_rt(&sandbox);
    let runner = node.runner().with_timeout(Duration::from_secs(30));
    if !profile.kernel_supports() {
        // Not a privilege problem: this kernel was built without
        // CONFIG_IPVLAN. The runner must still surface the plugin's refusal
        // as a typed error.
        let err = runner.add(&list, &rt).expect_err("ipvlan ADD without kernel support");
        let perr = err
            .plugin_error()
            .unwrap_or_else(|| panic!("{name}: not a plugin error: {err}"));
        assert!(perr.msg.contains("not supported"), "{name}: {err}");
        eprintln!("NOTE: {name}: kernel has no ipvlan support (CONFIG_IPVLAN); checked the typed error only");
        runner
            .del(&list, &rt)
            .unwrap_or_else(|e| panic!("{name}: DEL after failed ADD: {e}"));
        net.teardown().expect("teardown");
        return;
    }
    let result = runner
        .add(&list, &rt)
        .unwrap_or_else(|e| panic!("{name}: ADD failed: {e}"));

    // The result: an address in the node's pod CIDR on the sandbox's eth0.
    assert_eq!(result.cni_version, "1.0.0");
    let ips = result.sandbox_ips();
    assert_eq!(ips.len(), 1, "{:#?}", result.raw);
    let ip = match ips[0].addr {
        IpAddr::V4(ip) => ip,
        other => panic!("unexpected address {other:?}"),
    };
    assert!(node.pod_cidr().contains(ip), "{ip} not in {}", node.pod_cidr());
    assert!(
        result
            .interfaces()
            .iter()
            .any(|i| i.name == "eth0" && i.sandbox == sandbox.path().to_str().unwrap_or("")),
        "{:#?}",
        result.raw
    );
    // ...and really there, with a default route.
    assert!(
        pod_ipv4(&sandbox).contains(&format!("inet {ip}/")),
        "{}",
        pod_ipv4(&sandbox)
    );
    let route = default_route(&sandbox);
    assert!(route.starts_with("default via "), "{route:?}");

    // The cache, in libcni's format.
    let cache = cache_path(node, &network, &sandbox);
    let cached: Value = serde_json::from_slice(&std::fs::read(&cache).expect("cache file")).expect("cache JSON");
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["containerId"], "pod-a");
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], network.as_str());
    assert_eq!(cached["result"], result.raw);
    assert_eq!(cached["cniArgs"][2], json!(["K8S_POD_NAME", "pod-a"]));

    runner
        .check(&list, &rt)
        .unwrap_or_else(|e| panic!("{name}: CHECK failed: {e}"));

    runner
        .del(&list, &rt)
        .unwrap_or_else(|e| panic!("{name}: DEL failed: {e}"));
    assert_eq!(pod_ipv4(&sandbox), "", "eth0 should be gone");
    assert!(!cache.exists(), "cache entry should be gone");
    // DEL is idempotent.
    runner
        .del(&list, &rt)
        .unwrap_or_else(|e| panic!("{name}: second DEL failed: {e}"));

    teardown_clean(net);
}

#[test]
fn chained_plugins_receive_the_previous_result() {
    testkit::gate_or_return!(&node_and(&["iptables", "sed", "nsenter"]));
    on_one_node("chain-prev", |scratch, node| {
        // A recording plugin: logs command + stdin, answers ADD with the
        // prevResult it got (extracted from libcni's sorted compact JSON).
        let log = scratch.join("recorder.log");
        write_script(
            &node.bin_dir().join("recorder"),
            &format!(
                r#"input=$(cat)
printf '%s %s\n' "$CNI_COMMAND" "$input" >> {log}
case "$CNI_COMMAND" in
  ADD) printf '%s' "$input" | sed -e 's/^.*"prevResult":\(.*\),"type":"recorder"}}$/\1/' ;;
  DEL) nsenter --net="$CNI_NETNS" ip -o link show dev eth0 >/dev/null 2>&1 && echo "DEL-SAW-ETH0" >> {log} ;;
  VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}}' ;;
esac"#,
                log = log.display()
            ),
        );
        let mut sysctl = BTreeMap::new();
        sysctl.insert("net.ipv4.conf.eth0.arp_notify".to_owned(), "1".to_owned());
        let mut generated = node
            .profile(Profile::Bridge)
            .with(ChainedPlugin::Tuning { sysctl })
            .with(ChainedPlugin::Portmap)
            .generate()
            .expect("generating");
        generated.json["plugins"]
            .as_array_mut()
            .expect("plugins")
            .push(json!({"type": "recorder", "name": "overridden"}));
        node.write_cni_config(&generated).expect("writing");
        let list = node.select_network().expect("selecting").network;
        assert_eq!(list.plugin_types(), "bridge,tuning,portmap,recorder");

        let sandbox = node.create_pod_netns("pod-chain").expect("sandbox");
        let rt = pod_rt(&sandbox).with_capability(
            "portMappings",
            json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let runner = node.runner();
        let result = runner.add(&list, &rt).unwrap_or_else(|e| panic!("ADD failed: {e}"));

        let recorded = std::fs::read_to_string(&log).expect("recorder log");
        let add_line = recorded.lines().find(|l| l.starts_with("ADD ")).expect("ADD recorded");
        let stdin: Value = serde_json::from_str(&add_line[4..]).expect("recorded stdin is JSON");
        assert_eq!(stdin["name"], "bridge", "the list's name replaces the plugin's");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert!(
            stdin.get("runtimeConfig").is_none(),
            "recorder declared no capabilities"
        );
        let prev = &stdin["prevResult"];
        assert!(
            prev["interfaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["name"] == "eth0")),
            "{prev:#}"
        );
        // The chain's result is what the last plugin printed: the prevResult.
        assert_eq!(&result.raw, prev);
        assert_eq!(result.sandbox_ips().len(), 1);

        // tuning ran in the pod, portmap programmed the node.
        let arp_notify = run_ok(sandbox.command("cat").arg("/proc/sys/net/ipv4/conf/eth0/arp_notify"));
        assert_eq!(arp_notify.trim(), "1");
        let nat = run_ok(node.command("iptables").args(["-w", "-t", "nat", "-S"]));
        assert!(nat.contains("CNI-HOSTPORT-DNAT"), "{nat}");
        assert!(nat.contains("18080"), "{nat}");

        runner.del(&list, &rt).unwrap_or_else(|e| panic!("DEL failed: {e}"));
        let recorded = std::fs::read_to_string(&log).expect("recorder log");
        let del_line = recorded.lines().find(|l| l.starts_with("DEL ")).expect("DEL recorded");
        let del_stdin: Value = serde_json::from_str(&del_line[4..]).expect("DEL stdin is JSON");
        assert_eq!(del_stdin["prevResult"], result.raw, "DEL gets the cached result");
        // DEL ran in reverse: the recorder (last) still saw the pod's eth0,
        // which the bridge (first) removes.
        assert!(recorded.contains("DEL-SAW-ETH0"), "{recorded}");
        assert_eq!(pod_ipv4(&sandbox), "");
        let nat = run_ok(node.command("iptables").args(["-w", "-t", "nat", "-S"]));
        assert!(!nat.contains("18080"), "{nat}");
    });
}

#[test]
fn selection_skips_invalid_files_in_byte_order() {
    testkit::gate_or_return!(NODE);
    on_one_node("chain-select", |_, node| {
        let dir = node.runtime_conf_dir();
        std::fs::write(dir.join("00-broken.conflist"), "{ this is not json").expect("write");
        std::fs::write(
            dir.join("01-empty.conflist"),
            r#"{"cniVersion":"1.0.0","name":"empty","plugins":[]}"#,
        )
        .expect("write");
        std::fs::write(dir.join("05-notype.conf"), r#"{"cniVersion":"1.0.0","name":"notype"}"#).expect("write");
        std::fs::write(dir.join("07-readme.txt"), "not a config").expect("write");
        node.write_cni_config(&node.profile(Profile::Ptp).priority("20").generate().expect("ptp"))
            .expect("write");
        node.write_cni_config(&node.profile(Profile::Bridge).generate().expect("bridge"))
            .expect("write");

        let selection = select_network(&dir).expect("selection");
        assert_eq!(selection.network.name, "bridge");
        let skipped: Vec<(String, String)> = selection
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned(),
                    s.reason.clone(),
                )
            })
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:#?}");
        assert_eq!(skipped[0].0, "00-broken.conflist");
        assert!(skipped[0].1.contains("error parsing configuration list"), "{skipped:?}");
        assert_eq!(skipped[1].0, "01-empty.conflist");
        assert!(skipped[1].1.contains("no plugins in list"), "{skipped:?}");
        assert_eq!(skipped[2].0, "05-notype.conf");
        assert!(skipped[2].1.contains("missing 'type'"), "{skipped:?}");

        let sandbox = node.create_pod_netns("pod-sel").expect("sandbox");
        let rt = pod_rt(&sandbox);
        let result = node
            .runner()
            .add(&selection.network, &rt)
            .expect("ADD through the selected network");
        assert!(pod_ipv4(&sandbox).contains("inet 10.251.0."), "{:#?}", result.raw);
    });
}

#[test]
fn a_failing_plugin_yields_a_typed_error() {
    testkit::gate_or_return!(NODE);
    on_one_node("chain-fail", |_, node| {
        write_script(
            &node.bin_dir().join("failer"),
            r#"cat >/dev/null
case "$CNI_COMMAND" in
  ADD) echo "failer: rejecting $CNI_CONTAINERID" >&2
       echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"field foo is not allowed"}'
       exit 1 ;;
esac"#,
        );
        write_script(&node.bin_dir().join("sleeper"), "cat >/dev/null; sleep 30");
        let mut generated = node.profile(Profile::Bridge).generate().expect("generating");
        generated.json["plugins"]
            .as_array_mut()
            .expect("plugins")
            .push(json!({"type": "failer"}));
        let list = NetworkConfigList::from_list_bytes(generated.text().as_bytes()).expect("list");
        let sandbox = node.create_pod_netns("pod-fail").expect("sandbox");
        let rt = pod_rt(&sandbox);
        let runner = node.runner();

        let err = runner.add(&list, &rt).expect_err("ADD must fail");
        let failure = err
            .plugin_failure()
            .unwrap_or_else(|| panic!("unexpected error: {err:?}"));
        assert_eq!(
            (
                failure.command.as_str(),
                failure.plugin.as_str(),
                failure.network.as_str()
            ),
            ("ADD", "failer", "bridge")
        );
        assert_eq!(failure.error.code, 7);
        assert_eq!(failure.error.msg, "invalid network config");
        assert_eq!(failure.error.details, "field foo is not allowed");
        assert_eq!(failure.stderr.trim(), "failer: rejecting pod-fail");
        assert!(matches!(err, CniError::Plugin(_)));
        assert_eq!(err.code(), Some(7));
        let text = err.to_string();
        assert!(
            text.starts_with(r#"plugin type="failer" name="bridge" failed (add): invalid network config"#),
            "{text}"
        );
        assert!(text.contains("stderr: failer: rejecting pod-fail"), "{text}");
        assert!(
            !cache_path(node, "bridge", &sandbox).exists(),
            "a failed ADD caches nothing"
        );
        // The runtime then DELs; the failer accepts DEL.
        runner.del(&list, &rt).expect("DEL after a failed ADD");

        let missing =
            NetworkConfigList::from_list_bytes(br#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"nope"}]}"#)
                .expect("list");
        let err = runner.add(&missing, &rt).expect_err("missing plugin");
        assert!(
            matches!(err, CniError::PluginNotFound { ref plugin, .. } if plugin == "nope"),
            "{err}"
        );
        assert!(err.to_string().contains(&node.bin_dir().display().to_string()), "{err}");

        let slow =
            NetworkConfigList::from_list_bytes(br#"{"cniVersion":"1.0.0","name":"s","plugins":[{"type":"sleeper"}]}"#)
                .expect("list");
        let started = std::time::Instant::now();
        let err = runner
            .clone()
            .with_timeout(Duration::from_millis(300))
            .add(&slow, &rt)
            .expect_err("timeout");
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

#[test]
fn version_status_check_gates_and_gc() {
    testkit::gate_or_return!(NODE);
    on_one_node("chain-gc", |_, node| {
        let runner = node.runner();

        let info = runner.version("bridge").expect("VERSION");
        assert!(info.supports("1.0.0") && info.supports("0.4.0"), "{info:?}");
        let bridge_list = |cni_version: &str| {
            let generated = node
                .profile(Profile::Bridge)
                .cni_version(cni_version)
                .generate()
                .expect("generating");
            NetworkConfigList::from_list_bytes(generated.text().as_bytes()).expect("list")
        };
        let list = bridge_list("1.0.0");
        assert!(runner.validate(&list).expect("validate").is_empty());
        // Debian's plugins stop at 1.0.0: a 1.1.0 list does not validate.
        let newer = bridge_list("1.1.0");
        assert!(runner.validate(&newer).is_err());
        // STATUS is a no-op before 1.1.0.
        runner.status(&list).expect("STATUS");
        // CHECK does not exist before 0.4.0.
        let old = bridge_list("0.3.1");
        let err = runner
            .check(&old, &RuntimeConf::new("x", None, "eth0"))
            .expect_err("CHECK at 0.3.1");
        assert!(matches!(err, CniError::Unsupported { command: "CHECK", .. }), "{err}");

        let keep = node.create_pod_netns("keep").expect("sandbox");
        let stale = node.create_pod_netns("stale").expect("sandbox");
        runner.add(&list, &pod_rt(&keep)).expect("ADD keep");
        runner.add(&list, &pod_rt(&stale)).expect("ADD stale");
        assert_eq!(runner.cached_attachments(None).len(), 2);
        runner.gc(&list, &[GcAttachment::new("keep", "eth0")]).expect("GC");
        let left = runner.cached_attachments(None);
        assert_eq!(
            left.iter().map(CachedAttachment::key).collect::<Vec<_>>(),
            [GcAttachment::new("keep", "eth0")]
        );
        assert_eq!(pod_ipv4(&stale), "", "GC DELs the stale attachment");
        assert!(pod_ipv4(&keep).contains("inet 10.251.0."));
    });
}
