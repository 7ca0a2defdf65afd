//! The seed's lifecycle as scenarios, with the agent deployed as its
//! DaemonSet through the API on every backend:
//!
//! ```text
//! upgrade    upgrade/in-place/<mode>, upgrade/in-place/safe-upgrade, upgrade/independent
//! scale_out  race/scale-out/<mode>, race/scale-out/taint: a node joins a running cluster
//! job        race/job, race/job/taint: a run-to-completion meshed pod on a fresh node
//! watch      what the cluster did, seen through the API (timeline, per-pod facts)
//! ```
//!
//! Shared here: the repair modes, the manifest with the scenario's values
//! (an opt-in feature the agent lacks is a skip naming the key), the gate
//! that keeps the agent's pods off a node until the scenario labels it,
//! meshed Deployments, the agent's DaemonSet rolled under load, and the end
//! state every mode must reach.

pub mod job;
pub mod scale_out;
pub mod upgrade;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use istio_cni_agent::manifest::{Inputs, Manifest, Source};
use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::fixtures;
use crate::race::{has_rules, netns_rules, pod_summary, running, validation_exits};
use crate::scenario::{Record, Scenario, Step, Stop};
use crate::system::Install;
use watch::Seen;

/// Where the app pods live.
pub const NS: &str = "default";
/// The label label mode writes (docs/repair.md#label).
pub const BROKEN_LABEL: &str = "cni.istio.io/uninitialized";
/// The taint nodes register with when the agent's `taint.enabled` is on.
pub const NOT_READY_TAINT: &str = "cni.istio.io/not-ready";
/// The node label the gated DaemonSet requires ([`GATE_VALUES`]).
pub const GATE_LABEL: &str = "scenarios.istio-cni-rs/agent";
/// Values keeping the agent's pods off every node without [`GATE_LABEL`]:
/// the scenario decides when the agent lands, so the losing order of the
/// race is reproduced, not hoped for.
pub const GATE_VALUES: &str = "affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions:
        - key: scenarios.istio-cni-rs/agent
          operator: In
          values: [allowed]
";

/// Every lifecycle scenario.
pub fn scenarios() -> Vec<Scenario> {
    let mut all = upgrade::scenarios();
    all.extend(scale_out::scenarios());
    all.extend(job::scenarios());
    all
}

/// A repair mode of the agent's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    RepairPods,
    DeletePods,
    LabelPods,
    Disabled,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::RepairPods, Mode::DeletePods, Mode::LabelPods, Mode::Disabled];

    /// The name in scenario names (`repairPods`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Mode::RepairPods => "repairPods",
            Mode::DeletePods => "deletePods",
            Mode::LabelPods => "labelPods",
            Mode::Disabled => "disabled",
        }
    }

    /// The chart values selecting it.
    pub fn values(self) -> &'static [&'static str] {
        match self {
            Mode::RepairPods => &["repair.repairPods=true"],
            Mode::DeletePods => &["repair.repairPods=false", "repair.deletePods=true"],
            Mode::LabelPods => &["repair.repairPods=false", "repair.labelPods=true"],
            Mode::Disabled => &["repair.enabled=false"],
        }
    }
}

/// Values for the embedded cluster: its nodes share this machine's pid
/// namespace, so the DaemonSet's `/proc` mount does not show a node's init
/// as pid 1 (here pid 1 is not even readable by root), and repair's guard
/// against the host netns takes the agent's own netns instead, as Istio's
/// `ALLOW_SWITCH_TO_HOST_NS=false` does.
pub const EMBEDDED_VALUES: &str = "env:
  ALLOW_SWITCH_TO_HOST_NS: \"false\"
";

/// Opt-in agent features a system under test may lack, by values key.
const FEATURES: [(&str, &str); 2] = [("taint.", "the not-ready taint"), ("safeUpgrade.", "safe upgrade")];

/// What a scenario installs: the values for the system under test, and the
/// project's manifest for them (its namespace; it proves the values valid).
#[derive(Debug)]
pub struct Planned {
    /// The agent's namespace.
    pub namespace: String,
    /// The values, for [`crate::daemonset::DaemonSetAgent`].
    pub install: Install,
    /// The project's manifest for them.
    pub manifest: Manifest,
}

