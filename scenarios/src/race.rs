//! The `race/...` scenarios: the start-up race the repair controller exists
//! for (docs/repair.md#the-race), reproduced deterministically.
//!
//! The node is ready with only the primary CNI in its chain; a meshed pod is
//! scheduled before the agent installs `istio-cni` (the scenario simply
//! starts the agent late), so its sandbox gets no rules and the real
//! validator (`istio-cni validate`, the `istio-validation` init container)
//! exits 126 and crash-loops. Then the agent starts from the manifest
//! rendered with one repair mode, and the end state is asserted:
//!
//! | scenario | values | end state |
//! |---|---|---|
//! | `race/repairPods` | chart default (`repair.repairPods=true`) | same pod, rules programmed in place, validation passes on its next try, Running, app never restarted |
//! | `race/deletePods` | `repair.deletePods=true` | pod deleted; recreated by its owner (the scenario plays the ReplicaSet) it starts with rules first time |
//! | `race/labelPods` | `repair.labelPods=true` | labelled `cni.istio.io/uninitialized=true`, still broken |
//! | `race/disabled` | `repair.enabled=false` | stuck in Init:CrashLoopBackOff, restarts grow, no rules |
//!
//! Each records a timeline (node ready, pod scheduled, validation failed
//! (126), agent started, agent ready (installed), repaired/deleted/labelled,
//! pod Running) and notes the time to repair from the agent's start (the
//! controller starts before the installer, so it can act before install)
//! and from the agent being ready to the pod Running.
//!
//! `race/agent-restart` rolls the agent (SIGTERM: cleanup removes the
//! plugin, then a new agent installs it) while pods are being created: each
//! pod either fails validation and is repaired or starts with rules; none
//! runs without rules. `race/ordering` shows the mesh plugin can never make a
//! pod start without the primary: with the primary config removed (nothing,
//! or only istio-cni's standalone file) sandboxes fail with
//! `FailedCreatePodSandBox` instead of starting un-networked.
//!
//! All need the embedded cluster (the agent runs as a node process there).
//! The helpers on pods and netns rules below are shared with `skew`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use istio_cni_agent::manifest::{Inputs, Manifest};
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, PostParams};

use crate::deploy::NodeAgent;
use crate::ensure;
use crate::env::Env;
use crate::error::Context;
use crate::fixtures;
use crate::scenario::{Record, Scenario, Step, Stop, skip};

/// The node every race runs on (the default cluster has one).
pub const NODE: &str = "node-0";
const NS: &str = "default";
/// The label label mode writes (docs/repair.md#label).
const BROKEN_LABEL: &str = "cni.istio.io/uninitialized";

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
            "a meshed pod that raced the install is deleted; its owner's new pod starts with rules",
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
            "pods created during an agent rolling restart are repaired or start with rules; none runs without",
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

/// The iptables rules (both iptables backends) in a pod's netns.
pub fn netns_rules(cluster: &Cluster, name: &str) -> String {
    ["iptables-nft-save", "iptables-legacy-save"]
        .iter()
        .filter_map(|tool| cluster.in_pod(NS, name, &[tool]).ok())
        .collect::<Vec<_>>()
        .join("")
}

/// Whether the netns holds the sidecar redirect (the plugin's or repair's).
pub fn has_rules(rules: &str) -> bool {
    rules.contains("-A ISTIO_OUTPUT")
}

/// `(reason, message)` of the pod's events with `reason`.
pub fn events(cluster: &Cluster, pod: &str, reason: &str) -> Result<Vec<String>, Stop> {
    let api: Api<Event> = Api::namespaced(cluster.client(), NS);
    let list = cluster
        .block_on(api.list(&ListParams::default()))
        .map_err(|e| Stop::Fail(format!("listing events: {e}")))?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod) && e.reason.as_deref() == Some(reason))
        .map(|e| e.message.unwrap_or_default())
        .collect())
}

