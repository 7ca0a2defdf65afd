//! Workload features a user meets through kubectl, each on its own local
//! cluster: the taint manager (`NoExecute` taints evict pods that do not
//! tolerate them, `tolerationSeconds` honoured), ConfigMap and Secret
//! volumes following their objects in a running container, httpGet preStop
//! hooks, a liveness kill stopping the container the way a deletion does
//! (its preStop hook first), and `kubectl create priorityclass`.
//!
//! Needs root, ip, the CNI plugins and kubectl (`. ci/env`); skips with
//! `SKIP:` otherwise (a panic under `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod kubectl_support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::ClusterSpec;
use kubectl_support::{Env, NEEDS, TIMEOUT, follow, short_backoff, spec, stop, wait_line};
use serde_json::{Value, json};

fn env(test: &str) -> Option<Env> {
    kubectl_support::start(
        test,
        NEEDS,
        ClusterSpec {
            backoff: short_backoff(),
            ..spec(1)
        },
    )
}

impl Env {
    fn apply(&self, doc: &Value) {
        kubectl_support::apply(&self.k, doc);
    }

    fn ready(&self, pod: &str) {
        self.k
            .ok(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), TIMEOUT]);
    }

    fn exists(&self, pod: &str) -> bool {
        let run = self.k.run(&["get", "pod", pod, "-o", "name"]);
        if !run.success() {
            assert!(run.stderr.contains("NotFound"), "{run}");
        }
        run.success()
    }

    /// The reasons and messages of the events about `object`.
    fn events(&self, object: &str) -> Vec<(String, String)> {
        self.k
            .items(&["get", "events"])
            .iter()
            .filter(|e| e["involvedObject"]["name"] == object)
            .map(|e| {
                let text = |f: &str| e[f].as_str().unwrap_or_default().to_string();
                (text("reason"), text("message"))
            })
            .collect()
    }
}

fn pod(name: &str, container: Value, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}
    });
    if let (Some(spec), Value::Object(extra)) = (pod["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    pod
}

fn sleeper() -> Value {
    json!({"name": "main", "image": "shell", "args": ["-c", "sleep 1000 & wait"]})
}

fn wait_until(what: &str, done: impl FnMut() -> bool) -> Duration {
    kubectl_support::wait_until(what, Duration::from_millis(100), done)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn no_execute_taints_evict_pods_that_do_not_tolerate_them() {
    let Some(e) = env("no_execute_taints_evict_pods_that_do_not_tolerate_them") else {
        return;
    };
    let toleration = |seconds: Option<i64>| {
        let mut t = json!({"key": "maintenance", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = seconds {
            t["tolerationSeconds"] = json!(s);
        }
        json!({"tolerations": [t]})
    };
    e.apply(&pod("intolerant", sleeper(), json!({})));
    e.apply(&pod("brief", sleeper(), toleration(Some(4))));
    e.apply(&pod("forever", sleeper(), toleration(None)));
    for p in ["intolerant", "brief", "forever"] {
        e.ready(p);
    }
    // Every pod tolerates a failed node for 300 s (DefaultTolerationSeconds).
    let tolerations =
        e.k.ok(&["get", "pod", "intolerant", "-o", "jsonpath={.spec.tolerations}"]);
    let tolerations: Value = serde_json::from_str(&tolerations).unwrap();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let found = tolerations
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == key && t["effect"] == "NoExecute" && t["tolerationSeconds"] == 300);
        assert!(found, "{key}: {tolerations}");
    }

    let tainted = Instant::now();
    e.k.ok(&["taint", "nodes", "node-0", "maintenance=true:NoExecute"]);
    let evicted = wait_until("intolerant evicted", || !e.exists("intolerant"));
    assert!(evicted < Duration::from_secs(15), "evicted only after {evicted:?}");
    let reasons = e.events("intolerant");
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "TaintManagerEviction" && m == "Marking for deletion Pod default/intolerant"),
        "{reasons:?}"
    );
    assert!(e.exists("brief"), "brief is tolerated for 4 s");
    wait_until("brief evicted", || !e.exists("brief"));
    let brief = tainted.elapsed();
    assert!(brief >= Duration::from_secs(4), "brief evicted after {brief:?}");
    // A toleration without tolerationSeconds keeps the pod for good.
    std::thread::sleep(Duration::from_secs(1));
    assert!(e.exists("forever"));

    // A taint removed in time cancels a scheduled eviction.
    e.k.ok(&["taint", "nodes", "node-0", "maintenance-"]);
    e.apply(&pod("rescued", sleeper(), toleration(Some(3))));
    e.ready("rescued");
    e.k.ok(&["taint", "nodes", "node-0", "maintenance=true:NoExecute"]);
    e.k.ok(&["taint", "nodes", "node-0", "maintenance-"]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(e.exists("rescued"), "the taint went before its toleration ran out");
}

#[test]
fn configmap_and_secret_volumes_follow_their_objects() {
    let Some(e) = env("configmap_and_secret_volumes_follow_their_objects") else {
        return;
    };
    e.k.ok(&["create", "configmap", "settings", "--from-literal=level=info"]);
    e.k.ok(&["create", "secret", "generic", "creds", "--from-literal=password=first"]);
    let mut container = sleeper();
    container["volumeMounts"] = json!([
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "settings", "mountPath": "/etc/level", "subPath": "level"}
    ]);
    let volumes = json!({"volumes": [
        {"name": "settings", "configMap": {"name": "settings"}},
        {"name": "creds", "secret": {"secretName": "creds"}}
    ]});
    e.apply(&pod("reader", container, volumes));
    e.ready("reader");
    let cat = |path: &str| e.k.ok(&["exec", "reader", "--", "cat", path]);
    assert_eq!(cat("/etc/settings/level"), "info");
    assert_eq!(cat("/etc/creds/password"), "first");
    // kubelet's layout: each name a symlink through `..data`.
    let link = e.k.ok(&["exec", "reader", "--", "readlink", "/etc/settings/level"]);
    assert_eq!(link.trim(), "..data/level");

    e.k.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"level":"debug","extra":"new"}}"#,
    ]);
    e.k.ok(&[
        "patch",
        "secret",
        "creds",
        "-p",
        r#"{"stringData":{"password":"second"}}"#,
    ]);
    let took = wait_until("the new content in the container", || {
        cat("/etc/settings/level") == "debug" && cat("/etc/creds/password") == "second"
    });
    assert!(took < Duration::from_secs(15), "propagated after {took:?}");
    assert_eq!(cat("/etc/settings/extra"), "new", "a new key appears too");
    // A subPath mount keeps what it had, as in Kubernetes.
    assert_eq!(cat("/etc/level"), "info");
}

