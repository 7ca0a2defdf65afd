//! The repair controller against the race it exists for, on the embedded
//! cluster: a node whose CNI chain lacks `istio-cni` (the agent has not
//! installed it yet, or removed it on shutdown) gets an injected pod; its
//! `istio-validation` init container (the real validator, `istio-cni
//! validate`) exits 126 and crash-loops. Then the controller starts — with a
//! kube client whose token belongs to a service account bound only to the
//! mode's ClusterRole, as the chart grants it — and:
//!
//! * repair: programs the pod netns found through `/proc`; validation passes
//!   on its next try and the pod runs, its app container never restarted;
//! * delete: deletes the pod (preconditions) with a `DeleteBrokenPod` event;
//! * label: labels it `cni.istio.io/uninitialized=true` through pods/status
//!   with a `LabelBrokenPod` event;
//! * delete without the delete rule: 403, counted as a failure, pod intact;
//! * label without the pods/status rule: the same, and the agent says so.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use clap::Parser;
use istio_cni_agent::config::RepairSettings;
use istio_cni_agent::metrics::{Metrics, RepairResult, RepairType};
use istio_cni_agent::repair::{self, RepairController};
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use testkit::pods::validation;
use testkit::{Need, gate, workspace_bin};

/// One cluster at a time: clusters reuse the same pod CIDR, and on a host
/// without writable cgroups two pods with one IP could confuse the netns
/// search; it also keeps the shared machine's load down.
static SERIAL: Mutex<()> = Mutex::new(());

/// Gates `test` on root, then waits for its turn; `None` after the skip.
fn serial(test: &str) -> Option<MutexGuard<'static, ()>> {
    gate(test, &[Need::Root]).then(|| SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

const NODE: &str = "node-0";
const SA_NS: &str = "istio-system";
const SA: &str = "istio-cni";

/// Istio's images as the harness runs them (see [`ImageTable::istio`]).
fn images() -> ImageTable {
    ImageTable::istio(
        workspace_bin("istio-cni", "istio-cni"),
        workspace_bin("mesh-probe", "istio-cni-kind"),
    )
}

/// A node whose chain is only the primary CNI: every pod races the install.
fn racing_cluster() -> Cluster {
    Cluster::create(ClusterSpec {
        images: images(),
        backoff: Backoff {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(1),
        },
        ..ClusterSpec::default()
    })
    .unwrap()
}

/// The pod Istio's injector makes with CNI on (validation first, proxy
/// last), with the validator's probe timeout cut to 1 s via its env.
fn injected_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"app": name, "security.istio.io/tlsMode": "istio"},
            "annotations": {
                "sidecar.istio.io/interceptionMode": "REDIRECT",
                "sidecar.istio.io/status": "{\"initContainers\":[\"istio-validation\"],\"containers\":[\"istio-proxy\"],\"volumes\":[],\"imagePullSecrets\":null,\"revision\":\"default\"}",
                "traffic.sidecar.istio.io/excludeInboundPorts": "15020",
                "traffic.sidecar.istio.io/includeInboundPorts": "*",
                "traffic.sidecar.istio.io/includeOutboundIPRanges": "*"}},
        "spec": {
            "initContainers": [{
                "name": "istio-validation", "image": "docker.io/istio/proxyv2:1.26.0",
                "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                         "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
                         "--log_output_level=default:info", "--run-validation", "--skip-rule-apply"],
                "env": [{"name": "PROBE_TIMEOUT", "value": "1s"}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                    "privileged": false, "readOnlyRootFilesystem": true, "runAsGroup": 1337,
                    "runAsNonRoot": true, "runAsUser": 1337}}],
            "containers": [
                {"name": "hello", "image": "fake.docker.io/google-samples/hello-go-gke:1.0",
                 "ports": [{"containerPort": 80, "name": "http"}]},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.26.0",
                 "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                 "securityContext": {"runAsGroup": 1337, "runAsNonRoot": true, "runAsUser": 1337}}]}
    }))
    .unwrap()
}

/// Creates the pod and waits until it is broken as the controller sees it:
/// validation failed with 126 and was restarted at least once.
fn create_broken_pod(cluster: &Cluster, name: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(api.create(&PostParams::default(), &injected_pod(name)))
        .unwrap();
    let pod = cluster
        .wait_for_pod("default", name, Duration::from_secs(40), |p| {
            validation(p)
                .and_then(|v| v.last_state.as_ref()?.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 126)
        })
        .unwrap();
    let log = cluster
        .pod_logs("default", name, "istio-validation")
        .unwrap_or_default();
    assert!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"),
        "the race: no rules, so the pod cannot start; validator log:\n{log}"
    );
    pod
}

