//! What a scenario's cluster did, seen through the API while the body runs:
//! nodes joining and their not-ready taint going, the agent's pods scheduled,
//! Ready and gone, and every app pod scheduled, failing validation (126),
//! labelled, Running, finished or deleted. A thread lists them every 50 ms
//! and keeps the first sighting of each; the sightings become the timeline
//! the HTML report charts, and the per-pod facts the tallies (raced,
//! repaired, deleted, labelled).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

use super::{BROKEN_LABEL, NOT_READY_TAINT, NS, pod_ready};
use crate::race::{running, validation_exits};
use crate::scenario::{Mark, Record};

/// The agent's pods (the DaemonSet's selector).
pub const AGENT_SELECTOR: &str = "k8s-app=istio-cni-node";
const EVERY: Duration = Duration::from_millis(50);

/// One app pod as it was seen (keyed by uid: a recreated pod is another).
#[derive(Debug, Clone, Default)]
pub struct PodSeen {
    pub name: String,
    pub node: Option<String>,
    /// Its validation exited 126 at least once: it raced the install.
    pub raced: bool,
    /// Last seen Running.
    pub running: bool,
    /// Seen Running with validation passing the first time.
    pub first_try: bool,
    pub labelled: bool,
    /// No longer listed (deleted), or being deleted.
    pub gone: bool,
    /// The last phase seen.
    pub phase: String,
    /// Owned by a ReplicaSet (a Deployment's pod).
    pub owned: bool,
}

/// Everything seen so far.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    marks: Vec<(Instant, String)>,
    /// App pods by uid.
    pub pods: BTreeMap<String, PodSeen>,
    /// Agent pods by name → (node, Ready).
    agents: BTreeMap<String, (String, bool)>,
    /// Nodes by name → (Ready, tainted not-ready).
    nodes: BTreeMap<String, (bool, bool)>,
}

impl Seen {
    /// Whether the agent pod on `node` was seen Ready.
    pub fn agent_ready_on(&self, node: &str) -> bool {
        self.agents.values().any(|(n, ready)| n == node && *ready)
    }

    /// The sightings as timeline marks, merged into `rec`'s in time order.
    pub fn to_timeline(&self, rec: &mut Record) {
        let now = rec.elapsed();
        for (when, what) in &self.marks {
            rec.timeline.push(Mark {
                at: now.saturating_sub(when.elapsed()),
                what: what.clone(),
            });
        }
        rec.timeline.sort_by_key(|m| m.at);
    }

    fn mark(&mut self, what: String) {
        self.marks.push((Instant::now(), what));
    }

