//! Kubelet probes and events on a one-node local cluster, with mesh-probe's
//! `http` mode as the app: an httpGet readiness probe (with a header) that
//! gates Ready and takes it away again; a failing liveness probe restarting
//! the container, its Killing and Unhealthy events counted on one Event
//! each (`kubectl get events` shows `(xN over ...)`); exec probes inside the
//! pod's netns and with a timeout; tcpSocket and HTTPS probes; a startup
//! probe holding readiness back.
//!
//! Needs root and the CNI plugins (skips with `SKIP:` otherwise; panics
//! under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`); kubectl for the `get events`
//! step (`. ci/env`).

mod workload_support;

use std::collections::BTreeMap;

use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use testkit::{Kubectl, Need, Scratch};
use workload_support::{WAIT, mesh_probe, ptp_spec, wait_pod, watch_until};

const PROBE: &str = env!("CARGO_BIN_EXE_mesh-probe");
const NEEDS: &[Need] = &[Need::Root, Need::Tool("ip"), Need::CniPlugins];
const NEEDS_KUBECTL: &[Need] = &[Need::Root, Need::Tool("ip"), Need::CniPlugins, Need::Tool("kubectl")];

fn cluster() -> Cluster {
    Cluster::create(ptp_spec(1, mesh_probe())).unwrap()
}

/// A pod of one `mesh-probe http` container named `app` with `probes`.
fn pod(name: &str, args: &[&str], probes: serde_json::Value) -> Pod {
    let mut container = json!({"name": "app", "image": "mesh-probe", "args": args,
        "ports": [{"name": "http", "containerPort": 8080}]});
    container
        .as_object_mut()
        .unwrap()
        .extend(probes.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [container]}
    }))
    .unwrap()
}

fn create(cluster: &Cluster, p: &Pod) {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster.block_on(pods.create(&PostParams::default(), p)).unwrap();
}

fn app(p: &Pod) -> Option<ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "app")
        .cloned()
}

fn condition(p: &Pod, kind: &str) -> bool {
    let conds = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    conds.iter().any(|c| c.type_ == kind && c.status == "True")
}

fn running(p: &Pod) -> bool {
    app(p).is_some_and(|c| c.state.is_some_and(|s| s.running.is_some()))
}

/// The events of pod `name`, by reason, once `done` holds for them
/// (watched; only the latest version of each Event is kept).
fn wait_events(
    cluster: &Cluster,
    name: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, Vec<Event>>) -> bool,
) -> BTreeMap<String, Vec<Event>> {
    let api: Api<Event> = Api::namespaced(cluster.client(), "default");
    let wait = watch_until(api, watcher::Config::default(), "events", |all| {
        let mut by_reason: BTreeMap<String, Vec<Event>> = BTreeMap::new();
        for e in all.values().filter(|e| e.involved_object.name.as_deref() == Some(name)) {
            by_reason
                .entry(e.reason.clone().unwrap_or_default())
                .or_default()
                .push(e.clone());
        }
        done(&by_reason).then_some(by_reason)
    });
    cluster
        .block_on(async { tokio::time::timeout(WAIT, wait).await })
        .unwrap_or_else(|_| panic!("pod {name}: events: {what}: timed out"))
}

/// The one Event of `reason` whose message is `message`, with its count.
fn counted(events: &BTreeMap<String, Vec<Event>>, reason: &str, message: &str) -> Option<i32> {
    let same: Vec<&Event> = events
        .get(reason)?
        .iter()
        .filter(|e| e.message.as_deref() == Some(message))
        .collect();
    assert!(same.len() <= 1, "repeats make one Event, not {}: {same:#?}", same.len());
    same.first().map(|e| e.count.unwrap_or(1))
}

/// Flips `/ready` of the app in pod `name` (`pass` or `fail`), from inside
/// the pod's network namespace.
fn flip(cluster: &Cluster, name: &str, to: &str) {
    let request = format!("GET /ready/{to} HTTP/1.1\r\nHost: app\r\n\r\n");
    let out = cluster
        .in_pod(
            "default",
            name,
            &[
                PROBE,
                "client",
                "--target",
                "127.0.0.1:8080",
                "--timeout",
                "5s",
                "--payload",
                &request,
            ],
        )
        .unwrap();
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
}