/// The chart's `istio-cni-repair-role` for a mode (docs/repair.md#rbac), bound to the
/// agent's service account; returns a client with that account's token.
fn client_for(cluster: &Cluster, rt: &tokio::runtime::Runtime, extra_rules: serde_json::Value) -> kube::Client {
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}),
        json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["watch", "get", "list"]}),
    ];
    rules.extend(extra_rules.as_array().cloned().unwrap_or_default());
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "istio-cni-repair-role"}, "rules": rules}))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "istio-cni-repair-rolebinding"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-cni-repair-role"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": SA_NS}]}))
    .unwrap();
    cluster
        .block_on(Api::<ClusterRole>::all(cluster.client()).create(&PostParams::default(), &role))
        .unwrap();
    cluster
        .block_on(Api::<ClusterRoleBinding>::all(cluster.client()).create(&PostParams::default(), &binding))
        .unwrap();
    let api_server = cluster.local().unwrap().api();
    let token = api_server.mint_token(SA_NS, SA);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&api_server.kubeconfig(&token)).unwrap();
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    })
}

/// Istio's settings for `mode` on this node, reading this host's `/proc`.
fn settings(mode_flag: &str) -> RepairSettings {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        repair: RepairSettings,
    }
    Cli::try_parse_from([
        "agent",
        mode_flag,
        "true",
        "--repair-node-name",
        NODE,
        "--repair-host-proc",
        "/proc",
    ])
    .unwrap()
    .repair
}

struct Running {
    rt: tokio::runtime::Runtime,
    controller: Option<RepairController>,
    metrics: Metrics,
    started: Instant,
}

impl Running {
    fn start(rt: tokio::runtime::Runtime, client: kube::Client, mode_flag: &str) -> Running {
        Self::start_with(rt, client, mode_flag, false)
    }

    fn start_with(
        rt: tokio::runtime::Runtime,
        client: kube::Client,
        mode_flag: &str,
        native_nftables: bool,
    ) -> Running {
        let metrics = Metrics::new();
        let started = Instant::now();
        let controller = rt
            .block_on(repair::start(
                client,
                settings(mode_flag),
                native_nftables,
                metrics.clone(),
            ))
            .unwrap();
        Running {
            rt,
            controller: Some(controller),
            metrics,
            started,
        }
    }

    fn wait_for_metric(&self, kind: RepairType, result: RepairResult, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.metrics.repaired_count(kind, result);
            if n > 0 || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        if let Some(c) = self.controller.take() {
            self.rt.block_on(c.shutdown());
        }
    }