/// The manifest for `--set` values (chart defaults plus these).
pub fn manifest(values: &[&str]) -> Result<Manifest, Stop> {
    Manifest::resolve(&Inputs {
        set: values.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .map_err(|e| Stop::Fail(format!("rendering the manifest with {values:?}: {e}")))
}

/// Starts the agent from `manifest` on [`NODE`] and waits for its install.
pub fn start_agent(env: &Env, cluster: &Cluster, manifest: &Manifest) -> Result<NodeAgent, Stop> {
    let mut agent = NodeAgent::start(env, cluster, NODE, manifest, &[])?;
    agent.wait_installed(Duration::from_secs(30))?;
    Ok(agent)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---- the race ------------------------------------------------------------

/// A repair mode's action: its timeline mark and a check (cluster, agent,
/// the broken pod) that it happened.
type Marker = (&'static str, fn(&Cluster, &NodeAgent, &Pod) -> Result<bool, Stop>);

fn repaired(_: &Cluster, agent: &NodeAgent, _: &Pod) -> Result<bool, Stop> {
    Ok(agent.logs().contains("pod repaired"))
}

fn deleted(cluster: &Cluster, _: &NodeAgent, broken: &Pod) -> Result<bool, Stop> {
    Ok(get(cluster, "early")?.is_none_or(|p| p.metadata.uid != broken.metadata.uid))
}

fn labelled(cluster: &Cluster, _: &NodeAgent, _: &Pod) -> Result<bool, Stop> {
    Ok(get(cluster, "early")?.is_some_and(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(BROKEN_LABEL))
            .is_some_and(|v| v == "true")
    }))
}

/// The race reproduced: a cluster, the broken pod `early`, then the agent.
struct Raced {
    cluster: Cluster,
    agent: NodeAgent,
    broken: Pod,
    /// When the agent process started.
    started: Instant,
    /// When the agent had installed.
    ready: Instant,
    /// The mode's action (its timeline mark, how to see it) and when it was seen.
    marker: Option<Marker>,
    acted: Option<Duration>,
}

impl Raced {
    /// Time from the agent's start to the mode's action (its log line),
    /// marked on the timeline when first seen.
    fn action(&mut self, rec: &mut Record) -> Result<Duration, Stop> {
        if let Some(at) = self.acted {
            return Ok(at);
        }
        let (what, seen) = self
            .marker
            .ok_or_else(|| Stop::Fail("this mode has no action".into()))?;
        let (cluster, agent, broken) = (&self.cluster, &self.agent, &self.broken);
        wait(what, Duration::from_secs(30), || {
            Ok(seen(cluster, agent, broken)?.then_some(()))
        })?;
        let at = self.started.elapsed();
        rec.mark(what);
        self.acted = Some(at);
        Ok(at)
    }

    fn logs_to(&self, rec: &mut Record) {
        rec.diag("agent log", self.agent.logs());
        rec.diag("validator log", validator_logs(&self.cluster));
    }
}

/// The racing pod's validator output: its previous instance's (the one
/// that exited 126 is "previous" as soon as kubelet restarted it), then the
/// current one's.
fn validator_logs(cluster: &Cluster) -> String {
    let previous = cluster
        .previous_pod_logs(NS, "early", "istio-validation")
        .unwrap_or_default();
    let current = cluster.pod_logs(NS, "early", "istio-validation").unwrap_or_default();
    format!("{previous}{current}")
}

/// The race, then the agent with `values`; `marker` is the agent's log line
/// for the mode's action and its timeline mark, watched from the start
/// (repair runs before the installer, so it may act before install).
fn race(env: &Env, rec: &mut Record, values: &[&str], marker: Option<Marker>) -> Result<Raced, Stop> {
    if !env.is_local() {
        return Err(Stop::Skip(
            "the race scenarios start the agent as a node process: embedded cluster only".into(),
        ));
    }
    let manifest = manifest(values)?;
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    create(&cluster, &fixtures::race_pod("early")?)?;
    wait_pod(
        &cluster,
        "early",
        "the pod's scheduling",
        Duration::from_secs(10),
        |p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE),
    )?;
    rec.mark("pod scheduled");
    // Broken as the predicate sees it: failed with 126 and restarted (docs/repair.md#broken-pod-predicate).
    let broken = wait_pod(
        &cluster,
        "early",
        "validation to fail with 126",
        Duration::from_secs(40),
        |p| validation_exits(p).1 == Some(126),
    )?;
    rec.mark("validation failed (126)");
    let rules = netns_rules(&cluster, "early");
    ensure!(!has_rules(&rules), "rules before any agent ran:\n{rules}");
    ensure!(
        phase(&broken) == "Pending",
        "the racing pod is {}",
        pod_summary(&broken)
    );
    let log = validator_logs(&cluster);
    ensure!(
        log.contains("127.0.0.6:15002"),
        "the validator probed 127.0.0.6:15002 and failed:\n{log}"
    );

    let started = Instant::now();
    let mut agent = NodeAgent::start(env, &cluster, NODE, &manifest, &[])?;
    rec.mark("agent started");
    let mut acted = None;
    loop {
        if acted.is_none()
            && let Some((what, seen)) = marker
            && seen(&cluster, &agent, &broken)?
        {
            acted = Some(started.elapsed());
            rec.mark(what);
        }
        if agent.installed() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            // Fails with the agent's log.
            agent.wait_installed(Duration::ZERO)?;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready = Instant::now();
    rec.mark("agent ready (installed)");
    rec.note(format!("agent start → installed: {}", secs(ready - started)));
    Ok(Raced {
        cluster,
        agent,
        broken,
        started,
        ready,
        marker,
        acted,
    })
}

fn race_repair(env: &Env, rec: &mut Record) -> Step {
    let mut r = race(
        env,
        rec,
        &["repair.repairPods=true"],
        Some(("repaired (netns programmed)", repaired)),
    )?;
    let result = (|| {
        let repaired = r.action(rec)?;
        let pod = wait_pod(
            &r.cluster,
            "early",
            "the repaired pod Running",
            Duration::from_secs(30),
            running,
        )?;
        let to_running = r.ready.elapsed();
        rec.mark("pod Running");
        rec.note(format!(
            "repairPods: time to repair (agent start → netns programmed): {}",
            secs(repaired)
        ));
        rec.note(format!("repairPods: agent ready → pod Running: {}", secs(to_running)));

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
        let rules = netns_rules(&r.cluster, "early");
        ensure!(has_rules(&rules), "no rules in the repaired pod's netns:\n{rules}");
        Ok(())
    })();
    r.logs_to(rec);
    result
}

fn race_delete(env: &Env, rec: &mut Record) -> Step {
    let mut r = race(
        env,
        rec,
        &["repair.repairPods=false", "repair.deletePods=true"],
        Some(("deleted", deleted)),
    )?;
    let result = (|| {
        let old = r.broken.metadata.uid.clone();
        let deleted = r.action(rec)?;
        // The owner (a ReplicaSet) creates a replacement.
        create(&r.cluster, &fixtures::race_pod("early")?)?;
        rec.mark("recreated by its owner");
        let pod = wait_pod(
            &r.cluster,
            "early",
            "the new pod Running",
            Duration::from_secs(30),
            running,
        )?;
        let to_running = r.ready.elapsed();
        rec.mark("pod Running");
        rec.note(format!(
            "deletePods: time to repair (agent start → pod deleted): {}",
            secs(deleted)
        ));
        rec.note(format!(
            "deletePods: agent ready → replacement Running: {}",
            secs(to_running)
        ));

        ensure!(pod.metadata.uid != old, "a new pod");
        ensure!(
            validation_exits(&pod) == (Some(0), None, 0),
            "the new pod's validation passed the first time: {}",
            pod_summary(&pod)
        );
        let rules = netns_rules(&r.cluster, "early");
        ensure!(has_rules(&rules), "no rules in the new pod's netns:\n{rules}");
        let events = wait("the DeleteBrokenPod event", Duration::from_secs(10), || {
            let e = events(&r.cluster, "early", "DeleteBrokenPod")?;
            Ok((!e.is_empty()).then_some(e))
        })?;
        ensure!(
            events.iter().any(|m| m == "pod detected as broken, deleted"),
            "{events:?}"
        );
        Ok(())
    })();
    r.logs_to(rec);
    result
}

fn race_label(env: &Env, rec: &mut Record) -> Step {
    let mut r = race(
        env,
        rec,
        &["repair.repairPods=false", "repair.labelPods=true"],
        Some(("labelled", labelled)),
    )?;
    let result = (|| {
        let at = r.action(rec)?;
        rec.note(format!(
            "labelPods: time to repair (agent start → label visible): {}",
            secs(at)
        ));
        let pod = get(&r.cluster, "early")?.ok_or_else(|| Stop::Fail("the labelled pod is gone".into()))?;
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
        let restarts = validation_exits(&pod).2;
        let later = wait_pod(
            &r.cluster,
            "early",
            "two more validation failures",
            Duration::from_secs(30),
            |p| validation_exits(p).2 >= restarts + 2,
        )?;
        rec.mark("still broken");
        ensure!(phase(&later) == "Pending", "the labelled pod: {}", pod_summary(&later));
        ensure!(validation_exits(&later).1 == Some(126), "{}", pod_summary(&later));
        let rules = netns_rules(&r.cluster, "early");
        ensure!(!has_rules(&rules), "label mode programmed rules:\n{rules}");
        let events = events(&r.cluster, "early", "LabelBrokenPod")?;
        ensure!(
            events.iter().any(|m| m == "pod detected as broken, labeled"),
            "{events:?}"
        );
        Ok(())
    })();
    r.logs_to(rec);
    result
}

fn race_disabled(env: &Env, rec: &mut Record) -> Step {
    let r = race(env, rec, &["repair.enabled=false"], None)?;
    let result = (|| {
        let restarts = validation_exits(&r.broken).2;
        let later = wait_pod(
            &r.cluster,
            "early",
            "three more validation failures",
            Duration::from_secs(40),
            |p| validation_exits(p).2 >= restarts + 3,
        )?;
        // Between failures the init container waits in CrashLoopBackOff.
        wait("Init:CrashLoopBackOff", Duration::from_secs(10), || {
            let p = get(&r.cluster, "early")?;
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
        let rules = netns_rules(&r.cluster, "early");
        ensure!(!has_rules(&rules), "rules with repair off:\n{rules}");
        rec.note(format!(
            "disabled: {} validation restarts, no repair",
            validation_exits(&later).2
        ));
        // The plugin itself is installed: a pod created now starts fine.
        create(&r.cluster, &fixtures::race_pod("late")?)?;
        let late = wait_pod(
            &r.cluster,
            "late",
            "a new pod Running",
            Duration::from_secs(30),
            running,
        )?;
        rec.mark("new pod Running");
        ensure!(validation_exits(&late) == (Some(0), None, 0), "{}", pod_summary(&late));
        ensure!(
            r.agent.logs().lines().all(|l| !l.contains("pod repaired")),
            "repaired with repair off"
        );
        Ok(())
    })();
    r.logs_to(rec);
    result
}

// ---- agent rolling restart ---------------------------------------------

fn agent_restart(env: &Env, rec: &mut Record) -> Step {
    if !env.is_local() {
        return skip("the agent runs as a node process: embedded cluster only");
    }
    let manifest = manifest(&[])?;
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node ready");
    let first = start_agent(env, &cluster, &manifest)?;
    rec.mark("agent ready (installed)");
    create(&cluster, &fixtures::race_pod("before")?)?;
    wait_pod(&cluster, "before", "a pod Running", Duration::from_secs(30), running)?;
    rec.mark("pod Running before the restart");

    let stop = AtomicBool::new(false);
    let mut second: Option<NodeAgent> = None;
    let mut log = String::new();
    let created: Result<Vec<String>, Stop> = std::thread::scope(|s| {
        // The workload keeps scaling up through the whole rollout.
        let creator = s.spawn(|| -> Result<Vec<String>, Stop> {
            let mut names = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("w-{i}");
                create(&cluster, &fixtures::race_pod(&name)?)?;
                names.push(name);
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok(names)
        });
        let rollout = (|| -> Step {
            std::thread::sleep(Duration::from_millis(500));
            // SIGTERM: sidecar-mode cleanup removes the plugin (the race re-opens).
            let code = first.stop()?;
            rec.mark("agent stopped (plugin removed)");
            ensure!(code == Some(0), "the agent exited with {code:?}");
            std::thread::sleep(Duration::from_millis(1500));
            let agent = start_agent(env, &cluster, &manifest)?;
            rec.mark("new agent ready (installed)");
            second = Some(agent);
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })();
        stop.store(true, Ordering::SeqCst);
        let names = creator
            .join()
            .map_err(|_| Stop::Fail("the pod creator panicked".into()))??;
        rollout.map(|()| names)
    });
    let created = created?;
    let result = (|| {
        let (mut repaired, mut first_try) = (Vec::new(), Vec::new());
        for name in std::iter::once("before".to_string()).chain(created.iter().cloned()) {
            let pod = wait_pod(&cluster, &name, "Running", Duration::from_secs(60), running)?;
            let rules = netns_rules(&cluster, &name);
            ensure!(has_rules(&rules), "{name} is Running without rules:\n{rules}");
            let tally = match validation_exits(&pod) {
                (Some(0), None, 0) => &mut first_try,
                (Some(0), Some(126), _) => &mut repaired,
                _ => return Err(Stop::Fail(format!("{name}: {}", pod_summary(&pod)))),
            };
            // The pod from before the rollout is checked, not counted: the
            // note's tallies add up to the rollout's pods.
            if name != "before" {
                tally.push(name);
            }
        }
        rec.mark("every pod Running with rules");
        rec.note(format!(
            "agent-restart: {} pods created during the rollout: {} failed validation and were repaired ({}), {} started with rules",
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
    if let Some(agent) = &second {
        log.push_str(&agent.logs());
    }
    rec.diag("new agent log", log);
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
        if path.is_file() {
            let to = backup.join(path.file_name().unwrap_or_default());
            std::fs::rename(&path, &to).context(format!("moving {} aside", path.display()))?;
            moved.push((to, path));
        }
    }
    ensure!(!moved.is_empty(), "the node had no primary config to remove");
    rec.mark("primary config removed");

    // Nothing in the conf dir.
    create(&cluster, &fixtures::plain_pod("plain-nothing")?)?;
    sandbox_fails(&cluster, rec, "plain-nothing")?;

    // Only istio-cni's standalone file (chained=false, as for multus).
    let manifest = manifest(&["chained=false"])?;
    let agent = start_agent(env, &cluster, &manifest)?;
    rec.mark("istio-cni standalone config installed");
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
    rec.diag("agent log", agent.logs());
    result
}
