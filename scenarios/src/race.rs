//! The `race/...` scenarios: the start-up race the repair controller exists
//! for (docs/repair.md#the-race), reproduced deterministically with the
//! agent deployed as its DaemonSet.
//!
//! The DaemonSet is applied gated off the node (a required node affinity on
//! a label the node does not have yet, [`crate::lifecycle::GATE_VALUES`]),
//! so the node is ready with only the primary CNI in its chain. A meshed pod
//! is scheduled; its sandbox gets no rules and the real validator
//! (`istio-cni validate`, the `istio-validation` init container) exits 126
//! and crash-loops. Then the scenario labels the node: the DaemonSet
//! controller schedules the agent's pod there, it installs `istio-cni` and
//! turns Ready, and its repair mode acts. The end state is asserted through
//! the public contract only (pod status, events, labels, rules in the pod's
//! netns, the agent pod's log through the API):
//!
//! | scenario | values | end state |
//! |---|---|---|
//! | `race/repairPods` | chart default (`repair.repairPods=true`) | same pod, rules programmed in place, validation passes on its next try, Running, app never restarted |
//! | `race/deletePods` | `repair.deletePods=true` | the Deployment's pod deleted; the ReplicaSet's replacement starts with rules first time |
//! | `race/labelPods` | `repair.labelPods=true` | labelled `cni.istio.io/uninitialized=true`, still broken |
//! | `race/disabled` | `repair.enabled=false` | stuck in Init:CrashLoopBackOff, restarts grow, no rules |
//!
//! Each records a timeline (node ready, pod scheduled, validation failed
//! (126), gate opened, agent pod scheduled, repaired/deleted/labelled, agent
//! Ready, pod Running) and notes the time to repair from the agent's pod
//! being scheduled (the controller may act before the pod is Ready) and
//! from the agent being Ready to the pod Running.
//!
//! `race/agent-restart` rolls the DaemonSet (a pod-template change: the old
//! pod's SIGTERM cleanup removes the plugin, then the new pod installs it)
//! while pods are created every 100 ms: each either fails validation and is
//! repaired or starts with rules; none runs without rules. `race/ordering`
//! shows the mesh plugin can never make a pod start without the primary:
//! with the primary config removed (nothing, or only istio-cni's standalone
//! file) sandboxes fail with `FailedCreatePodSandBox` instead of starting
//! un-networked.
//!
//! The helpers on pods and netns rules below are shared with `skew` and
//! `lifecycle`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use istio_cni_agent::manifest::{Inputs, Manifest};
use istio_cni_kind::cluster::{Cluster, ClusterError, ClusterSpec};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Resource;
use kube::api::{Api, ListParams, PostParams};
use serde::de::DeserializeOwned;

use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::error::{Context, Error, Several};
use crate::fixtures;
use crate::lifecycle::{self, BROKEN_LABEL, meshed_deployment, open_gate, pod_ready};
use crate::scenario::{Record, Scenario, Step, Stop, skip};

/// The node of the embedded cluster's default (one-node) spec.
pub const NODE: &str = "node-0";
const NS: &str = "default";

/// Every `race/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "race/repairPods",
            "a meshed pod that raced the install is re-programmed in place and runs, its app never restarted",
            race_repair,
        ),
        Scenario::new(
            "race/deletePods",
            "a Deployment's meshed pod that raced the install is deleted; the ReplicaSet's new pod starts with rules",
            race_delete,
        ),
        Scenario::new(
            "race/labelPods",
            "a meshed pod that raced the install is labelled cni.istio.io/uninitialized=true and stays broken",
            race_label,
        ),
        Scenario::new(
            "race/disabled",
            "with repair off a meshed pod that raced the install stays in Init:CrashLoopBackOff without rules",
            race_disabled,
        ),
        Scenario::new(
            "race/agent-restart",
            "pods created while the agent's DaemonSet rolls are repaired or start with rules; none runs without",
            agent_restart,
        ),
        Scenario::new(
            "race/ordering",
            "without the primary config (nothing, or istio-cni's standalone file) sandboxes fail rather than start un-networked",
            ordering,
        ),
    ]
}

// ---- pods ----------------------------------------------------------------

pub use testkit::pods::{app_restarts, phase, running, validation, validation_exits};