    /// Stops the controller, then deletes its cluster.
    fn finish(self, cluster: Cluster) {
        self.stop();
        cluster.delete().unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The Warning events of our component about `pod`.
fn repair_events(cluster: &Cluster, pod: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(cluster.client(), "default");
    let list = cluster.block_on(api.list(&ListParams::default())).unwrap();
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .filter(|e| e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("cni-repair"))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 10 s for a Warning event of the repair controller about
/// `hello` whose (reason, message) satisfies `matches`.
fn wait_for_event(cluster: &Cluster, what: &str, matches: impl Fn(&str, &str) -> bool) {
    wait_until(what, Duration::from_secs(10), || {
        repair_events(cluster, "hello")
            .iter()
            .any(|(reason, message)| matches(reason, message))
    });
}

/// The racing cluster with the broken pod `hello`, then the controller in
/// `mode_flag` whose client has the chart's common rules and `extra_rules`.
fn broken_pod_then_controller(mode_flag: &str, extra_rules: serde_json::Value) -> (Cluster, Pod, Running) {
    let cluster = racing_cluster();
    let broken = create_broken_pod(&cluster, "hello");
    let rt = runtime();
    let client = client_for(&cluster, &rt, extra_rules);
    let running = Running::start(rt, client, mode_flag);
    (cluster, broken, running)
}

/// A mode without its RBAC rule (only the common rules): the controller
/// counts a `kind` failure and writes a `reason` event whose message starts
/// with `message` and says why (forbidden).
fn without_its_rule(mode_flag: &str, kind: RepairType, reason: &str, message: &str) -> (Cluster, Pod, Running) {
    let (cluster, broken, running) = broken_pod_then_controller(mode_flag, json!([]));
    assert!(running.wait_for_metric(kind, RepairResult::fail, Duration::from_secs(20)) >= 1);
    wait_for_event(&cluster, &format!("the failed {reason} event"), |r, m| {
        r == reason && m.starts_with(message) && m.contains("forbidden")
    });
    (cluster, broken, running)
}

/// The pod `hello` now; the same pod as `broken`.
fn intact(cluster: &Cluster, broken: &Pod) -> Pod {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let still = cluster.block_on(api.get("hello")).unwrap();
    assert_eq!(still.metadata.uid, broken.metadata.uid, "the pod is intact");
    still
}

/// Repair mode end to end; rules are checked with `check_rules` in the pod netns.
fn repair_in_place(native_nftables: bool) {
    let cluster = racing_cluster();
    let broken = create_broken_pod(&cluster, "hello");
    let save = cluster.in_pod("default", "hello", &["iptables-nft-save"]).unwrap();
    assert!(!save.contains("ISTIO"), "no rules before the repair:\n{save}");

    let rt = runtime();
    // Repair mode needs no rule beyond the common ones.
    let client = client_for(&cluster, &rt, json!([]));
    let running = Running::start_with(rt, client, "--repair-repair-pods", native_nftables);
    let programmed = running.wait_for_metric(RepairType::repair, RepairResult::success, Duration::from_secs(20));
    eprintln!(
        "repair (native_nftables={native_nftables}): netns programmed {:?} after the controller started",
        running.started.elapsed()
    );
    assert_eq!(programmed, 1, "programmed once, however many status updates follow");
    let pod = cluster
        .wait_for_pod("default", "hello", Duration::from_secs(30), |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nvalidator log: {:?}",
                cluster.pod_logs("default", "hello", "istio-validation")
            )
        });
    let time_to_running = running.started.elapsed();
    eprintln!(
        "repair (native_nftables={native_nftables}): pod Running {time_to_running:?} after the controller started"
    );

    assert_eq!(pod.metadata.uid, broken.metadata.uid, "the same pod, repaired in place");
    let v = validation(&pod).unwrap();
    let done = v.state.as_ref().and_then(|s| s.terminated.as_ref()).unwrap();
    assert_eq!(done.exit_code, 0, "validation passed on its next try");
    assert!(v.restart_count >= 1);
    let log = cluster
        .pod_logs("default", "hello", "istio-validation")
        .unwrap_or_default();
    assert!(log.contains("Validation passed"), "{log}");
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap();
    let app = statuses.iter().find(|c| c.name == "hello").unwrap();
    assert_eq!(app.restart_count, 0, "the app container never restarted");
    if native_nftables {
        let ruleset = cluster.in_pod("default", "hello", &["nft", "list", "ruleset"]).unwrap();
        assert!(
            ruleset.contains("table inet istio-proxy-nat") && ruleset.contains("15001"),
            "nft rules in the pod netns:\n{ruleset}"
        );
        let save = cluster.in_pod("default", "hello", &["iptables-nft-save"]).unwrap();
        assert!(
            !save.contains("-A ISTIO_OUTPUT"),
            "no iptables rules with NATIVE_NFTABLES:\n{save}"
        );
    } else {
        let save = cluster.in_pod("default", "hello", &["iptables-nft-save"]).unwrap();
        assert!(save.contains("-A ISTIO_OUTPUT"), "rules in the pod netns:\n{save}");
    }
    assert!(
        running
            .metrics
            .repaired_count(RepairType::repair, RepairResult::success)
            >= 1
    );
    assert_eq!(
        running.metrics.repaired_count(RepairType::repair, RepairResult::fail),
        0
    );
    assert!(
        repair_events(&cluster, "hello").is_empty(),
        "repair mode writes nothing"
    );
    running.finish(cluster);
}

#[test]
fn repair_mode_programs_the_racing_pod_in_place() {
    if let Some(_serial) = serial("repair_mode_programs_the_racing_pod_in_place") {
        repair_in_place(false);
    }
}

#[test]
fn repair_mode_with_native_nftables_programs_nft_rules() {
    if let Some(_serial) = serial("repair_mode_with_native_nftables_programs_nft_rules") {
        repair_in_place(true);
    }
}

#[test]
fn delete_mode_deletes_the_racing_pod_with_an_event() {
    let Some(_serial) = serial("delete_mode_deletes_the_racing_pod_with_an_event") else {
        return;
    };
    let (cluster, _, running) = broken_pod_then_controller(
        "--repair-delete-pods",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]),
    );
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    wait_until("the pod's deletion", Duration::from_secs(20), || {
        cluster.block_on(api.get_opt("hello")).unwrap().is_none()
    });
    eprintln!(
        "delete: pod gone {:?} after the controller started",
        running.started.elapsed()
    );
    // The metric is counted when the DELETE call returns, which can be just
    // after the pod disappears from the API.
    assert!(running.wait_for_metric(RepairType::delete, RepairResult::success, Duration::from_secs(5)) >= 1);
    wait_for_event(&cluster, "the DeleteBrokenPod event", |reason, message| {
        (reason, message) == ("DeleteBrokenPod", "pod detected as broken, deleted")
    });
    running.finish(cluster);
}

