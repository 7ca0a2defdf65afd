//! The cluster network: pods on two nodes (bridge and ptp) get addresses
//! from their own node's CIDR and talk over TCP across nodes (mesh-probe echo
//! and client inside the sandboxes); the harness reaches pods through its
//! routes; every layout creates its directories; the harness namespace
//! defaults to the caller's; teardown leaves nothing behind.
//!
//! Needs root; without it the tests print `SKIP:` and pass (they panic when
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod node_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use istio_cni_kind::cni::{PodRef, Profile, RuntimeConf};
use istio_cni_kind::node::{ClusterConfig, ClusterNetwork, InstallMode, Layout, Node, NodeSpec, PodSandbox};
use node_support::{
    NODE, Probe, Scratch, client, cluster, gate, named, private_netns, probe_bin, run_ok, teardown_clean,
};
use rstest::rstest;

/// Writes `profile` on `node`, makes a sandbox and ADDs it; returns the
/// sandbox and its address.
fn pod_on(node: &Node, profile: Profile, id: &str) -> (PodSandbox, Ipv4Addr) {
    if node.select_network().is_err() {
        node.write_cni_config(&node.profile(profile).generate().expect("profile"))
            .expect("writing config");
    }
    let list = node.select_network().expect("selecting").network;
    let sandbox = node.create_pod_netns(id).expect("sandbox");
    let pod = PodRef {
        namespace: "default".into(),
        name: id.into(),
        uid: format!("uid-{id}"),
    };
    let rt = RuntimeConf::for_pod(id, sandbox.path(), "eth0", &pod);
    let result = node
        .runner()
        .add(&list, &rt)
        .unwrap_or_else(|e| panic!("ADD {id} on {}: {e}", node.name()));
    let ip = match result.sandbox_ips().first().map(|ip| ip.addr) {
        Some(IpAddr::V4(ip)) => ip,
        other => panic!("no IPv4 address for {id}: {other:?}"),
    };
    (sandbox, ip)
}

fn echo_in(sandbox: &PodSandbox, name: &str) -> Probe {
    let mut cmd = sandbox.command(probe_bin());
    cmd.args(["echo", "--port", "8080"]).env("POD_NAME", name);
    let mut probe = Probe::spawn(cmd);
    probe.wait_ready();
    probe
}

#[rstest]
fn pods_on_two_nodes_reach_each_other(#[values(Profile::Bridge, Profile::Ptp)] profile: Profile) {
    let test = format!("pods_on_two_nodes_reach_each_other[{profile}]");
    if !gate(&test, NODE) {
        return;
    }
    let scratch = Scratch::new(&format!("nodes-{profile}"));
    let (net, harness) = cluster(&scratch, &[NodeSpec::new("n0"), NodeSpec::new("n1")]);
    let (n0, n1) = (&net.nodes()[0], &net.nodes()[1]);
    assert_eq!(n0.ip(), Ipv4Addr::new(10, 250, 0, 10));
    assert_eq!(n1.ip(), Ipv4Addr::new(10, 250, 0, 11));
    assert_eq!(n1.pod_cidr().to_string(), "10.251.1.0/24");

    let (pa, ip_a) = pod_on(n0, profile, "pod-a");
    let (pb, ip_b) = pod_on(n1, profile, "pod-b");
    assert!(n0.pod_cidr().contains(ip_a), "{ip_a}");
    assert!(n1.pod_cidr().contains(ip_b), "{ip_b}");

    let _echo_a = echo_in(&pa, "pod-a");
    let _echo_b = echo_in(&pb, "pod-b");

    // a → b and b → a across nodes; the source address is preserved.
    for (from, to, to_ip, from_ip) in [(&pa, "pod-b", ip_b, ip_a), (&pb, "pod-a", ip_a, ip_b)] {
        let target = format!("{to_ip}:8080");
        let (status, events) = client(&from.netns, &["--target", &target, "--timeout", "3s"]);
        assert!(status.success(), "{test}: {} → {target}: {events:#?}", from.id);
        let ev = named(&events, "connected")[0];
        assert_eq!(ev["reply"]["name"], to, "{ev}");
        let peer = ev["reply"]["peer"].as_str().unwrap_or("");
        assert!(
            peer.starts_with(&format!("{from_ip}:")),
            "no masquerading expected: {ev}"
        );
    }

    // The harness reaches pods through its pod CIDR routes.
    let (status, events) = client(&harness, &["--target", &format!("{ip_b}:8080")]);
    assert!(status.success(), "harness → pod-b: {events:#?}");
    // Nodes reach each other's pods too.
    let (status, events) = client(n0.netns(), &["--target", &format!("{ip_b}:8080")]);
    assert!(status.success(), "node n0 → pod-b: {events:#?}");

    let resources = net.resources();
    assert_eq!(resources.netns_files.len(), 4, "{resources:#?}");
    teardown_clean(net);
}

