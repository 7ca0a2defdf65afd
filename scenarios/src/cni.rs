//! The `cni/...` scenarios: `istio-cni` behind each primary CNI, installed by
//! the agent on every node, proven by real traffic.
//!
//! Embedded-cluster names are `cni/<bridge|ptp|macvlan|ipvlan>/<mode>`:
//! - `chained`: the agent appends its entry to the primary `.conflist`;
//! - `single-conf`: the primary is a lone `.conf`; the agent turns it into a
//!   `.conflist` carrying its entry;
//! - `standalone` (`CHAINED_CNI_PLUGIN=false`): the agent writes
//!   `YYY-istio-cni.conf` beside the primary and leaves the primary alone.
//!   libcni (and kubelet-lite) load the first file only, so no runtime runs
//!   that file by itself: real nodes need a meta plugin (Multus) delegating
//!   to it. The scenario plays Multus — after each sandbox is up it runs an
//!   ADD of the standalone file on it (interface `net1`) — and checks what is
//!   true: the primary is untouched, the file is a working network, and the
//!   plugin decides per pod exactly as when chained.
//!
//! Every scenario: 2 nodes, the agent's DaemonSet rolled out on both (the
//! system under test, [`crate::system`]; standalone with `chained=false`), then
//! - a meshed pod (Istio's injected shape: mesh-probe app, mesh-probe proxy
//!   as `istio-proxy`, `istio-cni validate` as `istio-validation`) passes
//!   validation; its outbound to another node's pod lands on the proxy's
//!   15001 with `SO_ORIGINAL_DST` the real target; an excluded port and an
//!   excluded CIDR reach the target directly; inbound lands on 15006;
//! - an unmeshed pod and a meshed-shaped pod in `kube-system` (excluded)
//!   have no `ISTIO` chains and talk directly;
//! - deleting the DaemonSet (each pod's SIGTERM cleanup) gives back each
//!   node's CNI config dirs byte for byte and removes the binary and the
//!   plugin kubeconfig.
//!
//! On real clusters the embedded profiles skip, and `cni/<cni>/chained` (kind
//! with `--cni kindnet|calico|cilium|flannel`) or `cni/cluster/chained` (an
//! existing cluster) runs the same traffic matrix behind the cluster's own
//! primary CNI, with the agent deployed the same way ([`crate::daemonset`])
//! and the pods running the test image
//! ([`Cluster::runnable_pod`]). Deleting the DaemonSet must give back each
//! node's CNI files (checked where the harness reaches nodes: kind, k3s).

use std::time::{Duration, Instant};

use istio_cni_kind::backend::kind::PrimaryCni;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::{NetworkConfigList, PodRef, Profile, RuntimeConf};
use istio_cni_kind::kubelet::worker::sandbox_id;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::error::Context;
use crate::failure;
use crate::scenario::{Only, Record, Scenario, Step, Stop, skip};
use crate::system::Install;

/// Istio 1.26's injected pod with Istio CNI (istio-validation, istio-proxy).
pub(crate) const INJECTED: &str = testkit::fixtures::INJECTED_CLASSIC;

/// How the agent installs its plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Chained,
    SingleConf,
    Standalone,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Chained, Mode::SingleConf, Mode::Standalone];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Chained => "chained",
            Mode::SingleConf => "single-conf",
            Mode::Standalone => "standalone",
        }
    }
}

/// Every `cni/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    for profile in Profile::ALL {
        for mode in Mode::ALL {
            let summary = match mode {
                Mode::Chained => format!("agent chains istio-cni into the {profile} .conflist; traffic is captured"),
                Mode::SingleConf => format!("agent converts the {profile} .conf into a .conflist; traffic is captured"),
                Mode::Standalone => {
                    format!("agent writes a standalone config beside {profile}; delegated to (as Multus), it captures")
                }
            };
            all.push(Scenario::new(
                format!("cni/{profile}/{}", mode.name()),
                summary,
                move |env, record| local(env, record, profile, mode),
            ));
        }
    }
    for cni in PrimaryCni::ALL.map(PrimaryCni::name) {
        all.push(
            Scenario::new(
                format!("cni/{cni}/chained"),
                format!("kind --cni {cni}: the agent's DaemonSet chains istio-cni into {cni}'s .conflist; traffic is captured; deleting it restores every node"),
                cluster_cni,
            )
            .only(Only::KindCni(cni)),
        );
    }
    all.push(
        Scenario::new(
            "cni/cluster/chained",
            "an existing cluster: the agent's DaemonSet chains istio-cni into the cluster's own primary CNI; traffic is captured",
            cluster_cni,
        )
        .only(Only::Existing),
    );
    all
}