/// A broken pod in label mode, with the chart's label-mode role.
fn label_mode() -> (Cluster, Running) {
    let (cluster, _, running) = broken_pod_then_controller(
        "--repair-label-pods",
        json!([{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]}]),
    );
    (cluster, running)
}

#[test]
fn label_mode_patches_pods_status_with_an_event() {
    let Some(_serial) = serial("label_mode_patches_pods_status_with_an_event") else {
        return;
    };
    let (cluster, running) = label_mode();
    // The role allows patching pods/status only, so success proves the
    // patch went to the subresource.
    assert!(
        running.wait_for_metric(RepairType::label, RepairResult::success, Duration::from_secs(20)) >= 1,
        "label fail count: {}",
        running.metrics.repaired_count(RepairType::label, RepairResult::fail)
    );
    assert_eq!(running.metrics.repaired_count(RepairType::label, RepairResult::fail), 0);
    wait_for_event(&cluster, "the LabelBrokenPod event", |reason, message| {
        (reason, message) == ("LabelBrokenPod", "pod detected as broken, labeled")
    });
    running.finish(cluster);
}

/// The label written through pods/status is on the pod (as on a real API
/// server), and a labelled pod is skipped afterwards.
#[test]
fn label_mode_label_is_visible_then_the_pod_is_skipped() {
    let Some(_serial) = serial("label_mode_label_is_visible_then_the_pod_is_skipped") else {
        return;
    };
    let (cluster, running) = label_mode();
    let pod = cluster
        .wait_for_pod("default", "hello", Duration::from_secs(20), |p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("cni.istio.io/uninitialized"))
                .is_some_and(|v| v == "true")
        })
        .unwrap();
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap().get("app").map(String::as_str),
        Some("hello"),
        "a merge patch keeps the other labels"
    );
    // The pod keeps crash-looping; its next status update finds the label.
    assert!(running.wait_for_metric(RepairType::label, RepairResult::skip, Duration::from_secs(20)) >= 1);
    assert_eq!(
        running.metrics.repaired_count(RepairType::label, RepairResult::success),
        1
    );
    running.finish(cluster);
}

#[test]
fn delete_mode_without_its_rbac_rule_reports_forbidden() {
    let Some(_serial) = serial("delete_mode_without_its_rbac_rule_reports_forbidden") else {
        return;
    };
    // Only the common rules: the chart's role for another mode.
    let (cluster, broken, running) = without_its_rule(
        "--repair-delete-pods",
        RepairType::delete,
        "DeleteBrokenPod",
        "pod detected as broken, but failed to delete",
    );
    assert_eq!(
        running
            .metrics
            .repaired_count(RepairType::delete, RepairResult::success),
        0
    );
    intact(&cluster, &broken);
    running.finish(cluster);
}

/// The agent's log lines, from one subscriber for the whole test binary
/// (installed by the first test that asks).
static AGENT_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct AgentLog;

impl std::io::Write for AgentLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        AGENT_LOG
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_agent_log() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| AgentLog)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init()
            .expect("the only tracing subscriber of this test binary");
    });
}

fn agent_log() -> String {
    String::from_utf8_lossy(&AGENT_LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

#[test]
fn label_mode_without_its_rbac_rule_reports_forbidden() {
    let Some(_serial) = serial("label_mode_without_its_rbac_rule_reports_forbidden") else {
        return;
    };
    capture_agent_log();
    // The label-mode role without its pods/status rule.
    let (cluster, broken, running) = without_its_rule(
        "--repair-label-pods",
        RepairType::label,
        "LabelBrokenPod",
        "pod detected as broken, but failed to label",
    );
    // Counted under the label type's fail result, nothing else.
    let text = running.metrics.encode();
    let counted = |kind: &str, result: &str| {
        let series = format!("istio_cni_repair_pods_repaired_total{{type=\"{kind}\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    assert!(counted("label", "fail") >= 1, "{text}");
    for (kind, result) in [
        ("label", "success"),
        ("label", "skip"),
        ("delete", "fail"),
        ("repair", "fail"),
    ] {
        assert_eq!(counted(kind, result), 0, "{kind}/{result}:\n{text}");
    }
    // The log says which permission is missing, for which pod.
    let log = agent_log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("may not patch pods/status in label mode")
            && l.contains("default/hello")
            && l.contains("forbidden")),
        "agent log:\n{log}"
    );
    // The pod is untouched: the same pod, without the label.
    let still = intact(&cluster, &broken);
    assert!(
        !still
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("cni.istio.io/uninitialized"),
        "not labelled"
    );
    running.finish(cluster);
}