#[test]
fn http_pre_stop_hooks_run_before_sigterm() {
    let Some(e) = env("http_pre_stop_hooks_run_before_sigterm") else {
        return;
    };
    let server = |path: &str, port: u16| {
        json!({"name": "app", "image": "mesh-probe", "args": ["http", "--port", "8080"],
            "lifecycle": {"preStop": {"httpGet": {"path": path, "port": port}}}})
    };
    e.apply(&pod(
        "hooked",
        server("/ready/fail", 8080),
        json!({"terminationGracePeriodSeconds": 20}),
    ));
    e.ready("hooked");
    // Every line `kubectl logs -f` prints until the stream ends.
    let (logs, lines) = follow(e.k.command(&["logs", "-f", "hooked"]), Stdio::null());
    wait_line(&lines, "\"event\":\"ready\"");
    let asked = Instant::now();
    e.k.ok(&["delete", "pod", "hooked", TIMEOUT]);
    // The hook's request, then the SIGTERM the server exits on.
    wait_line(&lines, "\"path\":\"/ready/fail\"");
    wait_line(&lines, "\"reason\":\"SIGTERM\"");
    assert!(asked.elapsed() < Duration::from_secs(15), "{:?}", asked.elapsed());
    stop(logs);

    // A hook that fails is an event; the container is still stopped with
    // SIGTERM, not left to its grace period.
    e.apply(&pod(
        "broken",
        server("/drain", 9),
        json!({"terminationGracePeriodSeconds": 20}),
    ));
    e.ready("broken");
    let asked = Instant::now();
    e.k.ok(&["delete", "pod", "broken", TIMEOUT]);
    assert!(asked.elapsed() < Duration::from_secs(15), "{:?}", asked.elapsed());
    let events = e.events("broken");
    let failed = events.iter().find(|(r, _)| r == "FailedPreStopHook");
    let (_, message) = failed.unwrap_or_else(|| panic!("{events:?}"));
    assert!(
        message.contains("PreStopHook failed for container app") && message.contains("connection refused"),
        "{message}"
    );
}

#[test]
fn a_liveness_kill_runs_the_pre_stop_hook_then_sigterm() {
    let Some(e) = env("a_liveness_kill_runs_the_pre_stop_hook_then_sigterm") else {
        return;
    };
    let marker = e.scratch.join("marker");
    let script = "trap 'echo term >> $M; exit 0' TERM; echo started >> $M; sleep 1000 & wait";
    let container = json!({"name": "main", "image": "shell", "args": ["-c", script],
        "env": [{"name": "M", "value": marker.to_str().unwrap()}],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> $M"]}}},
        "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -e $M.fail"]},
            "periodSeconds": 1, "failureThreshold": 1}});
    e.apply(&pod("lively", container, json!({})));
    e.ready("lively");
    std::fs::write(format!("{}.fail", marker.display()), "").unwrap();
    wait_until("restarted once", || read(&marker).matches("started").count() >= 2);
    std::fs::remove_file(format!("{}.fail", marker.display())).unwrap();
    assert!(
        read(&marker).starts_with("started\nprestop\nterm\nstarted\n"),
        "{:?}",
        read(&marker)
    );
    let restarts = e.k.ok(&[
        "get",
        "pod",
        "lively",
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ]);
    assert!(restarts.parse::<u32>().is_ok_and(|n| n >= 1), "{restarts}");
}

#[test]
fn kubectl_creates_a_priority_class() {
    let Some(e) = env("kubectl_creates_a_priority_class") else {
        return;
    };
    e.k.ok(&[
        "create",
        "priorityclass",
        "journey-high",
        "--value=1000",
        "--description=for tests",
    ]);
    let got = e.k.ok(&[
        "get",
        "priorityclass",
        "journey-high",
        "-o",
        "jsonpath={.value}|{.description}|{.preemptionPolicy}",
    ]);
    assert_eq!(got, "1000|for tests|PreemptLowerPriority");
    let mut p = pod("important", sleeper(), json!({"priorityClassName": "journey-high"}));
    p["spec"]["terminationGracePeriodSeconds"] = json!(0);
    e.apply(&p);
    let priority = e.k.ok(&["get", "pod", "important", "-o", "jsonpath={.spec.priority}"]);
    assert_eq!(priority, "1000");
}