#[test]
fn every_layout_creates_its_directories() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("nodes-layouts");
    let specs: Vec<NodeSpec> = Layout::ALL
        .iter()
        .map(|l| NodeSpec::new(format!("node-{}", l.name())).layout(*l))
        .collect();
    let (net, _harness) = cluster(&scratch, &specs);
    assert_eq!(net.nodes().len(), Layout::ALL.len());
    for (i, node) in net.nodes().iter().enumerate() {
        let layout = node.layout();
        assert_eq!(node.root(), scratch.join("cluster").join(node.name()));
        for dir in layout.dirs() {
            let path = node.host_path(dir);
            assert!(path.is_dir(), "{layout}: {} missing", path.display());
        }
        assert_eq!(node.conf_dir(), node.host_path(layout.conf_dir()));
        assert_eq!(node.bin_dir(), node.host_path(layout.bin_dirs()[0]));
        let installed = node.installed_plugins().expect("plugins installed");
        assert_eq!(installed.mode, InstallMode::Symlink);
        assert!(installed.names.iter().any(|n| n == "bridge"), "{installed:?}");
        let bridge = node.bin_dir().join("bridge");
        assert!(
            std::fs::symlink_metadata(&bridge)
                .expect("bridge")
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_link(&bridge).expect("link"),
            installed.source_dir.join("bridge")
        );
        let index = u8::try_from(i).expect("small index");
        assert_eq!(node.ip(), Ipv4Addr::new(10, 250, 0, 10 + index));
        assert_eq!(node.pod_cidr().to_string(), format!("10.251.{i}.0/24"));
        // Every node has a route to every other node's pods.
        let routes = run_ok(node.command("ip").args(["-4", "route", "show"]));
        for other in net.nodes().iter().filter(|o| o.name() != node.name()) {
            let want = format!("{} via {}", other.pod_cidr(), other.ip());
            assert!(routes.contains(&want), "{}: {want} missing in\n{routes}", node.name());
        }
        let forwarding = run_ok(node.command("cat").arg("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(forwarding.trim(), "1");
    }
    // The minikube layout keeps sandboxes under /var/run/docker/netns.
    let minikube = net.node("node-minikube").expect("minikube node");
    let sandbox = minikube.create_pod_netns("p1").expect("sandbox");
    assert!(sandbox.path().starts_with(minikube.host_path("/var/run/docker/netns")));
    assert_eq!(minikube.pod_ids(), ["p1"]);
    minikube.delete_pod_netns("p1").expect("delete sandbox");
    assert!(!sandbox.path().exists());
    minikube.delete_pod_netns("p1").expect("deleting twice is fine");

    teardown_clean(net);
}

#[test]
fn copy_mode_installs_real_files_and_names_are_checked() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("nodes-copy");
    let harness = private_netns(&scratch, "harness");
    let mut net = ClusterNetwork::create(ClusterConfig {
        root: Some(scratch.join("cluster")),
        harness_netns: Some(harness.path().to_path_buf()),
        install_mode: InstallMode::Copy,
        ..ClusterConfig::default()
    })
    .expect("cluster");
    let node = net.add_node(NodeSpec::new("n0").layout(Layout::K3s)).expect("node");
    let bridge = node.bin_dir().join("bridge");
    assert!(std::fs::symlink_metadata(&bridge).expect("bridge").is_file());
    assert!(bridge.starts_with(scratch.join("cluster/n0/var/lib/rancher/k3s/data/cni")));
    assert!(net.add_node(NodeSpec::new("n0")).is_err(), "duplicate name");
    assert!(net.add_node(NodeSpec::new("Bad_Name")).is_err(), "invalid name");
    let err = net.nodes()[0].create_pod_netns("bad/id").expect_err("invalid id");
    assert!(err.to_string().contains("bad/id"), "{err}");
    // A second cluster with the same plan in the same harness netns would
    // collide: refused, naming the subnet.
    let err = ClusterNetwork::create(ClusterConfig {
        root: Some(scratch.join("cluster2")),
        harness_netns: Some(harness.path().to_path_buf()),
        ..ClusterConfig::default()
    })
    .expect_err("colliding plan");
    assert!(err.to_string().contains("10.250.0.0/24 is already in use"), "{err}");
    teardown_clean(net);
    assert!(scratch.join("cluster").is_dir(), "a given root is kept");
}

#[test]
fn harness_defaults_to_the_calling_threads_netns() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("nodes-default-harness");
    let private = private_netns(&scratch, "caller");
    let root = scratch.join("cluster");
    // Build the cluster from a thread living in `private`: the bridge must
    // land there, not in the test process's namespace.
    let (net, links) = private
        .run(move || {
            let mut net = ClusterNetwork::create(ClusterConfig {
                root: Some(root),
                ..ClusterConfig::default()
            })
            .expect("cluster");
            net.add_node(NodeSpec::new("n0")).expect("node");
            let links = std::process::Command::new("ip")
                .args(["-o", "link", "show"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            (net, links)
        })
        .expect("running in the private netns");
    let bridge = net.bridge().to_owned();
    assert!(
        links.contains(&bridge),
        "bridge {bridge} not in the caller's netns:\n{links}"
    );
    let here = std::process::Command::new("ip")
        .args(["link", "show", "dev", &bridge])
        .output()
        .expect("ip");
    assert!(!here.status.success(), "bridge leaked into the test's own netns");
    // Teardown from another thread still acts on the captured namespace.
    teardown_clean(net);
    private.delete().expect("deleting the caller netns");
}

#[test]
fn dropping_a_cluster_cleans_up() {
    testkit::gate_or_return!(NODE);
    let scratch = Scratch::new("nodes-drop");
    let resources = {
        let (net, _harness) = cluster(&scratch, &[NodeSpec::new("n0")]);
        let node = &net.nodes()[0];
        let (_sandbox, _ip) = pod_on(node, Profile::Bridge, "pod-x");
        // A process left running in the node netns does not block teardown.
        let mut sleeper = node.spawn(&["sleep", "30"]).expect("spawn");
        let resources = net.resources();
        drop(net);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        resources
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(resources.leftovers(), Vec::<String>::new());
}
