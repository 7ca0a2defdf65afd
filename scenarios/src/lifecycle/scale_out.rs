//! `race/scale-out/...`: a node joins a running cluster; the DaemonSet's
//! pod and a burst of meshed pods waiting for that node are scheduled at
//! once, and whichever sandboxes come up before the agent installed the
//! plugin race it.
//!
//! * `race/scale-out/<mode>` (repairPods, deletePods with a real Deployment
//!   recreating the deleted pods, labelPods, disabled): the end state each
//!   mode leaves; the notes count raced and repaired pods.
//! * `race/scale-out/taint`: the node registers with
//!   `cni.istio.io/not-ready:NoSchedule` and the agent runs with
//!   `taint.enabled=true`: the burst waits until the agent on the new node
//!   removed the taint, so no pod races. Skipped, naming the key, when the
//!   agent under test lacks the value.
//!
//! Embedded cluster only: nodes join through the harness's `Cluster` API.

use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::node::{NodeSpec, NodeTaint};

use super::watch::watching;
use super::{
    Mode, NOT_READY_TAINT, Tally, check_end_state, create_deployment, manifest, meshed_deployment, meshed_pod,
    node_taints, settle,
};
use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::race::create;
use crate::scenario::{Record, Scenario, Step, skip};

/// The node that joins.
pub const JOINING: &str = "node-1";
/// Meshed pods waiting for it.
const BURST: i32 = 6;

pub fn scenarios() -> Vec<Scenario> {
    let mut out: Vec<Scenario> = Mode::ALL
        .into_iter()
        .map(|mode| {
            Scenario::new(
                format!("race/scale-out/{}", mode.name()),
                format!(
                    "a joining node's agent and a burst of meshed pods scheduled at once: pods that raced end as {} leaves them",
                    mode.name()
                ),
                move |env, rec| scale_out(env, rec, mode, false),
            )
        })
        .collect();
    out.push(Scenario::new(
        "race/scale-out/taint",
        "a node registering with cni.istio.io/not-ready and taint.enabled: the burst waits for the agent, no pod races",
        |env, rec| scale_out(env, rec, Mode::RepairPods, true),
    ));
    out
}

/// The not-ready taint a node registers with.
fn not_ready() -> NodeTaint {
    NodeTaint {
        key: NOT_READY_TAINT.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    }
}

/// Adds node [`JOINING`] to the running cluster, registered with the
/// not-ready taint when `tainted`, marking the join.
pub fn join(cluster: &Cluster, rec: &mut Record, tainted: bool) -> Step {
    let mut spec = NodeSpec::new(JOINING);
    if tainted {
        spec = spec.taint(not_ready());
    }
    let name = spec.name.clone();
    rec.mark(format!("node {name} joining"));
    rec.waiting_for(format!("node {name} to join"));
    cluster.add_node(spec)?;
    rec.mark(format!("node {name} joined"));
    Ok(())
}

fn scale_out(env: &Env, rec: &mut Record, mode: Mode, tainted: bool) -> Step {
    if !env.is_local() {
        return skip("a node joins through the embedded cluster's API: embedded cluster only");
    }
    let mut set = mode.values().to_vec();
    if tainted {
        set.push("taint.enabled=true");
    }
    let manifest = manifest(env, &set, false)?;
    let label = if tainted {
        "race/scale-out/taint".to_string()
    } else {
        format!("race/scale-out/{}", mode.name())
    };
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node-0 ready");
    let agent = DaemonSetAgent::deploy(env, &cluster, &manifest.install, rec)?;

    // The burst waits for the node: a Deployment for delete mode (its
    // ReplicaSet recreates what the agent deletes), bare pods otherwise.
    if mode == Mode::DeletePods {
        create_deployment(&cluster, &meshed_deployment("burst", BURST, Some(JOINING))?)?;
    } else {
        for i in 0..BURST {
            create(&cluster, &meshed_pod(&format!("burst-{i}"), Some(JOINING))?)?;
        }
    }
    rec.mark(format!("{BURST} meshed pods Pending for {JOINING}"));

    let (outcome, seen) = watching(&cluster, &manifest.namespace, |watch| {
        join(&cluster, rec, tainted)?;
        rec.waiting_for(format!("the agent on {JOINING} Ready"));
        ensure!(
            watch.wait_for(Duration::from_secs(90), |s| s.agent_ready_on(JOINING)),
            "the agent's pod on {JOINING} was not Ready within 90 s"
        );
        rec.mark(format!("agent on {JOINING} Ready"));
        settle(&cluster, rec, mode, Duration::from_secs(120))
    });
    seen.to_timeline(rec);
    let tally = Tally::of(&seen);
    rec.note(tally.line(&label));
    let result = outcome.and_then(|pods| {
        check_end_state(&cluster, mode, &pods, &tally)?;
        tally.check_raced(
            mode,
            tainted.then_some("the not-ready taint"),
            "the joining node's agent",
        )?;
        if tainted {
            let taints = node_taints(&cluster, JOINING)?;
            ensure!(
                !taints.iter().any(|t| t.starts_with(NOT_READY_TAINT)),
                "the agent left the taint on {JOINING}: {taints:?}"
            );
        }
        rec.mark("end state checked");
        Ok(())
    });
    agent.diag(rec);
    rec.diag("pod events", crate::race::all_events(&cluster));
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mode_and_the_taint_have_a_scenario() {
        let names: Vec<String> = super::scenarios().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "race/scale-out/repairPods",
                "race/scale-out/deletePods",
                "race/scale-out/labelPods",
                "race/scale-out/disabled",
                "race/scale-out/taint"
            ]
        );
    }
}
