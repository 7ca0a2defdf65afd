//! `istio-cni` against a misbehaving Kubernetes API, on the embedded
//! cluster's fault hooks: a pod GET slower than the plugin's per-request
//! timeout, a persistent 500, transient 500s, nothing listening, and the
//! whole server down and back up. Meshed pods fail closed (sandbox creation
//! fails) with a `FailedCreatePodSandBox` event naming the cause, and start,
//! programmed, once the API answers; pods of excluded namespaces never ask
//! the API and start even while it is down.
//!
//! The plugin's own log records arrive at a stand-in for the node agent's
//! log socket: they show every attempt, and they are the only witness while
//! the API server (and so every event) is down.
//!
//! Only the plugin GETs pods by name (kubelet-lite lists, watches and
//! patches; this file lists too), so a fault on `get pods/<name>` hits the
//! plugin alone.
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`).

mod cluster_support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster_support::cluster_with_istio_cni;
use istio_cni::cni::add::FetchPolicy;
use istio_cni_kind::apiserver::{FaultMatch, Faults};
use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::kubelet::worker::sandbox_id;
use istio_cni_kind::node::Node;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use testkit::fixtures::INJECTED_CLASSIC;
use testkit::{Need, gate};

/// How long one failed ADD may take at most with the plugin's policy: every
/// attempt runs into the per-request timeout, with the pause between them.
fn worst_add() -> Duration {
    let p = FetchPolicy::default();
    (p.request_timeout + p.retry_delay) * p.attempts
}

/// The plugin's message when the lookup failed for good.
fn gave_up() -> String {
    format!(
        "cannot read it from the Kubernetes API after {} attempts",
        FetchPolicy::default().attempts
    )
}

/// The plugin's GET of one pod (nothing else GETs pods by name here).
fn plugin_get(ns: &str, name: &str) -> FaultMatch {
    FaultMatch::any().verb("get").resource("pods").namespace(ns).name(name)
}

/// The injected pod Istio's injector makes with CNI on, named `name`.
fn meshed(name: &str) -> Pod {
    let mut pod: Value = serde_yaml::from_str(INJECTED_CLASSIC).unwrap();
    pod["metadata"]["name"] = json!(name);
    serde_json::from_value(pod).unwrap()
}

/// A meshed-looking pod in kube-system (no validation: it gets no rules).
fn excluded(name: &str) -> Pod {
    let mut pod: Value = serde_yaml::from_str(INJECTED_CLASSIC).unwrap();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!("kube-system");
    pod["spec"].as_object_mut().unwrap().remove("initContainers");
    serde_json::from_value(pod).unwrap()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The plugin's log records as the node agent would receive them: a Unix
/// socket at `<run dir>/log.sock` answering each `POST /log` with 200.
struct PluginLogs {
    records: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PluginLogs {
    fn listen(socket: &Path) -> PluginLogs {
        let listener = UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, halt) = (records.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(batch) = receive(conn) {
                            sink.lock().unwrap().extend(batch);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("log socket: {e}"),
                }
            }
        });
        PluginLogs {
            records,
            stop,
            thread: Some(thread),
        }
    }

    /// The records about `pod` (`ns/name`): those labelled with it and the
    /// final error reply, which names it in its message.
    fn about(&self, pod: &str) -> Vec<Value> {
        let needle = format!("pod {pod}");
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["pod"].as_str() == Some(pod) || r["msg"].as_str().is_some_and(|m| m.contains(&needle)))
            .cloned()
            .collect()
    }

    /// The messages of the per-attempt warnings about `pod`, in order.
    fn attempts(&self, pod: &str) -> Vec<String> {
        self.about(pod)
            .iter()
            .filter(|r| r["attempt"].is_string())
            .map(|r| format!("attempt {}: {}", r["attempt"].as_str().unwrap_or("?"), r["msg"]))
            .collect()
    }

    /// The error replies (failed ADDs) about `pod`.
    fn failures(&self, pod: &str) -> Vec<String> {
        self.about(pod)
            .iter()
            .filter(|r| r["level"] == "error")
            .map(|r| r["msg"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn has(&self, pod: &str, msg: &str) -> bool {
        self.about(pod)
            .iter()
            .any(|r| r["msg"].as_str().is_some_and(|m| m.contains(msg)))
    }
}

impl Drop for PluginLogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `POST /log`: headers, a `Content-Length` body of JSON-encoded
/// records; answers 200.
fn receive(mut conn: UnixStream) -> Option<Vec<Value>> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_len, body_len) = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())?;
            break (end + 4, len);
        }
    };
    while data.len() < head_len + body_len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").ok()?;
    let lines: Vec<String> = serde_json::from_slice(&data[head_len..head_len + body_len]).ok()?;
    Some(lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// A 1-node cluster with `istio-cni` appended to the primary conflist (as
/// the node agent installs it) and the plugin's logs collected.
struct Harness {
    cluster: Cluster,
    logs: PluginLogs,
}

impl Harness {
    /// Runs `body` on a fresh cluster and deletes it afterwards; skips
    /// `test` when not root.
    fn run(test: &str, body: impl FnOnce(&Harness)) {
        if !gate(test, &[Need::Root]) {
            return;
        }
        let h = Harness::new();
        body(&h);
        h.finish();
    }

    fn new() -> Harness {
        let cluster = cluster_with_istio_cni();
        let run_dir = cluster.local().unwrap().nodes()[0].istio_run_dir();
        let logs = PluginLogs::listen(&run_dir.join("log.sock"));
        Harness { cluster, logs }
    }

    fn node(&self) -> &Node {
        &self.cluster.local().unwrap().nodes()[0]
    }

    fn faults(&self) -> Faults {
        self.cluster.local().unwrap().api().faults()
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.node().istio_run_dir().join("istio-cni-kubeconfig")
    }

    fn create(&self, pod: Pod) -> Pod {
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), &ns);
        self.cluster.block_on(api.create(&PostParams::default(), &pod)).unwrap()
    }

    /// The pod as a list shows it (a GET by name would meet the faults).
    fn listed(&self, ns: &str, name: &str) -> Option<Pod> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), ns);
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        self.cluster.block_on(api.list(&params)).ok()?.items.into_iter().next()
    }

    /// Polls `found` every 100 ms until it gives a value; past `timeout`
    /// fails saying `what` did not happen, with the pod's sandbox events and
    /// the plugin's records about it.
    fn wait_for<T>(&self, ns: &str, name: &str, timeout: Duration, what: &str, found: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = found() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name}: {what} within {timeout:?}\nsandbox events: {:?}\nplugin: {:?}",
                self.sandbox_events(ns, name),
                self.logs.about(&format!("{ns}/{name}"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_running(&self, ns: &str, name: &str, timeout: Duration) -> Pod {
        self.wait_for(ns, name, timeout, "not Running", || {
            self.listed(ns, name).filter(|pod| phase(pod) == Some("Running"))
        })
    }

    /// The `FailedCreatePodSandBox` messages about one pod.
    fn sandbox_events(&self, ns: &str, name: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.cluster.client(), ns);
        let events = self.cluster.block_on(api.list(&ListParams::default())).unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter_map(|e| e.message)
            .collect()
    }

    /// Waits for a sandbox failure event about `ns/name` that `ok` accepts.
    fn wait_event(&self, ns: &str, name: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        self.wait_for(ns, name, timeout, "no matching sandbox event", || {
            self.sandbox_events(ns, name).into_iter().find(|m| ok(m))
        })
    }

    /// Waits for the event of an ADD that gave up on the API (every attempt
    /// failed), within the plugin's worst case.
    fn wait_gave_up(&self, ns: &str, name: &str) -> String {
        self.wait_event(ns, name, worst_add() + Duration::from_secs(15), |m| {
            m.contains(&gave_up())
        })
    }

    /// Once the fault is gone, the pod starts with its redirection.
    fn wait_recovered(&self, ns: &str, name: &str) {
        self.wait_running(ns, name, worst_add() + Duration::from_secs(30));
        self.assert_programmed(ns, name);
    }

    /// Asserts the pod has no sandbox now: failed ADDs are undone.
    fn assert_pending(&self, ns: &str, name: &str) {
        let pod = self.listed(ns, name).unwrap();
        assert_eq!(phase(&pod), Some("Pending"), "{ns}/{name} must not start");
        assert!(
            !self.logs.has(&format!("{ns}/{name}"), "traffic redirection programmed"),
            "{:?}",
            self.logs.about(&format!("{ns}/{name}"))
        );
    }

    /// The pod runs with the redirection in its netns.
    fn assert_programmed(&self, ns: &str, name: &str) {
        let save = self.cluster.in_pod(ns, name, &["iptables-nft-save"]).unwrap();
        assert!(
            save.contains("-A ISTIO_OUTPUT") && save.contains("-A ISTIO_INBOUND"),
            "{ns}/{name} rules:\n{save}"
        );
    }

    fn finish(self) {
        drop(self.logs);
        self.cluster.delete().unwrap();
    }
}

#[test]
fn a_pod_get_slower_than_the_request_timeout_times_out_and_fails_closed() {
    Harness::run("a_pod_get_slower_than_the_request_timeout", |h| {
        // Far beyond the per-request timeout, and beyond the runtime's own CNI
        // timeout (60 s): a plugin without a per-request timeout gets no event
        // of its own within the deadline below.
        let latency = Duration::from_secs(90);
        h.faults().add_latency(plugin_get("default", "hello"), latency);
        let started = Instant::now();
        h.create(meshed("hello"));
        let event = h.wait_gave_up("default", "hello");
        eprintln!(
            "latency: the sandbox failed {:?} after the pod was created",
            started.elapsed()
        );
        assert!(
            event.contains("pod default/hello") && event.contains("timed out after"),
            "{event}"
        );
        let attempts = h.logs.attempts("default/hello");
        let policy = FetchPolicy::default();
        assert!(attempts.len() >= policy.attempts as usize, "{attempts:?}");
        assert!(attempts.iter().all(|a| a.contains("timed out after")), "{attempts:?}");
        h.assert_pending("default", "hello");

        h.faults().clear();
        h.wait_recovered("default", "hello");
    });
}

#[test]
fn a_persistent_500_fails_closed_with_an_event_naming_it() {
    Harness::run("a_persistent_500_fails_closed", |h| {
        h.faults().inject_errors_forever(plugin_get("default", "hello"), 500);
        h.create(meshed("hello"));
        let event = h.wait_gave_up("default", "hello");
        assert!(
            event.contains("pod default/hello") && event.contains("HTTP 500") && event.contains("injected fault"),
            "{event}"
        );
        let attempts = h.logs.attempts("default/hello");
        assert!(
            attempts.len() >= FetchPolicy::default().attempts as usize
                && attempts.iter().all(|a| a.contains("HTTP 500")),
            "{attempts:?}"
        );
        h.assert_pending("default", "hello");
    });
}

#[test]
fn transient_500s_are_absorbed_by_retries() {
    Harness::run("transient_500s_are_absorbed_by_retries", |h| {
        h.faults().inject_errors(plugin_get("default", "hello"), 500, 2);
        h.create(meshed("hello"));
        h.wait_running("default", "hello", Duration::from_secs(30));
        assert_eq!(h.faults().injected_errors(), 2);
        assert_eq!(
            h.sandbox_events("default", "hello"),
            Vec::<String>::new(),
            "the first ADD succeeded"
        );
        let attempts = h.logs.attempts("default/hello");
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert!(
            attempts[0].starts_with("attempt 1:") && attempts[1].starts_with("attempt 2:"),
            "{attempts:?}"
        );
        assert!(attempts.iter().all(|a| a.contains("HTTP 500")), "{attempts:?}");
        assert!(h.logs.has("default/hello", "traffic redirection programmed"));
        h.assert_programmed("default", "hello");
    });
}

#[test]
fn nothing_listening_fails_closed_with_connection_refused() {
    Harness::run("nothing_listening_fails_closed", |h| {
        // The same server address with a port nothing listens on.
        let original = std::fs::read_to_string(h.kubeconfig_path()).unwrap();
        let doc: Value = serde_yaml::from_str(&original).unwrap();
        let server = doc["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
        let (host, _port) = server.rsplit_once(':').unwrap();
        let dead = format!("{host}:1");
        std::fs::write(h.kubeconfig_path(), original.replace(&server, &dead)).unwrap();

        h.create(meshed("hello"));
        let event = h.wait_gave_up("default", "hello");
        assert!(
            event.contains("pod default/hello") && event.contains("connection refused") && event.contains(&dead),
            "{event}"
        );
        h.assert_pending("default", "hello");

        std::fs::write(h.kubeconfig_path(), original).unwrap();
        h.wait_recovered("default", "hello");
    });
}

#[test]
fn excluded_namespaces_never_ask_the_api() {
    Harness::run("excluded_namespaces_never_ask_the_api", |h| {
        // Every pod GET fails; those for kube-system are counted.
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        h.faults().inject_errors_forever(
            FaultMatch::any().verb("get").resource("pods").when(move |r| {
                if r.namespace == "kube-system" {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                true
            }),
            503,
        );
        h.create(meshed("hello"));
        h.create(excluded("dns"));
        h.wait_running("kube-system", "dns", Duration::from_secs(30));
        assert!(h.logs.has("kube-system/dns", "pod namespace kube-system excluded"));
        let event = h.wait_gave_up("default", "hello");
        assert!(event.contains("HTTP 503"), "the outage was real: {event}");
        assert_eq!(asked.load(Ordering::Relaxed), 0, "no GET for a kube-system pod");
        h.faults().clear(); // finding the pod's netns GETs it
        let save = h.cluster.in_pod("kube-system", "dns", &["iptables-nft-save"]).unwrap();
        assert!(!save.contains("ISTIO"), "an excluded pod gets no rules:\n{save}");
    });
}

#[test]
fn a_full_outage_fails_closed_and_pods_start_once_the_api_is_back() {
    Harness::run("a_full_outage_fails_closed", |h| {
        let api = h.cluster.local().unwrap().api().clone();
        // Hold both pods' sandboxes until the server is down: without the plugin
        // binary every ADD fails, and the kubelet retries on its backoff.
        let plugin = h.node().bin_dir().join("istio-cni");
        let parked = h.node().bin_dir().join("istio-cni.parked");
        std::fs::rename(&plugin, &parked).unwrap();
        h.create(meshed("hello"));
        let dns = h.create(excluded("dns"));
        for (ns, name) in [("default", "hello"), ("kube-system", "dns")] {
            h.wait_event(ns, name, Duration::from_secs(20), |m| m.contains("istio-cni"));
        }

        h.cluster.block_on(api.go_down());
        let down_at = Instant::now();
        std::fs::rename(&parked, &plugin).unwrap();
        // While down: the meshed pod's ADDs fail on the refused connection (two
        // of them, so that the kubelet has tried to record an event while the
        // server was down), the excluded pod's sandbox is made without the API.
        let refused = |h: &Harness| {
            h.logs
                .failures("default/hello")
                .iter()
                .filter(|m| m.contains(&gave_up()) && m.contains("connection refused"))
                .count()
        };
        let deadline = Instant::now() + worst_add() * 2 + Duration::from_secs(15);
        while !(refused(h) >= 2 && h.logs.has("kube-system/dns", "pod namespace kube-system excluded")) {
            assert!(
                Instant::now() < deadline,
                "plugin records during the outage: {:?} {:?}",
                h.logs.about("default/hello"),
                h.logs.about("kube-system/dns")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let dns_sandbox = sandbox_id(dns.metadata.uid.as_deref().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while h.node().pod_netns(&dns_sandbox).is_none() {
            assert!(
                Instant::now() < deadline,
                "kube-system/dns has no sandbox during the outage"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!h.logs.has("default/hello", "traffic redirection programmed"));
        assert!(!h.cluster.block_on(api.is_up()), "still down");
        eprintln!(
            "outage: both pods handled {:?} after the server went down",
            down_at.elapsed()
        );

        h.cluster.block_on(api.come_up()).unwrap();
        let up_at = Instant::now();
        h.wait_running("default", "hello", worst_add() + Duration::from_secs(30));
        eprintln!(
            "outage: default/hello Running {:?} after the server came back",
            up_at.elapsed()
        );
        h.assert_programmed("default", "hello");
        h.wait_running("kube-system", "dns", Duration::from_secs(30));
        let save = h.cluster.in_pod("kube-system", "dns", &["iptables-nft-save"]).unwrap();
        assert!(!save.contains("ISTIO"), "an excluded pod gets no rules:\n{save}");
        // Every failed ADD of the outage has its event once the server is back
        // (hello runs: no ADD fails any more).
        let failed = refused(h);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = h.sandbox_events("default", "hello");
            let named = events
                .iter()
                .filter(|m| m.contains(&gave_up()) && m.contains("connection refused"))
                .count();
            if named == failed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{failed} ADDs failed during the outage, {named} events say so: {events:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}