/// The pods [`prove_interception`] creates, `(namespace, name)`.
const TRAFFIC_PODS: [(&str, &str); 5] = [
    ("default", "echo"),
    ("kube-system", "sys"),
    ("default", "hello"),
    ("default", "hello-1"),
    ("default", "caller"),
];

/// `cni/<kind cni>/chained`, `cni/cluster/chained`: a real cluster's
/// primary CNI, the agent as its DaemonSet, the traffic matrix on two of its
/// nodes.
fn cluster_cni(env: &Env, record: &mut Record) -> Step {
    if env.is_local() {
        return skip("the embedded cluster's primary CNIs are cni/<profile>/*");
    }
    let cluster = env.cluster(ClusterSpec {
        nodes: 2,
        ..ClusterSpec::default()
    })?;
    record.mark(format!("{} cluster ready", cluster.target()));
    let nodes = pod_nodes(&cluster)?;
    record.note(format!("pods on {} and {}", nodes[0], nodes[1]));
    // An existing cluster may hold them from an interrupted run.
    delete_pods(&cluster, &TRAFFIC_PODS);
    let agent = DaemonSetAgent::deploy(env, &cluster, &Install::defaults(), record)?;
    let result = agent
        .check_chained(record)
        .and_then(|()| prove_interception(&cluster, record, None, [&nodes[0], &nodes[1]]));
    diag_failure(&result, &agent, &cluster, record);
    delete_pods(&cluster, &TRAFFIC_PODS);
    result?;
    agent.uninstall(record)
}

/// Two nodes for the scenario's pods: workers first (no `NoSchedule`
/// taint), then the rest, by name.
fn pod_nodes(cluster: &Cluster) -> Result<[String; 2], Stop> {
    let nodes = cluster
        .block_on(Api::<Node>::all(cluster.client()).list(&ListParams::default()))
        .context("listing the nodes")?;
    let mut names: Vec<(bool, String)> = nodes
        .items
        .iter()
        .map(|n| {
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect == "NoSchedule"));
            (tainted, n.metadata.name.clone().unwrap_or_default())
        })
        .collect();
    names.sort();
    match names.as_slice() {
        [(_, a), (_, b), ..] => Ok([a.clone(), b.clone()]),
        _ => Err(Stop::Fail(format!(
            "the traffic matrix needs 2 nodes; the cluster has {}",
            names.len()
        ))),
    }
}