#[test]
fn an_http_readiness_probe_gates_ready_and_a_failing_one_takes_it_away() {
    testkit::gate_or_return!(NEEDS);
    let cluster = cluster();
    let probes = json!({"readinessProbe": {"httpGet": {"path": "/ready", "port": "http",
        "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}, "periodSeconds": 1, "failureThreshold": 2}});
    let args = [
        "http",
        "--port",
        "8080",
        "--start-unready",
        "--require-header",
        "X-Probe=yes",
    ];
    create(&cluster, &pod("web", &args, probes));

    // Running, probed and failing: not ready.
    let failed = "Readiness probe failed: HTTP probe failed with statuscode: 503";
    wait_events(&cluster, "web", "a failed readiness probe", |ev| {
        counted(ev, "Unhealthy", failed).is_some()
    });
    let p = wait_pod(&cluster, "web", "running", running);
    let c = app(&p).unwrap();
    assert_eq!((c.started, c.ready), (Some(true), false), "{c:#?}");
    assert!(!condition(&p, "Ready") && !condition(&p, "ContainersReady"));
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));

    // Passing: Ready. The app saw kubelet's requests, with the header.
    flip(&cluster, "web", "pass");
    let p = wait_pod(&cluster, "web", "Ready", |p| condition(p, "Ready"));
    assert!(app(&p).unwrap().ready && condition(&p, "ContainersReady"));
    let log = cluster.pod_logs("default", "web", "app").unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"path\":\"/ready\"") && l.contains("\"status\":200") && l.contains("kube-probe/")),
        "{log}"
    );

    // Failing again: not Ready, still running, not restarted.
    flip(&cluster, "web", "fail");
    let p = wait_pod(&cluster, "web", "not Ready", |p| !condition(p, "Ready"));
    let c = app(&p).unwrap();
    assert!(!c.ready && running(&p) && c.restart_count == 0, "{c:#?}");
    assert!(!condition(&p, "ContainersReady"));
    cluster.delete().unwrap();
}

#[test]
fn a_failing_liveness_probe_restarts_the_container_and_events_count_repeats() {
    let test = testkit::test_name!();
    testkit::gate_or_return!(NEEDS_KUBECTL);
    let scratch = Scratch::new("probes-kubectl");
    let cluster = cluster();
    let kubectl = Kubectl::new(test, cluster.kubeconfig_path(), scratch.path()).expect("kubectl, checked by the gate");
    let probes = json!({"livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1}});
    create(
        &cluster,
        &pod("sick", &["http", "--port", "8080", "--fail-healthz"], probes),
    );

    let p = wait_pod(&cluster, "sick", "restarted twice", |p| {
        app(p).is_some_and(|c| c.restart_count >= 2)
    });
    let c = app(&p).unwrap();
    // mesh-probe exits 0 on the SIGTERM kubelet sends first.
    let last = c.last_state.and_then(|s| s.terminated).expect("the killed instance");
    assert_eq!(last.exit_code, 0, "{last:#?}");

    let unhealthy = "Liveness probe failed: HTTP probe failed with statuscode: 500";
    let killing = "Container app failed liveness probe, will be restarted";
    let events = wait_events(&cluster, "sick", "counted repeats", |ev| {
        ev.contains_key("Scheduled")
            && counted(ev, "Unhealthy", unhealthy).is_some_and(|n| n >= 2)
            && counted(ev, "Killing", killing).is_some_and(|n| n >= 2)
    });
    let scheduled = &events["Scheduled"][0];
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/sick to node-0")
    );
    assert_eq!(
        scheduled.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("default-scheduler")
    );
    // (A probe that ran before the app listened failed otherwise: another
    // message, another Unhealthy Event.)
    let one_unhealthy = events["Unhealthy"]
        .iter()
        .find(|e| e.message.as_deref() == Some(unhealthy));
    for reason in ["Pulled", "Created", "Started", "Killing"] {
        let all = &events[reason];
        assert_eq!(all.len(), 1, "one {reason} Event, counted: {all:#?}");
    }
    let counted_events = ["Pulled", "Created", "Started", "Killing"].map(|r| &events[r][0]);
    for e in counted_events.into_iter().chain(one_unhealthy) {
        assert!(e.count.unwrap_or(1) >= 2, "{e:#?}");
        assert!(e.first_timestamp <= e.last_timestamp, "{e:#?}");
        assert_eq!(e.source.as_ref().and_then(|s| s.component.as_deref()), Some("kubelet"));
        assert_eq!(e.involved_object.uid.as_deref(), p.meta().uid.as_deref());
    }
    assert!(
        events["Unhealthy"]
            .iter()
            .all(|e| e.type_.as_deref() == Some("Warning"))
    );
    assert_eq!(events["Killing"][0].type_.as_deref(), Some("Normal"));

    // kubectl shows the counts.
    let out = kubectl.ok(&[
        "-n",
        "default",
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=sick",
    ]);
    let row = out
        .lines()
        .find(|l| l.contains("Killing"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("(x") && row.contains(" over "), "{out}");
    let out = kubectl.ok(&["-n", "default", "describe", "pod", "sick"]);
    let row = out
        .lines()
        .find(|l| l.contains("Unhealthy") && l.contains("statuscode: 500"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("(x"), "{out}");
    cluster.delete().unwrap();
}

#[test]
fn exec_tcp_and_https_probes() {
    testkit::gate_or_return!(NEEDS);
    let cluster = cluster();
    // Ready needs all three: an HTTPS startup probe (certificate not
    // verified), then an exec probe that sees the container's own files (a
    // volume at /probe-marker) and reaches 127.0.0.1:8080, which only the
    // pod's own netns serves, and a tcpSocket liveness probe.
    let check = format!("test -d /probe-marker && exec {PROBE} client --target 127.0.0.1:8080 --timeout 1s");
    let good = json!({
        "startupProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTPS"}, "periodSeconds": 1},
        "readinessProbe": {"exec": {"command": ["sh", "-c", check]}, "periodSeconds": 1, "timeoutSeconds": 5},
        "volumeMounts": [{"name": "marker", "mountPath": "/probe-marker"}],
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
    });
    let mut good = pod("good", &["http", "--port", "8080", "--tls"], good);
    good.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({"name": "marker", "emptyDir": {}})).unwrap(),
    ]);
    create(&cluster, &good);
    // A tcpSocket probe to a closed port, and an exec probe overrunning its timeout.
    let bad = json!({
        "readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1},
        "livenessProbe": {"exec": {"command": ["sleep", "30"]}, "timeoutSeconds": 1, "periodSeconds": 1,
            "failureThreshold": 1},
    });
    create(&cluster, &pod("bad", &["http", "--port", "8080"], bad));

    let p = wait_pod(&cluster, "good", "Ready", |p| condition(p, "Ready"));
    let c = app(&p).unwrap();
    assert_eq!((c.started, c.ready), (Some(true), true));

    let bad_pod = wait_pod(&cluster, "bad", "an IP", |p| {
        p.status.as_ref().is_some_and(|s| s.pod_ip.is_some())
    });
    let ip = bad_pod.status.unwrap().pod_ip.unwrap();
    let refused = format!("Readiness probe failed: dial tcp {ip}:9999: connect: connection refused");
    let timed_out = "Liveness probe failed: command \"sleep 30\" timed out";
    let events = wait_events(&cluster, "bad", "tcp and exec failures", |ev| {
        counted(ev, "Unhealthy", &refused).is_some()
            && counted(ev, "Unhealthy", timed_out).is_some()
            && counted(ev, "Killing", "Container app failed liveness probe, will be restarted").is_some()
    });
    assert!(events.contains_key("Killing"));
    let p = wait_pod(&cluster, "bad", "restarted", |p| {
        app(p).is_some_and(|c| c.restart_count >= 1)
    });
    assert!(!condition(&p, "Ready"));
    cluster.delete().unwrap();
}