/// The install for `set` (Helm `--set` syntax) on `env`'s cluster, gated
/// by [`GATE_VALUES`] when `gated`. A feature key the agent's values do not
/// know skips the scenario, naming the key.
pub fn manifest(env: &Env, set: &[&str], gated: bool) -> Result<Planned, Stop> {
    let mut values = Vec::new();
    if env.is_local() {
        values.push(Source::new("the embedded cluster's values", EMBEDDED_VALUES));
    }
    if gated {
        values.push(Source::new("the scenario's agent gate", GATE_VALUES));
    }
    let inputs = Inputs {
        set: set.iter().map(|s| s.to_string()).collect(),
        values,
        ..Default::default()
    };
    let install = Install {
        set: inputs.set.clone(),
        values: inputs
            .values
            .iter()
            .map(|v| (v.origin.clone(), v.text.clone()))
            .collect(),
        ..Install::default()
    };
    let resolved = Manifest::resolve(&inputs).map_err(|e| {
        let text = e.to_string();
        let feature = set.iter().find_map(|s| {
            let key = s.split_once('=').map_or(*s, |(k, _)| k);
            FEATURES
                .iter()
                .find(|(prefix, _)| {
                    // The whole key, or its unknown first segment (`taint`).
                    let top = format!("`{}`", prefix.trim_end_matches('.'));
                    key.starts_with(prefix) && (text.contains(key) || text.contains(&top))
                })
                .map(|(_, what)| (key, *what))
        });
        match feature {
            Some((key, what)) => Stop::Skip(format!(
                "the agent under test lacks {what}: its values refuse {key} ({text})"
            )),
            None => Stop::Fail(format!("rendering the manifest with {set:?}: {text}")),
        }
    })?;
    Ok(Planned {
        namespace: resolved.namespace.clone(),
        install,
        manifest: resolved,
    })
}

/// Sets label `key=value` on `node` (a merge patch).
pub fn label_node(cluster: &Cluster, node: &str, key: &str, value: &str) -> Step {
    let api: Api<Node> = Api::all(cluster.client());
    let patch = json!({"metadata": {"labels": {key: value}}});
    cluster
        .block_on(api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)))
        .map_err(|e| Stop::Fail(format!("labelling node {node} {key}={value}: {e}")))?;
    Ok(())
}

/// Opens the gate on `node`: the agent's pod is scheduled there now.
pub fn open_gate(cluster: &Cluster, node: &str) -> Step {
    label_node(cluster, node, GATE_LABEL, "allowed")
}

/// Whether the pod's `Ready` condition is true.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The taints of `node` by key.
pub fn node_taints(cluster: &Cluster, node: &str) -> Result<Vec<String>, Stop> {
    let api: Api<Node> = Api::all(cluster.client());
    let n = cluster
        .block_on(api.get(node))
        .map_err(|e| Stop::Fail(format!("reading node {node}: {e}")))?;
    Ok(n.spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect())
}

/// The race scenarios' meshed pod (Istio 1.29's classic injected pod, a
/// 1 s validation probe), pinned to `node` when given.
pub fn meshed_pod(name: &str, node: Option<&str>) -> Result<Pod, Stop> {
    let mut pod = fixtures::race_pod(name)?;
    if let (Some(node), Some(spec)) = (node, pod.spec.as_mut()) {
        spec.node_selector = Some([("kubernetes.io/hostname".to_string(), node.to_string())].into());
    }
    Ok(pod)
}

/// A Deployment of `replicas` meshed pods ([`meshed_pod`]'s template),
/// selected by `lifecycle-app=<name>`.
pub fn meshed_deployment(name: &str, replicas: i32, node: Option<&str>) -> Result<Deployment, Stop> {
    let pod = meshed_pod(name, node)?;
    let mut labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.insert("lifecycle-app".into(), name.into());
    let template = json!({
        "metadata": {"labels": labels, "annotations": pod.metadata.annotations},
        "spec": pod.spec,
    });
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"lifecycle-app": name}},
            "template": template,
        }
    }))
    .map_err(|e| Stop::Fail(format!("the Deployment {name}: {e}")))
}

pub fn create_deployment(cluster: &Cluster, d: &Deployment) -> Step {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), NS);
    cluster
        .block_on(api.create(&PostParams::default(), d))
        .map_err(|e| Stop::Fail(format!("creating Deployment {:?}: {e}", d.metadata.name)))?;
    Ok(())
}