pub fn create(cluster: &Cluster, pod: &Pod) -> Result<Pod, Stop> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or(NS);
    let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
    cluster
        .block_on(api.create(&PostParams::default(), pod))
        .map_err(|e| Stop::Fail(format!("creating pod {:?}: {e}", pod.metadata.name)))
}

/// The objects of kind `K` in `namespace` that `params` select; `what`
/// names them in the error.
pub fn list<K>(cluster: &Cluster, namespace: &str, params: &ListParams, what: &str) -> Result<Vec<K>, Stop>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(cluster.client(), namespace);
    cluster
        .block_on(api.list(params))
        .map(|l| l.items)
        .map_err(|e| Stop::Fail(format!("listing {what}: {e}")))
}

pub fn get(cluster: &Cluster, name: &str) -> Result<Option<Pod>, Stop> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), NS);
    cluster
        .block_on(api.get_opt(name))
        .map_err(|e| Stop::Fail(format!("reading pod {name}: {e}")))
}

/// Polls `check` every 50 ms until it yields a value; fails with `what` and
/// the last pod state after `timeout`.
pub fn wait<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>, Stop>) -> Result<T, Stop> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(Stop::Fail(format!("timed out after {timeout:?} waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until pod `name` exists and satisfies `ok`.
pub fn wait_pod(
    cluster: &Cluster,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&Pod) -> bool,
) -> Result<Pod, Stop> {
    let mut last = None;
    wait(what, timeout, || {
        let p = get(cluster, name)?;
        let hit = p.as_ref().is_some_and(&ok);
        last = p.clone();
        Ok(if hit { p } else { None })
    })
    .map_err(|e| match (e, last) {
        (Stop::Fail(m), Some(p)) => Stop::Fail(format!("{m}; pod {name}: {}", pod_summary(&p))),
        (e, _) => e,
    })
}

/// One line: phase, validation exits, restarts, labels.
pub fn pod_summary(p: &Pod) -> String {
    let (cur, last, restarts) = validation_exits(p);
    format!(
        "phase {:?}, validation exit {cur:?} (last {last:?}, {restarts} restarts), app restarts {}, labels {:?}",
        phase(p),
        app_restarts(p),
        p.metadata.labels.clone().unwrap_or_default()
    )
}

/// The iptables rules (both iptables backends) in a pod's netns, read
/// through the cluster's way into pods (the node's netns handles locally,
/// `docker exec` on kind, a node shell on an existing cluster). An error
/// when neither dump ran: an unreadable netns is not one without rules. A
/// pod without a sandbox has none (nothing to read).
pub fn netns_rules(cluster: &Cluster, name: &str) -> Result<String, Stop> {
    let dumps = ["iptables-nft-save", "iptables-legacy-save"].map(|tool| match cluster.in_pod(NS, name, &[tool]) {
        Err(ClusterError::NoSandbox { .. }) => Ok(String::new()),
        dump => dump,
    });
    any_dump(dumps).map_err(|source| {
        Stop::Error(Error::Rules {
            pod: name.to_owned(),
            source,
        })
    })
}

/// The dumps that ran, joined; every error when none did.
fn any_dump<E>(dumps: impl IntoIterator<Item = Result<String, E>>) -> Result<String, Several<E>> {
    let (mut text, mut errors, mut ran) = (String::new(), Vec::new(), false);
    for dump in dumps {
        match dump {
            Ok(out) => {
                text.push_str(&out);
                ran = true;
            }
            Err(e) => errors.push(e),
        }
    }
    if ran { Ok(text) } else { Err(Several(errors)) }
}

/// Whether the netns holds the sidecar redirect (the plugin's or repair's).
pub fn has_rules(rules: &str) -> bool {
    rules.contains("-A ISTIO_OUTPUT")
}

/// `(reason, message)` of the pod's events with `reason`.
pub fn events(cluster: &Cluster, pod: &str, reason: &str) -> Result<Vec<String>, Stop> {
    let list: Vec<Event> = list(cluster, NS, &ListParams::default(), "events")?;
    Ok(list
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod) && e.reason.as_deref() == Some(reason))
        .map(|e| e.message.unwrap_or_default())
        .collect())
}