/// Deletes pods a scenario creates on a cluster that outlives it, and waits
/// (up to a minute) until they are gone, so the names are free again.
fn delete_pods(cluster: &Cluster, pods: &[(&str, &str)]) {
    let api = |ns: &str| Api::<Pod>::namespaced(cluster.client(), ns);
    for (ns, name) in pods {
        let _ = cluster.block_on(api(ns).delete(name, &DeleteParams::default()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (ns, name) in pods {
        while Instant::now() < deadline && cluster.block_on(api(ns).get_opt(name)).is_ok_and(|p| p.is_some()) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn local(env: &Env, record: &mut Record, profile: Profile, mode: Mode) -> Step {
    if !env.is_local() {
        return skip(format!(
            "the {profile} profile is the embedded cluster's; on {} cni/<its cni>/chained runs behind its own CNI",
            env.target.name()
        ));
    }
    if !profile.kernel_supports() {
        return skip("this kernel cannot create ipvlan links (CONFIG_IPVLAN)");
    }
    let cluster = env.cluster(ClusterSpec {
        nodes: 2,
        profile,
        single_conf: mode == Mode::SingleConf,
        ..ClusterSpec::default()
    })?;
    record.mark("cluster up (2 nodes)");
    let install = match mode {
        Mode::Standalone => Install::set(&["chained=false"]),
        _ => Install::defaults(),
    };
    let agent = DaemonSetAgent::deploy(env, &cluster, &install, record)?;
    let delegate = match mode {
        Mode::Standalone => Some(Delegate::STANDALONE),
        _ => None,
    };
    let result = check_install_shape(&agent, mode)
        .and_then(|()| prove_interception(&cluster, record, delegate, ["node-0", "node-1"]));
    diag_failure(&result, &agent, &cluster, record);
    result?;
    agent.uninstall(record)
}

/// The files the agent wrote, per mode, on every node.
fn check_install_shape(agent: &DaemonSetAgent, mode: Mode) -> Step {
    for (before, now) in agent.before()?.iter().zip(agent.files_now()?) {
        let node = &before.node;
        let original = before.agent_conf();
        let files = now.agent_conf();
        let ours = |name: &str| files.get(name).map(|b| String::from_utf8_lossy(b).into_owned());
        match mode {
            Mode::Chained => {
                ensure!(
                    original.keys().all(|n| files.contains_key(n)) && files.len() == original.len(),
                    "{node}: chained install changed the set of files: {:?} -> {:?}",
                    original.keys().collect::<Vec<_>>(),
                    files.keys().collect::<Vec<_>>()
                );
                let list = original.keys().find(|n| n.ends_with(".conflist"));
                let text = list.and_then(|n| ours(n)).unwrap_or_default();
                ensure!(
                    text.contains("\"istio-cni\""),
                    "{node}: the primary .conflist has no istio-cni entry:\n{text}"
                );
            }
            Mode::SingleConf => {
                let conf = original.keys().find(|n| n.ends_with(".conf"));
                let conf = conf.ok_or_else(|| Stop::Fail(format!("{node}: the primary was not a .conf")))?;
                let list = format!("{}list", conf);
                let text = ours(&list).unwrap_or_default();
                ensure!(
                    !files.contains_key(conf) && text.contains("\"istio-cni\""),
                    "{node}: expected {conf} converted into {list} with istio-cni; files now: {:?}",
                    files.keys().collect::<Vec<_>>()
                );
            }
            Mode::Standalone => {
                for (name, bytes) in original {
                    ensure!(
                        files.get(name) == Some(bytes),
                        "{node}: standalone install touched the primary {name}"
                    );
                }
                let text = ours(istio_cni_agent::install::STANDALONE_FILE).unwrap_or_default();
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                ensure!(
                    value["type"] == "istio-cni",
                    "{node}: no standalone {} of type istio-cni:\n{text}",
                    istio_cni_agent::install::STANDALONE_FILE
                );
                // What the runtime loads is still the primary alone.
                let first = files.keys().next().map(String::as_str).unwrap_or_default();
                ensure!(
                    first != istio_cni_agent::install::STANDALONE_FILE,
                    "{node}: the standalone file sorts first ({first}): the runtime would load it instead of the primary"
                );
            }
        }
    }
    Ok(())
}

/// A Multus stand-in: after each sandbox is up, ADD the network in `file` of
/// the node's agent config dir on it as an additional interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delegate {
    pub file: &'static str,
}

impl Delegate {
    pub const STANDALONE: Delegate = Delegate {
        file: istio_cni_agent::install::STANDALONE_FILE,
    };

    /// Runs the ADD on `ns/name`'s sandbox, as Multus would for a pod that
    /// asks for this network.
    pub fn add(
        self,
        cluster: &Cluster,
        conf_dir_of: impl Fn(&str) -> Option<std::path::PathBuf>,
        ns: &str,
        name: &str,
    ) -> Step {
        let local = cluster.local()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let (pod, netns) = loop {
            let pod = cluster
                .block_on(Api::<Pod>::namespaced(cluster.client(), ns).get_opt(name))
                .context(format!("reading pod {ns}/{name}"))?;
            // Multus runs its delegates after the primary's ADD: the pod has its IP.
            let has_ip = pod.as_ref().is_some_and(|p| !pod_ip(p).is_empty());
            if let (true, Some(pod), Some(netns)) = (has_ip, pod, local.pod_netns(ns, name)) {
                break (pod, netns);
            }
            ensure!(
                Instant::now() < deadline,
                "{ns}/{name} got no sandbox with an IP to delegate to"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let node = local
            .node(&node_name)
            .ok_or_else(|| Stop::Fail(format!("{ns}/{name} is on no known node ({node_name:?})")))?;
        let dir = conf_dir_of(&node_name).ok_or_else(|| Stop::Fail(format!("no config dir for {node_name}")))?;
        let path = dir.join(self.file);
        let bytes = std::fs::read(&path).map_err(|e| Stop::Fail(format!("{}: {e}", path.display())))?;
        let list =
            NetworkConfigList::from_conf_bytes(&bytes).map_err(|e| Stop::Fail(format!("{}: {e}", path.display())))?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pod_ref = PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.clone(),
        };
        let rt = RuntimeConf::for_pod(sandbox_id(&uid), &netns, "net1", &pod_ref);
        node.runner()
            .add(&list, &rt)
            .map_err(|e| Stop::Fail(format!("delegated ADD of {} for {ns}/{name}: {e}", self.file)))?;
        Ok(())
    }
}

/// The meshed pod from [`INJECTED`]: `name` in `ns` on `node`, with extra
/// annotations and containers (before `istio-proxy`, as the injector orders
/// them); without its validation init container when `validation` is false
/// (pods the plugin leaves alone would fail it, rightly).
pub(crate) fn meshed_pod(
    name: &str,
    ns: &str,
    node: &str,
    annotations: &[(&str, String)],
    containers: Vec<Value>,
    validation: bool,
) -> Result<Value, Stop> {
    let mut pod: Value = serde_yaml::from_str(INJECTED).context("the injected pod fixture")?;
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["labels"]["app"] = json!(name);
    pod["spec"]["nodeName"] = json!(node);
    for (k, v) in annotations {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    if !validation && let Some(spec) = pod["spec"].as_object_mut() {
        spec.remove("initContainers");
    }
    if let Some(list) = pod["spec"]["containers"].as_array_mut() {
        let at = list.len().saturating_sub(1);
        for (i, c) in containers.into_iter().enumerate() {
            list.insert(at + i, c);
        }
    }
    Ok(pod)
}

/// A plain (unmeshed) pod.
pub(crate) fn plain_pod(name: &str, ns: &str, node: &str, containers: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": containers}})
}

/// mesh-probe's echo server on `ports`.
pub(crate) fn echo_container(ports: &[u16]) -> Value {
    let mut args = vec!["echo".to_string()];
    for p in ports {
        args.extend(["--port".into(), p.to_string()]);
    }
    args.push("--no-udp".into());
    json!({"name": "echo", "image": "mesh-probe", "args": args})
}

/// mesh-probe's client, trying every target every 150 ms for the scenario's
/// life (a meshed pod's client may start before its proxy listens).
pub(crate) fn client_container(targets: &[String]) -> Value {
    let mut args = vec!["client".to_string()];
    for t in targets {
        args.extend(["--target".into(), t.clone()]);
    }
    args.extend(
        ["--count", "600", "--interval", "150ms", "--timeout", "1s"]
            .iter()
            .map(|s| s.to_string()),
    );
    json!({"name": "client", "image": "mesh-probe", "args": args})
}

/// Creates `pod` as the cluster's backend runs it ([`Cluster::runnable_pod`]).
pub(crate) fn create_pod(cluster: &Cluster, pod: &Value) -> Step {
    let pod: Pod = cluster.runnable_pod(&serde_json::from_value(pod.clone()).context("the pod as a Pod")?)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    cluster
        .block_on(Api::<Pod>::namespaced(cluster.client(), &ns).create(&PostParams::default(), &pod))
        .context(format!(
            "creating pod {ns}/{}",
            pod.metadata.name.as_deref().unwrap_or_default()
        ))?;
    Ok(())
}

/// Waits until `ns/name` is Running, marking it; returns the pod. On
/// timeout the reason names the containers that failed and the pod's rules.
pub(crate) fn wait_running(cluster: &Cluster, record: &mut Record, ns: &str, name: &str) -> Result<Pod, Stop> {
    // A real cluster may still be pulling images.
    let timeout = Duration::from_secs(if cluster.local().is_ok() { 30 } else { 180 });
    let pod = failure::wait_pod(cluster, record, (ns, name), "Running", timeout, |p| {
        testkit::pods::running(p) && p.status.as_ref().is_some_and(|s| s.pod_ip.is_some())
    })?;
    record.mark(format!("{ns}/{name} Running"));
    Ok(pod)
}

pub(crate) fn pod_ip(pod: &Pod) -> String {
    pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()
}

/// The pod's `istio-validation` init container finished with 0.
pub(crate) fn validation_passed(pod: &Pod) -> Step {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let inits = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .unwrap_or_default();
    let validation = inits.iter().find(|c| c.name == "istio-validation");
    let code = validation
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    ensure!(
        code == Some(0),
        "{name}: istio-validation did not pass: {}",
        failure::pod_state(pod)
    );
    Ok(())
}

/// `iptables-save` in the pod's netns, checked for Istio's chains; on a
/// failure the diff against `istio-cni render` goes to the details.
pub(crate) fn expect_chains(
    cluster: &Cluster,
    record: &mut Record,
    ns: &str,
    name: &str,
    present: bool,
) -> Result<String, Stop> {
    let save = cluster.iptables_save(ns, name)?;
    let has = save.contains("ISTIO_OUTPUT") && save.contains("ISTIO_INBOUND");
    let ok = if present { has } else { !save.contains("ISTIO") };
    if !ok {
        let pod = cluster
            .block_on(Api::<Pod>::namespaced(cluster.client(), ns).get(name))
            .context(format!("reading pod {ns}/{name}"))?;
        let seen = failure::rules_check(cluster, record, &pod);
        let want = if present {
            "ISTIO_OUTPUT and ISTIO_INBOUND chains"
        } else {
            "no ISTIO rules"
        };
        let seen = seen.unwrap_or_else(|| "the rules changed while being read".to_owned());
        return Err(Stop::Fail(failure::cap(
            &format!("{ns}/{name}: expected {want} in the pod netns; {seen}"),
            failure::REASON_MAX,
        )));
    }
    Ok(save)
}

/// The JSON lines of a container's log.
fn log_events(cluster: &Cluster, ns: &str, pod: &str, container: &str) -> Vec<Value> {
    cluster
        .pod_logs(ns, pod, container)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Who must answer a client.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// The app itself (not captured).
    Direct,
    /// The sidecar on `listener`, reporting `orig_dst` as the original destination.
    Proxy { listener: u16, orig_dst: String },
}

/// Waits until `ns/pod`'s client connected to `target`, then checks that
/// every answer it got there came from whom `answer` says.
pub(crate) fn expect_answer(
    cluster: &Cluster,
    record: &mut Record,
    ns: &str,
    pod: &str,
    target: &str,
    answer: &Answer,
) -> Step {
    record.waiting_for(format!("{ns}/{pod} to connect to {target}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let connected = loop {
        let connected: Vec<Value> = log_events(cluster, ns, pod, "client")
            .into_iter()
            .filter(|e| e["event"] == "connected" && e["target"] == target)
            .collect();
        if !connected.is_empty() {
            break connected;
        }
        if Instant::now() > deadline {
            let log = cluster.pod_logs(ns, pod, "client").unwrap_or_default();
            record.diag(format!("client log ({ns}/{pod})"), log);
            return Err(Stop::Fail(format!("{ns}/{pod} never connected to {target}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for e in &connected {
        let reply = &e["reply"];
        let ok = match answer {
            Answer::Direct => reply["server"] == "echo",
            Answer::Proxy { listener, orig_dst } => {
                reply["server"] == "proxy" && reply["listener"] == *listener && reply["orig_dst"] == orig_dst.as_str()
            }
        };
        ensure!(ok, "{ns}/{pod} -> {target}: expected {answer:?}, got {e}");
    }
    let how = match answer {
        Answer::Direct => "directly".to_string(),
        Answer::Proxy { listener, orig_dst } => format!("via the proxy's {listener} (orig dst {orig_dst})"),
    };
    record.mark(format!("{ns}/{pod} -> {target} answered {how}"));
    Ok(())
}

/// Waits until `ns/pod`'s istio-proxy logged a connection accepted on
/// `listener` matching `field == value`.
fn expect_proxy_accepted(cluster: &Cluster, ns: &str, pod: &str, listener: u16, field: &str, value: &str) -> Step {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = log_events(cluster, ns, pod, "istio-proxy").iter().any(|e| {
            e["event"] == "accepted"
                && e["listener"] == listener
                && e[field]
                    .as_str()
                    .is_some_and(|v| v == value || v.starts_with(&format!("{value}:")))
        });
        if seen {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{ns}/{pod}'s proxy never accepted on {listener} with {field} {value}:\n{}",
            cluster.pod_logs(ns, pod, "istio-proxy").unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The traffic matrix on a 2-node cluster whose nodes run the agent (see the
/// module docs). With `delegate`, every pod also gets that network as a
/// Multus-style additional attachment.
pub(crate) fn prove_interception(
    cluster: &Cluster,
    record: &mut Record,
    delegate: Option<Delegate>,
    [n0, n1]: [&str; 2],
) -> Step {
    let conf_dir_of = |node: &str| {
        let local = cluster.local().ok()?;
        local.node(node).map(|n| n.conf_dir())
    };
    let delegated = |record: &mut Record, ns: &str, name: &str| -> Step {
        if let Some(d) = delegate {
            d.add(cluster, conf_dir_of, ns, name)?;
            record.mark(format!("{ns}/{name}: delegated ADD of {}", d.file));
        }
        Ok(())
    };
    // An app on the other node, and a meshed-shaped pod in excluded kube-system.
    create_pod(
        cluster,
        &plain_pod("echo", "default", n1, vec![echo_container(&[8080, 9090])]),
    )?;
    delegated(record, "default", "echo")?;
    let echo_ip = pod_ip(&wait_running(cluster, record, "default", "echo")?);
    let echo = |port: u16| format!("{echo_ip}:{port}");
    let sys = meshed_pod(
        "sys",
        "kube-system",
        n1,
        &[],
        vec![client_container(&[echo(8080)])],
        false,
    )?;
    create_pod(cluster, &sys)?;
    delegated(record, "kube-system", "sys")?;
    let sys_ip = pod_ip(&wait_running(cluster, record, "kube-system", "sys")?);

    // The meshed pod: port 9090 and the sys pod's address are excluded.
    let hello = meshed_pod(
        "hello",
        "default",
        n0,
        &[
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "9090".into()),
            (
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                format!("{sys_ip}/32"),
            ),
        ],
        vec![client_container(&[echo(8080), echo(9090), format!("{sys_ip}:80")])],
        true,
    )?;
    create_pod(cluster, &hello)?;
    delegated(record, "default", "hello")?;
    let hello_pod = wait_running(cluster, record, "default", "hello")?;
    validation_passed(&hello_pod)?;
    record.mark("default/hello: istio-validation passed");
    let hello_ip = pod_ip(&hello_pod);
    let rules = expect_chains(cluster, record, "default", "hello", true)?;
    ensure!(
        rules.contains(&format!("{sys_ip}/32")) && rules.contains("9090"),
        "default/hello's rules lack the excluded CIDR {sys_ip}/32 or port 9090:\n{rules}"
    );
    // A meshed pod on the other node too: its node's plugin is installed.
    create_pod(cluster, &meshed_pod("hello-1", "default", n1, &[], Vec::new(), true)?)?;
    delegated(record, "default", "hello-1")?;
    validation_passed(&wait_running(cluster, record, "default", "hello-1")?)?;
    expect_chains(cluster, record, "default", "hello-1", true)?;

    // Outbound from the meshed pod.
    let to_proxy = |target: String| Answer::Proxy {
        listener: 15001,
        orig_dst: target,
    };
    expect_answer(cluster, record, "default", "hello", &echo(8080), &to_proxy(echo(8080)))?;
    expect_proxy_accepted(cluster, "default", "hello", 15001, "orig_dst", &echo(8080))?;
    expect_answer(cluster, record, "default", "hello", &echo(9090), &Answer::Direct)?;
    expect_answer(
        cluster,
        record,
        "default",
        "hello",
        &format!("{sys_ip}:80"),
        &Answer::Direct,
    )?;

    // Inbound to the meshed pod from an unmeshed one, which itself talks directly.
    let caller = plain_pod(
        "caller",
        "default",
        n1,
        vec![client_container(&[format!("{hello_ip}:80"), echo(8080)])],
    );
    create_pod(cluster, &caller)?;
    delegated(record, "default", "caller")?;
    let caller_ip = pod_ip(&wait_running(cluster, record, "default", "caller")?);
    let inbound = Answer::Proxy {
        listener: 15006,
        orig_dst: format!("{hello_ip}:80"),
    };
    expect_answer(
        cluster,
        record,
        "default",
        "caller",
        &format!("{hello_ip}:80"),
        &inbound,
    )?;
    expect_proxy_accepted(cluster, "default", "hello", 15006, "peer", &caller_ip)?;
    expect_answer(cluster, record, "default", "caller", &echo(8080), &Answer::Direct)?;
    expect_chains(cluster, record, "default", "caller", false)?;
    expect_chains(cluster, record, "default", "echo", false)?;

    // The excluded namespace: no rules, direct traffic.
    expect_chains(cluster, record, "kube-system", "sys", false)?;
    expect_answer(cluster, record, "kube-system", "sys", &echo(8080), &Answer::Direct)?;
    Ok(())
}

/// When `result` is a failure: the agent's logs and config diffs, and
/// every pod's state, rules and events, as diagnostics.
pub(crate) fn diag_failure(result: &Step, agent: &DaemonSetAgent, cluster: &Cluster, record: &mut Record) {
    if let Err(Stop::Fail(_)) = result {
        agent.diag(record);
        diag_pods(cluster, record);
    }
}

/// Every pod's state and rules, and the events (counted), as diagnostics.
pub(crate) fn diag_pods(cluster: &Cluster, record: &mut Record) {
    for ns in ["default", "kube-system"] {
        let pods = cluster
            .block_on(Api::<Pod>::namespaced(cluster.client(), ns).list(&ListParams::default()))
            .map(|l| l.items)
            .unwrap_or_default();
        let mut states = String::new();
        let mut rules = String::new();
        for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            states.push_str(&format!("{ns}/{name}: {}\n", failure::pod_state(pod)));
            let save = cluster
                .iptables_save(ns, &name)
                .map(|s| failure::normalize_save(&s))
                .unwrap_or_else(|e| format!("(no rules: {e})\n"));
            let save = if save.is_empty() { "(none)\n".to_owned() } else { save };
            rules.push_str(&format!("== {ns}/{name}\n{save}"));
        }
        if !pods.is_empty() {
            record.diag(format!("pods ({ns})"), states);
            record.diag(format!("rules in each pod netns ({ns})"), rules);
        }
        record.diag(format!("events ({ns})"), failure::pod_events(cluster, ns, None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_profiles_and_modes() {
        let all = scenarios();
        let (remote, local): (Vec<_>, Vec<_>) = all.into_iter().partition(|s| s.only != Only::Any);
        let names: Vec<String> = local.into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 4 * 3);
        for name in ["cni/ptp/chained", "cni/bridge/single-conf", "cni/ipvlan/standalone"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
        let remote: Vec<String> = remote.into_iter().map(|s| s.name).collect();
        assert_eq!(
            remote,
            [
                "cni/kindnet/chained",
                "cni/calico/chained",
                "cni/cilium/chained",
                "cni/flannel/chained",
                "cni/cluster/chained"
            ]
        );
    }

    #[test]
    fn the_meshed_pod_keeps_istio_proxy_last() {
        let pod = meshed_pod(
            "p",
            "ns",
            "node-0",
            &[("a", "b".into())],
            vec![client_container(&["1.2.3.4:80".into()])],
            false,
        )
        .unwrap();
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["hello", "client", "istio-proxy"]);
        assert!(pod["spec"].get("initContainers").is_none());
        assert_eq!(pod["metadata"]["annotations"]["a"], "b");
        assert_eq!(pod["spec"]["nodeName"], "node-0");
    }
}