/// Sets the Deployment's replicas (the scale a HorizontalPodAutoscaler writes).
pub fn scale_deployment(cluster: &Cluster, name: &str, replicas: i32) -> Step {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), NS);
    let patch = json!({"spec": {"replicas": replicas}});
    cluster
        .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
        .map_err(|e| Stop::Fail(format!("scaling Deployment {name} to {replicas}: {e}")))?;
    Ok(())
}

/// Rolls the agent's DaemonSet to `install` while `load` creates pods on
/// its own thread: the template changes 500 ms into the load, and the load
/// is told to stop (its flag set) 500 ms after the roll completed, or at
/// once when the roll failed. The rolled agent when the roll completed (for
/// its diagnostics), the roll's outcome and the load's.
pub fn roll_under_load<'a, T: Send>(
    env: &Env,
    cluster: &'a Cluster,
    install: &Install,
    rec: &mut Record,
    load: impl FnOnce(&AtomicBool) -> Result<T, Stop> + Send,
) -> (Option<DaemonSetAgent<'a>>, Step, Result<T, Stop>) {
    let stop = AtomicBool::new(false);
    let mut rolled = None;
    std::thread::scope(|s| {
        let creator = s.spawn(|| load(&stop));
        let roll = (|| -> Step {
            std::thread::sleep(Duration::from_millis(500));
            let applied = DaemonSetAgent::apply(env, cluster, install, rec)?;
            rec.mark("DaemonSet template changed (roll started)");
            let took = applied.wait_rolled_out(Duration::from_secs(120))?;
            rec.mark(format!("DaemonSet rolled ({} ms)", took.as_millis()));
            rolled = Some(applied);
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        let created = creator
            .join()
            .map_err(|_| Stop::Fail("the pod creator panicked".into()))
            .and_then(|r| r);
        (rolled, roll, created)
    })
}

/// The app pods now, those being deleted left out.
pub fn app_pods(cluster: &Cluster) -> Result<Vec<Pod>, Stop> {
    let pods: Vec<Pod> = crate::race::list(cluster, NS, &ListParams::default(), "pods")?;
    Ok(pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn raced(p: &Pod) -> bool {
    let (cur, last, _) = validation_exits(p);
    cur == Some(126) || last == Some(126)
}

fn labelled(p: &Pod) -> bool {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(BROKEN_LABEL))
        .is_some_and(|v| v == "true")
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Whether `p` is where `mode` leaves a pod for good: Running, or (label
/// mode) labelled after the race, or (repair off) crash-looping after it.
fn settled(mode: Mode, p: &Pod) -> bool {
    running(p)
        || match mode {
            Mode::RepairPods | Mode::DeletePods => false,
            Mode::LabelPods => raced(p) && labelled(p),
            Mode::Disabled => raced(p),
        }
}

/// Waits until every app pod is where `mode` leaves it; the pods then.
pub fn settle(cluster: &Cluster, rec: &mut Record, mode: Mode, timeout: Duration) -> Result<Vec<Pod>, Stop> {
    rec.waiting_for(format!("every app pod settled ({})", mode.name()));
    let deadline = Instant::now() + timeout;
    loop {
        let pods = app_pods(cluster)?;
        if !pods.is_empty() && pods.iter().all(|p| settled(mode, p)) {
            rec.mark(format!("every app pod settled ({} pods)", pods.len()));
            return Ok(pods);
        }
        if Instant::now() > deadline {
            let open: Vec<String> = pods
                .iter()
                .filter(|p| !settled(mode, p))
                .map(|p| format!("{}: {}", name(p), pod_summary(p)))
                .collect();
            return Err(Stop::Fail(format!(
                "after {timeout:?} these pods are not where {} leaves them: {}",
                mode.name(),
                open.join("; ")
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How the pods fared: counted from what the watcher saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub pods: usize,
    pub first_try: usize,
    pub raced: Vec<String>,
    pub repaired: Vec<String>,
    pub deleted: Vec<String>,
    pub labelled: Vec<String>,
    pub stuck: Vec<String>,
}

impl Tally {
    pub fn of(seen: &Seen) -> Tally {
        let mut t = Tally::default();
        for p in seen.pods.values() {
            t.pods += 1;
            if p.first_try {
                t.first_try += 1;
            }
            if !p.raced {
                continue;
            }
            t.raced.push(p.name.clone());
            let to = if p.gone {
                &mut t.deleted
            } else if p.running {
                &mut t.repaired
            } else if p.labelled {
                &mut t.labelled
            } else {
                &mut t.stuck
            };
            to.push(p.name.clone());
        }
        t
    }

    /// Whether pods raced `what` as they must: none with a guard against
    /// the race on (`guard` names it), some without one (else the scenario
    /// did not exercise `mode`).
    pub fn check_raced(&self, mode: Mode, guard: Option<&str>, what: &str) -> Step {
        match guard {
            Some(guard) => ensure!(
                self.raced.is_empty(),
                "with {guard} no pod may race {what}; raced: {:?}",
                self.raced
            ),
            None => ensure!(
                !self.raced.is_empty(),
                "no pod raced {what}; the scenario did not exercise {}",
                mode.name()
            ),
        }
        Ok(())
    }

    /// One line for the notes.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: {} pods, {} started with rules first time, {} raced the install (validation 126): \
             {} repaired in place, {} deleted, {} labelled, {} left broken",
            self.pods,
            self.first_try,
            self.raced.len(),
            self.repaired.len(),
            self.deleted.len(),
            self.labelled.len(),
            self.stuck.len()
        )
    }
}

/// The end state every mode must reach, on the settled `pods`: each
/// Running pod has the redirect in its netns; raced pods are repaired in
/// place (repairPods), gone (deletePods), labelled and broken (labelPods) or
/// broken without a label (repair off).
pub fn check_end_state(cluster: &Cluster, mode: Mode, pods: &[Pod], tally: &Tally) -> Step {
    for p in pods {
        let n = name(p);
        if running(p) {
            let rules = netns_rules(cluster, &n)?;
            ensure!(has_rules(&rules), "{n} is Running without rules:\n{rules}");
            ensure!(!labelled(p), "{n} is Running but labelled broken");
        } else {
            ensure!(
                !has_rules(&netns_rules(cluster, &n)?),
                "{n} has rules but is not Running"
            );
        }
    }
    // Each mode leaves raced pods in one outcome; the other three stay empty.
    let outcome = match mode {
        Mode::RepairPods => "running",
        Mode::DeletePods => "deleted",
        Mode::LabelPods => "labelled",
        Mode::Disabled => "broken",
    };
    let outcomes = [
        ("running", &tally.repaired),
        ("deleted", &tally.deleted),
        ("labelled", &tally.labelled),
        ("broken", &tally.stuck),
    ];
    let strays: Vec<String> = outcomes
        .iter()
        .filter(|(o, pods)| *o != outcome && !pods.is_empty())
        .map(|(o, pods)| format!("{o} {pods:?}"))
        .collect();
    ensure!(
        strays.is_empty(),
        "{} should leave raced pods {outcome}, but: {}",
        mode.name(),
        strays.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_reaches_the_daemonsets_affinity() {
        let m = manifest(&Env::local_for_tests(), &[], true).unwrap();
        let env = m.manifest.agent_env("node-0", "istio-cni-node-x");
        assert_eq!(env["ALLOW_SWITCH_TO_HOST_NS"], "false", "the embedded value wins");
        let objects = m.manifest.objects().to_values().unwrap();
        let ds = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let term = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(term["matchExpressions"][0]["key"], GATE_LABEL, "{term}");
    }

    #[test]
    fn an_unknown_feature_key_skips_and_other_errors_fail() {
        match manifest(&Env::local_for_tests(), &["taint.noSuchKey=true"], false) {
            Err(Stop::Skip(why)) => assert!(why.contains("taint.noSuchKey"), "{why}"),
            other => panic!("{other:?}"),
        }
        match manifest(&Env::local_for_tests(), &["repair.noSuchKey=true"], false) {
            Err(Stop::Fail(why)) => assert!(why.contains("repair.noSuchKey"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_meshed_deployment_selects_its_template() {
        let d = meshed_deployment("web", 3, Some("node-1")).unwrap();
        let spec = d.spec.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["lifecycle-app"], "web");
        assert_eq!(spec.selector.match_labels.unwrap()["lifecycle-app"], "web");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["kubernetes.io/hostname"], "node-1");
        assert_eq!(pod.init_containers.unwrap()[0].name, "istio-validation");
    }
}