#[test]
fn a_startup_probe_holds_readiness_and_liveness_until_it_passes() {
    testkit::gate_or_return!(NEEDS);
    let cluster = cluster();
    // The tcpSocket readiness probe would pass at once, and the liveness
    // probe (on /ready, like the startup probe) would kill the container at
    // its first failure: neither may run before the startup probe passes.
    let probes = json!({
        "startupProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1000},
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
    });
    create(
        &cluster,
        &pod("slow", &["http", "--port", "8080", "--start-unready"], probes),
    );
    let failed = "Startup probe failed: HTTP probe failed with statuscode: 503";
    let events = wait_events(&cluster, "slow", "repeated startup failures", |ev| {
        counted(ev, "Unhealthy", failed).is_some_and(|n| n >= 3)
    });
    assert!(
        !events.contains_key("Killing")
            && events["Unhealthy"].iter().all(|e| e
                .message
                .as_deref()
                .unwrap_or_default()
                .starts_with("Startup probe failed: ")),
        "neither readiness nor liveness ran before startup passed: {events:#?}"
    );
    let p = wait_pod(&cluster, "slow", "running", running);
    let c = app(&p).unwrap();
    assert_eq!((c.started, c.ready, c.restart_count), (Some(false), false, 0), "{c:#?}");
    assert!(!condition(&p, "Ready"));

    // Startup passes: readiness takes over, and liveness passes too.
    flip(&cluster, "slow", "pass");
    let p = wait_pod(&cluster, "slow", "started and Ready", |p| condition(p, "Ready"));
    let c = app(&p).unwrap();
    assert_eq!((c.started, c.ready, c.restart_count), (Some(true), true, 0), "{c:#?}");
    cluster.delete().unwrap();
}