    fn saw_nodes(&mut self, nodes: Vec<Node>) {
        for node in nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let tainted = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == NOT_READY_TAINT));
            let was = self.nodes.get(&name).copied();
            if ready && was.is_none_or(|(r, _)| !r) {
                let with = if tainted {
                    format!(" (tainted {NOT_READY_TAINT})")
                } else {
                    String::new()
                };
                self.mark(format!("node {name} Ready{with}"));
            }
            if was.is_some_and(|(_, t)| t) && !tainted {
                self.mark(format!("node {name}: {NOT_READY_TAINT} taint removed"));
            }
            self.nodes.insert(name, (ready, tainted));
        }
    }

    fn saw_agents(&mut self, pods: Vec<Pod>) {
        let mut listed = Vec::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            listed.push(name.clone());
            let ready = pod_ready(&pod) && pod.metadata.deletion_timestamp.is_none();
            let was = self.agents.get(&name).cloned();
            if was.is_none() {
                self.mark(format!("agent pod {name} scheduled on {node}"));
            }
            if ready && !was.is_some_and(|(_, r)| r) {
                self.mark(format!("agent on {node} Ready ({name})"));
            }
            self.agents.insert(name, (node, ready));
        }
        let gone: Vec<String> = self.agents.keys().filter(|n| !listed.contains(n)).cloned().collect();
        for name in gone {
            if let Some((node, _)) = self.agents.remove(&name) {
                self.mark(format!("agent pod {name} on {node} gone"));
            }
        }
    }

    fn saw_apps(&mut self, pods: Vec<Pod>) {
        let mut listed = Vec::new();
        for pod in pods {
            let Some(uid) = pod.metadata.uid.clone() else { continue };
            listed.push(uid.clone());
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut s = self.pods.get(&uid).cloned().unwrap_or_else(|| PodSeen {
                name: name.clone(),
                owned: pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "ReplicaSet"),
                ..PodSeen::default()
            });
            let node = pod.spec.as_ref().and_then(|sp| sp.node_name.clone());
            if s.node.is_none()
                && let Some(n) = &node
            {
                self.mark(format!("{name} scheduled on {n}"));
                s.node = node.clone();
            }
            let (cur, last, restarts) = validation_exits(&pod);
            if !s.raced && (cur == Some(126) || last == Some(126)) {
                s.raced = true;
                self.mark(format!("{name}: validation failed (126)"));
            }
            let is_running = running(&pod);
            if is_running && !s.running {
                let how = if s.raced { " after the race" } else { "" };
                self.mark(format!("{name} Running{how}"));
            }
            if is_running && (cur, last, restarts) == (Some(0), None, 0) {
                s.first_try = true;
            }
            s.running = is_running;
            let labelled = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(BROKEN_LABEL))
                .is_some_and(|v| v == "true");
            if labelled && !s.labelled {
                self.mark(format!("{name} labelled {BROKEN_LABEL}"));
            }
            s.labelled = labelled;
            let phase = pod.status.as_ref().and_then(|st| st.phase.clone()).unwrap_or_default();
            if phase != s.phase && matches!(phase.as_str(), "Failed" | "Succeeded") {
                self.mark(format!("{name} {phase}"));
            }
            s.phase = phase;
            if pod.metadata.deletion_timestamp.is_some() && !s.gone {
                s.gone = true;
                self.mark(format!("{name} deleted"));
            }
            self.pods.insert(uid, s);
        }
        for (uid, s) in self.pods.iter_mut() {
            if !s.gone && !listed.contains(uid) {
                s.gone = true;
                self.marks.push((Instant::now(), format!("{} deleted", s.name)));
            }
        }
    }
}

/// The watcher's shared state.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Arc<Mutex<Seen>>,
    stop: AtomicBool,
}

impl Watch {
    /// What was seen so far.
    pub fn snapshot(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `done` holds for what was seen; false after `timeout`.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(&self.snapshot()) {
                return true;
            }
            std::thread::sleep(EVERY);
        }
        done(&self.snapshot())
    }
}

/// Runs `body` while a thread watches `cluster` (app pods in `default`, the
/// agent's pods in `agent_ns`, the nodes); `body`'s result and what was seen.
pub fn watching<T>(cluster: &Cluster, agent_ns: &str, body: impl FnOnce(&Watch) -> T) -> (T, Seen) {
    let watch = Watch::default();
    std::thread::scope(|s| {
        let w = &watch;
        let observer = s.spawn(move || observe(cluster, agent_ns, w));
        let out = body(&watch);
        watch.stop.store(true, Ordering::SeqCst);
        let _ = observer.join();
        (out, watch.snapshot())
    })
}

fn observe(cluster: &Cluster, agent_ns: &str, watch: &Watch) {
    let nodes: Api<Node> = Api::all(cluster.client());
    let agents: Api<Pod> = Api::namespaced(cluster.client(), agent_ns);
    let apps: Api<Pod> = Api::namespaced(cluster.client(), NS);
    let by_selector = ListParams::default().labels(AGENT_SELECTOR);
    loop {
        // One more look after the stop, so the last state is in.
        let last = watch.stop.load(Ordering::SeqCst);
        let n = cluster.block_on(nodes.list(&ListParams::default()));
        let a = cluster.block_on(agents.list(&by_selector));
        let p = cluster.block_on(apps.list(&ListParams::default()));
        {
            let mut seen = watch.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(n) = n {
                seen.saw_nodes(n.items);
            }
            if let Ok(a) = a {
                seen.saw_agents(a.items);
            }
            if let Ok(p) = p {
                seen.saw_apps(p.items);
            }
        }
        if last {
            return;
        }
        std::thread::sleep(EVERY);
    }
}