/// Every event of the app pods' namespace, one line each:
/// `<object> <reason>: <message>` (diagnostics).
pub fn all_events(cluster: &Cluster) -> String {
    match list::<Event>(cluster, NS, &ListParams::default(), "events") {
        Ok(list) => list
            .into_iter()
            .map(|e| {
                format!(
                    "{} {}: {}",
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("({e})"),
    }
}

/// The manifest for `--set` values (chart defaults plus these).
pub fn manifest(values: &[&str]) -> Result<Manifest, Stop> {
    Manifest::resolve(&Inputs {
        set: values.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .map_err(|e| Stop::Fail(format!("rendering the manifest with {values:?}: {e}")))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Notes how long a repair mode took to act: gate opened → `action` seen.
fn note_time_to_repair(rec: &mut Record, mode: &str, action: &str, at: Duration) {
    rec.note(format!("{mode}: time to repair (gate opened → {action}): {}", secs(at)));
}

// ---- the agent's pods ----------------------------------------------------

/// The agent's pod on `node` (not being deleted), if any.
pub fn agent_pod_on(cluster: &Cluster, namespace: &str, node: &str) -> Result<Option<Pod>, Stop> {
    let params = ListParams::default().labels(lifecycle::watch::AGENT_SELECTOR);
    let pods: Vec<Pod> = list(cluster, namespace, &params, "the agent's pods")?;
    Ok(pods.into_iter().find(|p| {
        p.metadata.deletion_timestamp.is_none() && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
    }))
}

/// The log of the agent's pod on `node` (through the API), or why not.
pub fn agent_log(cluster: &Cluster, namespace: &str, node: &str) -> String {
    match agent_pod_on(cluster, namespace, node) {
        Ok(Some(p)) => {
            let name = p.metadata.name.unwrap_or_default();
            cluster
                .pod_logs(namespace, &name, istio_cni_agent::manifest::objects::CONTAINER)
                .unwrap_or_else(|e| format!("(no log of {name}: {e})"))
        }
        Ok(None) => format!("(no agent pod on {node})"),
        Err(e) => format!("(no agent pod on {node}: {e:?})"),
    }
}

// ---- the race ------------------------------------------------------------

/// A repair mode's action: its timeline mark and a check (cluster, the
/// broken pod) that it happened, read from the pod as the API shows it.
type Marker = (&'static str, fn(&Cluster, &Pod) -> Result<bool, Stop>);

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// The rules are in the broken pod's netns.
fn repaired(cluster: &Cluster, broken: &Pod) -> Result<bool, Stop> {
    Ok(has_rules(&netns_rules(cluster, &pod_name(broken))?))
}

/// The broken pod is gone or being deleted.
fn deleted(cluster: &Cluster, broken: &Pod) -> Result<bool, Stop> {
    Ok(get(cluster, &pod_name(broken))?
        .is_none_or(|p| p.metadata.uid != broken.metadata.uid || p.metadata.deletion_timestamp.is_some()))
}

fn labelled(cluster: &Cluster, broken: &Pod) -> Result<bool, Stop> {
    Ok(get(cluster, &pod_name(broken))?.is_some_and(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(BROKEN_LABEL))
            .is_some_and(|v| v == "true")
    }))
}

/// Who makes the racing pod.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A bare pod named `early`.
    Bare,
    /// A Deployment `early` of one replica (its ReplicaSet recreates it).
    Deployment,
}

/// The race reproduced: the broken pod, then the agent's pod on its node.
struct Raced<'a> {
    cluster: &'a Cluster,
    agent: DaemonSetAgent<'a>,
    namespace: String,
    node: String,
    broken: Pod,
    /// When the gate opened (the agent's pod is scheduled right after).
    started: Instant,
    /// When the agent's pod was Ready (installed).
    ready: Instant,
    /// The mode's action (its timeline mark, how to see it) and when it was seen.
    marker: Option<Marker>,
    acted: Option<Duration>,
}

impl Raced<'_> {
    fn name(&self) -> String {
        pod_name(&self.broken)
    }

    /// Time from the gate opening to the mode's action, marked on the
    /// timeline when first seen.
    fn action(&mut self, rec: &mut Record) -> Result<Duration, Stop> {
        if let Some(at) = self.acted {
            return Ok(at);
        }
        let (what, seen) = self
            .marker
            .ok_or_else(|| Stop::Fail("this mode has no action".into()))?;
        let (cluster, broken) = (self.cluster, &self.broken);
        rec.waiting_for(what);
        wait(what, Duration::from_secs(30), || {
            Ok(seen(cluster, broken)?.then_some(()))
        })?;
        let at = self.started.elapsed();
        rec.mark(what);
        self.acted = Some(at);
        Ok(at)
    }

    /// Waits for the pod `name` Running once the mode has acted, and notes
    /// the mode's two timings: gate opened → its action, agent Ready →
    /// `subject` Running.
    fn running_after_action(
        &mut self,
        rec: &mut Record,
        name: &str,
        what: &str,
        mode: &str,
        action: &str,
        subject: &str,
    ) -> Result<Pod, Stop> {
        let acted = self.action(rec)?;
        let pod = wait_pod(self.cluster, name, what, Duration::from_secs(30), running)?;
        let to_running = self.ready.elapsed();
        rec.mark("pod Running");
        note_time_to_repair(rec, mode, action, acted);
        rec.note(format!("{mode}: agent ready → {subject} Running: {}", secs(to_running)));
        Ok(pod)
    }

    /// Waits for the racing pod to fail validation `more` times after the
    /// state in `since` (unrepaired, it keeps crash-looping).
    fn failing_again(&self, since: &Pod, more: i32, what: &str, timeout: Duration) -> Result<Pod, Stop> {
        let restarts = validation_exits(since).2;
        wait_pod(self.cluster, "early", what, timeout, |p| {
            validation_exits(p).2 >= restarts + more
        })
    }

    fn agent_log(&self) -> String {
        agent_log(self.cluster, &self.namespace, &self.node)
    }

    fn logs_to(&self, rec: &mut Record) {
        self.agent.diag(rec);
        rec.diag("validator log", validator_logs(self.cluster, &self.name()));
        rec.diag("pod events", all_events(self.cluster));
    }
}

/// The racing pod's validator output: its previous instance's (the one
/// that exited 126 is "previous" as soon as kubelet restarted it), then the
/// current one's.
fn validator_logs(cluster: &Cluster, pod: &str) -> String {
    let previous = cluster
        .previous_pod_logs(NS, pod, "istio-validation")
        .unwrap_or_default();
    let current = cluster.pod_logs(NS, pod, "istio-validation").unwrap_or_default();
    format!("{previous}{current}")
}

/// The cluster of a race or an upgrade: a fresh one-node cluster on the
/// embedded backend, the target's cluster elsewhere. Every backend reads
/// the rules in a pod's netns the same way ([`netns_rules`]), so none is
/// skipped.
pub(crate) fn race_cluster(env: &Env, rec: &mut Record) -> Result<Cluster, Stop> {
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    Ok(cluster)
}

/// The only pod of Deployment `early`, once it exists.
fn deployment_pod(cluster: &Cluster) -> Result<Option<Pod>, Stop> {
    let params = ListParams::default().labels("lifecycle-app=early");
    let pods: Vec<Pod> = list(cluster, NS, &params, "the Deployment's pods")?;
    Ok(pods.into_iter().find(|p| p.metadata.deletion_timestamp.is_none()))
}

/// The race: the DaemonSet gated off, the broken pod, then the gate opened
/// for the agent with `values`; `marker` is the mode's action, watched from
/// the gate opening (repair may act before the agent's pod is Ready).
fn race<'a>(
    env: &Env,
    cluster: &'a Cluster,
    rec: &mut Record,
    values: &[&str],
    marker: Option<Marker>,
    owner: Owner,
) -> Result<Raced<'a>, Stop> {
    let manifest = lifecycle::manifest(env, values, true)?;
    let agent = DaemonSetAgent::apply(env, cluster, &manifest.install, rec)?;
    rec.mark("agent DaemonSet gated off the nodes");
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    rec.waiting_for("the racing pod's scheduling");
    let first = match owner {
        Owner::Bare => {
            create(cluster, &fixtures::race_pod("early")?)?;
            wait_pod(
                cluster,
                "early",
                "the pod's scheduling",
                Duration::from_secs(10),
                scheduled,
            )?
        }
        Owner::Deployment => {
            lifecycle::create_deployment(cluster, &meshed_deployment("early", 1, None)?)?;
            wait("the Deployment's pod scheduled", Duration::from_secs(20), || {
                Ok(deployment_pod(cluster)?.filter(scheduled))
            })?
        }
    };
    let name = pod_name(&first);
    let node = first
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    rec.mark(format!("pod {name} scheduled on {node}"));
    // Broken as the predicate sees it: failed with 126 and restarted (docs/repair.md#broken-pod-predicate).
    rec.waiting_for("validation to fail with 126");
    let broken = wait_pod(
        cluster,
        &name,
        "validation to fail with 126",
        Duration::from_secs(40),
        |p| validation_exits(p).1 == Some(126),
    )?;
    rec.mark("validation failed (126)");
    let rules = netns_rules(cluster, &name)?;
    ensure!(!has_rules(&rules), "rules before any agent ran:\n{rules}");
    ensure!(
        phase(&broken) == "Pending",
        "the racing pod is {}",
        pod_summary(&broken)
    );
    let log = validator_logs(cluster, &name);
    ensure!(
        log.contains("127.0.0.6:15002"),
        "the validator probed 127.0.0.6:15002 and failed:\n{log}"
    );
    ensure!(
        agent_pod_on(cluster, &manifest.namespace, &node)?.is_none(),
        "an agent pod is on {node} before the gate opened"
    );

    open_gate(cluster, &node)?;
    let started = Instant::now();
    rec.mark(format!("gate opened on {node}"));
    let mut acted = None;
    let mut scheduled_seen = false;
    rec.waiting_for(format!("the agent's pod on {node} Ready"));
    loop {
        if acted.is_none()
            && let Some((what, seen)) = marker
            && seen(cluster, &broken)?
        {
            acted = Some(started.elapsed());
            rec.mark(what);
        }
        let pod = agent_pod_on(cluster, &manifest.namespace, &node)?;
        if !scheduled_seen && pod.is_some() {
            scheduled_seen = true;
            rec.mark("agent pod scheduled");
        }
        if pod.as_ref().is_some_and(pod_ready) {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            agent.diag(rec);
            return Err(Stop::Fail(format!(
                "the agent's pod on {node} was not Ready 90 s after the gate opened: {:?}",
                pod.map(|p| p.status)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = Instant::now();
    rec.mark("agent ready (pod Ready: installed)");
    rec.note(format!("gate opened → agent pod Ready: {}", secs(ready - started)));
    Ok(Raced {
        cluster,
        agent,
        namespace: manifest.namespace.clone(),
        node,
        broken,
        started,
        ready,
        marker,
        acted,
    })
}

/// [`race`] on a fresh cluster, then `check` of its end state; the agent's
/// and the racing pod's logs are recorded whatever the outcome.
fn run_race(
    env: &Env,
    rec: &mut Record,
    values: &[&str],
    marker: Option<Marker>,
    owner: Owner,
    check: impl FnOnce(&mut Raced<'_>, &mut Record) -> Step,
) -> Step {
    let cluster = race_cluster(env, rec)?;
    let mut r = race(env, &cluster, rec, values, marker, owner)?;
    let result = check(&mut r, rec);
    r.logs_to(rec);
    result
}

fn race_repair(env: &Env, rec: &mut Record) -> Step {
    run_race(
        env,
        rec,
        &["repair.repairPods=true"],
        Some(("repaired (netns programmed)", repaired)),
        Owner::Bare,
        |r, rec| {
            let pod = r.running_after_action(
                rec,
                "early",
                "the repaired pod Running",
                "repairPods",
                "netns programmed",
                "pod",
            )?;
            ensure!(
                pod.metadata.uid == r.broken.metadata.uid,
                "not the same pod: repaired in place"
            );
            let (cur, last, restarts) = validation_exits(&pod);
            ensure!(
                cur == Some(0) && last == Some(126) && restarts >= 1,
                "validation passed on a retry after 126: {}",
                pod_summary(&pod)
            );
            ensure!(
                app_restarts(&pod) == 0,
                "the app container restarted: {}",
                pod_summary(&pod)
            );
            let rules = netns_rules(r.cluster, "early")?;
            ensure!(has_rules(&rules), "no rules in the repaired pod's netns:\n{rules}");
            Ok(())
        },
    )
}

fn race_delete(env: &Env, rec: &mut Record) -> Step {
    run_race(
        env,
        rec,
        &["repair.repairPods=false", "repair.deletePods=true"],
        Some(("deleted", deleted)),
        Owner::Deployment,
        |r, rec| {
            let old = r.broken.metadata.uid.clone();
            let old_name = r.name();
            r.action(rec)?;
            // The Deployment's ReplicaSet creates a replacement.
            let replacement = wait("the ReplicaSet's replacement", Duration::from_secs(30), || {
                Ok(deployment_pod(r.cluster)?.filter(|p| p.metadata.uid != old))
            })?;
            let name = pod_name(&replacement);
            rec.mark(format!("recreated by the ReplicaSet: {name}"));
            let pod = r.running_after_action(
                rec,
                &name,
                "the new pod Running",
                "deletePods",
                "pod deleted",
                "replacement",
            )?;
            ensure!(
                validation_exits(&pod) == (Some(0), None, 0),
                "the new pod's validation passed the first time: {}",
                pod_summary(&pod)
            );
            let rules = netns_rules(r.cluster, &name)?;
            ensure!(has_rules(&rules), "no rules in the new pod's netns:\n{rules}");
            let events = wait("the DeleteBrokenPod event", Duration::from_secs(10), || {
                let e = events(r.cluster, &old_name, "DeleteBrokenPod")?;
                Ok((!e.is_empty()).then_some(e))
            })?;
            ensure!(
                events.iter().any(|m| m == "pod detected as broken, deleted"),
                "{events:?}"
            );
            Ok(())
        },
    )
}

fn race_label(env: &Env, rec: &mut Record) -> Step {
    run_race(
        env,
        rec,
        &["repair.repairPods=false", "repair.labelPods=true"],
        Some(("labelled", labelled)),
        Owner::Bare,
        |r, rec| {
            let at = r.action(rec)?;
            note_time_to_repair(rec, "labelPods", "label visible", at);
            let pod = get(r.cluster, "early")?.ok_or_else(|| Stop::Fail("the labelled pod is gone".into()))?;
            ensure!(pod.metadata.uid == r.broken.metadata.uid, "the same pod");
            ensure!(
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app"))
                    .map(String::as_str)
                    == Some("hello"),
                "a merge patch keeps the other labels: {:?}",
                pod.metadata.labels
            );
            // Labelling is detection only: the pod keeps failing.
            let later = r.failing_again(&pod, 2, "two more validation failures", Duration::from_secs(30))?;
            rec.mark("still broken");
            ensure!(phase(&later) == "Pending", "the labelled pod: {}", pod_summary(&later));
            ensure!(validation_exits(&later).1 == Some(126), "{}", pod_summary(&later));
            let rules = netns_rules(r.cluster, "early")?;
            ensure!(!has_rules(&rules), "label mode programmed rules:\n{rules}");
            let events = events(r.cluster, "early", "LabelBrokenPod")?;
            ensure!(
                events.iter().any(|m| m == "pod detected as broken, labeled"),
                "{events:?}"
            );
            Ok(())
        },
    )
}

fn race_disabled(env: &Env, rec: &mut Record) -> Step {
    run_race(env, rec, &["repair.enabled=false"], None, Owner::Bare, |r, rec| {
        let later = r.failing_again(&r.broken, 3, "three more validation failures", Duration::from_secs(40))?;
        // Between failures the init container waits in CrashLoopBackOff.
        wait("Init:CrashLoopBackOff", Duration::from_secs(10), || {
            let p = get(r.cluster, "early")?;
            let backoff = p.as_ref().and_then(validation).is_some_and(|v| {
                v.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            });
            Ok(backoff.then_some(()))
        })?;
        rec.mark("still Init:CrashLoopBackOff");
        ensure!(phase(&later) == "Pending", "{}", pod_summary(&later));
        ensure!(
            later
                .metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(BROKEN_LABEL)),
            "labelled with repair off"
        );
        let rules = netns_rules(r.cluster, "early")?;
        ensure!(!has_rules(&rules), "rules with repair off:\n{rules}");
        rec.note(format!(
            "disabled: {} validation restarts, no repair",
            validation_exits(&later).2
        ));
        // The plugin itself is installed: a pod created now starts fine.
        create(r.cluster, &fixtures::race_pod("late")?)?;
        let late = wait_pod(r.cluster, "late", "a new pod Running", Duration::from_secs(30), running)?;
        rec.mark("new pod Running");
        ensure!(validation_exits(&late) == (Some(0), None, 0), "{}", pod_summary(&late));
        ensure!(
            r.agent_log().lines().all(|l| !l.contains("pod repaired")),
            "repaired with repair off"
        );
        Ok(())
    })
}

// ---- the agent's DaemonSet rolled -------------------------------------------

fn agent_restart(env: &Env, rec: &mut Record) -> Step {
    let cluster = race_cluster(env, rec)?;
    let first = lifecycle::manifest(env, &["podAnnotations.rollout=first"], false)?;
    let agent = DaemonSetAgent::deploy(env, &cluster, &first.install, rec)?;
    create(&cluster, &fixtures::race_pod("before")?)?;
    wait_pod(&cluster, "before", "a pod Running", Duration::from_secs(30), running)?;
    rec.mark("pod Running before the roll");

    // A pod-template change: the old pod's SIGTERM cleanup removes the
    // plugin (sidecar mode), the new pod installs it.
    let second = lifecycle::manifest(env, &["podAnnotations.rollout=second"], false)?;
    let ((rolled, rollout, created), seen) = lifecycle::watch::watching(&cluster, &first.namespace, |_| {
        // The workload keeps scaling up through the whole roll.
        lifecycle::roll_under_load(env, &cluster, &second.install, rec, |stop| {
            let mut names = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w-{}", names.len());
                create(&cluster, &fixtures::race_pod(&name)?)?;
                names.push(name);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(names)
        })
    });
    seen.to_timeline(rec);
    let created = created?;
    rollout?;
    let result = (|| {
        let (mut repaired, mut first_try) = (Vec::new(), Vec::new());
        for name in std::iter::once("before".to_string()).chain(created.iter().cloned()) {
            let pod = wait_pod(&cluster, &name, "Running", Duration::from_secs(60), running)?;
            let rules = netns_rules(&cluster, &name)?;
            ensure!(has_rules(&rules), "{name} is Running without rules:\n{rules}");
            let tally = match validation_exits(&pod) {
                (Some(0), None, 0) => &mut first_try,
                (Some(0), Some(126), _) => &mut repaired,
                _ => return Err(Stop::Fail(format!("{name}: {}", pod_summary(&pod)))),
            };
            // The pod from before the roll is checked, not counted: the
            // note's tallies add up to the roll's pods.
            if name != "before" {
                tally.push(name);
            }
        }
        rec.mark("every pod Running with rules");
        rec.note(format!(
            "agent-restart: {} pods created during the roll: {} failed validation and were repaired ({}), {} started with rules",
            created.len(),
            repaired.len(),
            repaired.join(", "),
            first_try.len()
        ));
        ensure!(
            !repaired.is_empty(),
            "no pod fell into the window without the plugin; the scenario did not exercise the race"
        );
        Ok(())
    })();
    match &rolled {
        Some(agent) => agent.diag(rec),
        None => agent.diag(rec),
    }
    rec.diag("pod events", all_events(&cluster));
    result
}

// ---- ordering ------------------------------------------------------------

/// Waits for the pod's `FailedCreatePodSandBox` event, then checks it has
/// no IP and is not Running a while later. A pod that starts instead fails
/// the scenario: that is the un-networked start the ordering must prevent
/// (containerd fails such a sandbox: "failed to find network info").
fn sandbox_fails(cluster: &Cluster, rec: &mut Record, name: &str) -> Step {
    let events = wait(
        &format!("FailedCreatePodSandBox for {name}"),
        Duration::from_secs(20),
        || {
            let e = events(cluster, name, "FailedCreatePodSandBox")?;
            if e.is_empty()
                && let Some(p) = get(cluster, name)?
                && running(&p)
            {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                return Err(Stop::Fail(format!(
                    "{name} started without the primary CNI (pod IP {ip:?}): the sandbox was accepted with a CNI result \
                     holding no IP, which containerd refuses (\"failed to find network info for sandbox\"); {}",
                    pod_summary(&p)
                )));
            }
            Ok((!e.is_empty()).then_some(e))
        },
    )?;
    rec.mark(format!("{name}: FailedCreatePodSandBox"));
    rec.diag(format!("{name} sandbox events"), events.join("\n"));
    // Sandbox retries keep failing.
    std::thread::sleep(Duration::from_secs(2));
    let pod = get(cluster, name)?.ok_or_else(|| Stop::Fail(format!("{name} is gone")))?;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    ensure!(
        !running(&pod) && ip.is_none(),
        "{name} started without the primary CNI: ip {ip:?}, {}",
        pod_summary(&pod)
    );
    Ok(())
}

fn ordering(env: &Env, rec: &mut Record) -> Step {
    if !env.is_local() {
        return skip("removes the node's primary config: embedded cluster only");
    }
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    // The agent's own pod is networked by the primary: it rolls out first,
    // with istio-cni standalone (chained=false, as for multus).
    let agent = DaemonSetAgent::deploy(
        env,
        &cluster,
        &lifecycle::manifest(env, &["chained=false"], false)?.install,
        rec,
    )?;
    rec.mark("istio-cni standalone config installed");
    let node = cluster
        .local()?
        .node(NODE)
        .ok_or_else(|| Stop::Fail(format!("no {NODE}")))?;
    let conf_dir = node.conf_dir();
    let backup = node.root().join("primary-config-backup");
    std::fs::create_dir_all(&backup).context(format!("creating {}", backup.display()))?;
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(&conf_dir).context(format!("listing {}", conf_dir.display()))? {
        let path = entry.context(format!("listing {}", conf_dir.display()))?.path();
        if path.is_file() && !is_istio_cni_file(&path) {
            let to = backup.join(path.file_name().unwrap_or_default());
            std::fs::rename(&path, &to).context(format!("moving {} aside", path.display()))?;
            moved.push((to, path));
        }
    }
    ensure!(!moved.is_empty(), "the node had no primary config to remove");
    rec.mark("primary config removed");

    let files: Vec<String> = std::fs::read_dir(&conf_dir)
        .context(format!("listing {}", conf_dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    rec.diag("conf dir with istio-cni alone", files.join("\n"));
    let result = (|| {
        create(&cluster, &fixtures::race_pod("meshed-alone")?)?;
        create(&cluster, &fixtures::plain_pod("plain-alone")?)?;
        sandbox_fails(&cluster, rec, "meshed-alone")?;
        sandbox_fails(&cluster, rec, "plain-alone")?;

        // Nothing usable in the conf dir: the standalone file moved aside too.
        let standalone = istio_cni_files(&conf_dir)?;
        for path in &standalone {
            let to = backup.join(path.file_name().unwrap_or_default());
            std::fs::rename(path, &to).context(format!("moving {} aside", path.display()))?;
        }
        rec.mark("conf dir empty");
        create(&cluster, &fixtures::plain_pod("plain-nothing")?)?;
        sandbox_fails(&cluster, rec, "plain-nothing")?;
        for path in &standalone {
            let from = backup.join(path.file_name().unwrap_or_default());
            std::fs::rename(&from, path).context(format!("restoring {}", path.display()))?;
        }

        // The primary back: the same pod's sandbox now succeeds.
        for (from, to) in &moved {
            std::fs::rename(from, to).context(format!("restoring {}", to.display()))?;
        }
        rec.mark("primary config restored");
        let pod = wait_pod(
            &cluster,
            "plain-alone",
            "Running once the primary is back",
            Duration::from_secs(30),
            running,
        )?;
        ensure!(
            pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some(),
            "no pod IP: {}",
            pod_summary(&pod)
        );
        rec.mark("plain-alone Running");
        Ok(())
    })();
    agent.diag(rec);
    result
}

/// Whether `path` is a config file istio-cni's installer wrote standalone.
fn is_istio_cni_file(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.contains("\"istio-cni\"") && !t.contains("\"plugins\""))
}

fn istio_cni_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, Stop> {
    let entries = std::fs::read_dir(dir).context(format!("listing {}", dir.display()))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_istio_cni_file(p))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::any_dump;

    #[test]
    fn rules_are_read_when_any_dump_ran_and_an_error_when_none_did() {
        let ok = |s: &str| Ok::<_, String>(s.to_string());
        let err = |s: &str| Err::<String, _>(s.to_string());
        assert_eq!(any_dump([ok("*nat\n"), err("no legacy tool")]).unwrap(), "*nat\n");
        assert_eq!(any_dump([ok(""), ok("")]).unwrap(), "", "both ran: no rules");
        // A node the harness cannot enter (an existing cluster's node shell
        // refused) is an error, not a netns without rules.
        let e = any_dump([err("crictl: not found"), err("nsenter: /proc/1/ns/net")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("crictl") && e.contains("nsenter"), "{e}");
    }
}
