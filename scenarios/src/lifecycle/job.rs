//! `race/job...`: a meshed run-to-completion pod on a node that just joined.
//!
//! A Job's pods run with `restartPolicy: Never`, so a validation failure
//! (126) fails the pod for good: no repair mode can bring it back (repair
//! acts on pods whose validator is retried). The embedded cluster has no
//! Job controller (no `batch/v1` resource), so the Job's pod is modelled as
//! the pod a Job creates: a bare pod with `restartPolicy: Never`, labelled
//! `job-name`, Istio 1.29's native-sidecar shape (the sidecar ends with the
//! app) and an app that finishes. What is not modelled is the Job's own
//! retry of a failed pod (`backoffLimit`): each retry on a node without the
//! plugin fails the same way.
//!
//! * `race/job`: no mitigation. The agent's pods are gated off the new node
//!   (see [`super::GATE_VALUES`]) until the pod has failed, reproducing the
//!   losing order; the pod ends `Failed` with validation 126 and stays so
//!   once the agent is Ready there.
//! * `race/job/taint`: the node registers with `cni.istio.io/not-ready` and
//!   the agent runs with `taint.enabled=true`: the pod stays unscheduled
//!   however late the agent comes, then runs with rules and `Succeeded`.

use std::time::Duration;

use istio_cni_kind::cluster::ClusterSpec;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::scale_out::{JOINING, join};
use super::watch::watching;
use super::{NOT_READY_TAINT, manifest, node_taints, open_gate};
use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::fixtures;
use crate::race::{NODE, create, get, phase, pod_summary, validation_exits, wait_pod};
use crate::scenario::{Record, Scenario, Step, Stop, skip};

const JOB: &str = "job-0";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(
            "race/job",
            "a meshed Job's pod (restartPolicy Never) on a fresh node without the plugin fails for good",
            |env, rec| job(env, rec, false),
        ),
        Scenario::new(
            "race/job/taint",
            "with the not-ready taint a meshed Job's pod waits for the agent on a fresh node, then runs with rules and succeeds",
            |env, rec| job(env, rec, true),
        ),
    ]
}

/// The pod a Job makes: Istio 1.29's native-sidecar injection, a 1 s
/// validation probe, `restartPolicy: Never`, an app that runs a second and
/// exits 0, pinned to `node`.
pub fn job_pod(name: &str, node: &str) -> Result<Pod, Stop> {
    let mut pod = fixtures::fast_validation_pod("1.29", "native", name)?;
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("job-name".into(), name.into());
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| Stop::Fail("the native fixture has no spec".into()))?;
    spec.restart_policy = Some("Never".into());
    spec.node_selector = Some([("kubernetes.io/hostname".to_string(), node.to_string())].into());
    spec.containers = vec![
        serde_json::from_value(json!({"name": "job", "image": "shell", "args": ["-c", "sleep 1"]}))
            .map_err(|e| Stop::Fail(format!("the job container: {e}")))?,
    ];
    Ok(pod)
}

fn job(env: &Env, rec: &mut Record, tainted: bool) -> Step {
    if !env.is_local() {
        return skip("a node joins through the embedded cluster's API: embedded cluster only");
    }
    let set: &[&str] = if tainted { &["taint.enabled=true"] } else { &[] };
    let manifest = manifest(env, set, true)?;
    let cluster = env.cluster(ClusterSpec::default())?;
    rec.mark("node-0 ready");
    let agent = DaemonSetAgent::apply(env, &cluster, &manifest.install, rec)?;
    open_gate(&cluster, NODE)?;
    let took = agent.wait_rolled_out(Duration::from_secs(120))?;
    rec.mark(format!("agent on {NODE} Ready ({} ms)", took.as_millis()));
    create(&cluster, &job_pod(JOB, JOINING)?)?;
    rec.mark(format!("job pod {JOB} Pending for {JOINING}"));

    let (outcome, seen) = watching(&cluster, &manifest.namespace, |watch| {
        join(&cluster, rec, tainted)?;
        if tainted {
            // The agent is not there yet: the taint alone holds the pod.
            std::thread::sleep(Duration::from_secs(3));
            let p = get(&cluster, JOB)?.ok_or_else(|| Stop::Fail(format!("{JOB} is gone")))?;
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            ensure!(
                node.is_none(),
                "{JOB} was scheduled to {node:?} while {JOINING} is tainted {NOT_READY_TAINT}"
            );
            rec.mark(format!("{JOB} held unscheduled by the taint"));
        } else {
            let failed = wait_pod(&cluster, JOB, "the job pod Failed", Duration::from_secs(60), |p| {
                phase(p) == "Failed"
            })?;
            ensure!(
                validation_exits(&failed).0 == Some(126),
                "the job pod failed on validation 126: {}",
                pod_summary(&failed)
            );
            rec.mark(format!("{JOB} Failed (validation 126)"));
        }
        open_gate(&cluster, JOINING)?;
        rec.mark(format!("gate opened on {JOINING}"));
        ensure!(
            watch.wait_for(Duration::from_secs(90), |s| s.agent_ready_on(JOINING)),
            "the agent's pod on {JOINING} was not Ready within 90 s"
        );
        rec.mark(format!("agent on {JOINING} Ready"));
        if tainted {
            let done = wait_pod(&cluster, JOB, "the job pod Succeeded", Duration::from_secs(60), |p| {
                matches!(phase(p), "Succeeded" | "Failed")
            })?;
            ensure!(
                phase(&done) == "Succeeded" && validation_exits(&done) == (Some(0), None, 0),
                "the job pod ran with rules (validation passed first time) and succeeded: {}",
                pod_summary(&done)
            );
            let taints = node_taints(&cluster, JOINING)?;
            ensure!(
                !taints.iter().any(|t| t.starts_with(NOT_READY_TAINT)),
                "the agent left the taint on {JOINING}: {taints:?}"
            );
        } else {
            // Nothing revives it: a Job's pod is never restarted.
            std::thread::sleep(Duration::from_secs(3));
            let p = get(&cluster, JOB)?.ok_or_else(|| Stop::Fail(format!("{JOB} is gone")))?;
            ensure!(
                phase(&p) == "Failed" && validation_exits(&p).2 == 0,
                "the failed job pod stays Failed, validation never retried: {}",
                pod_summary(&p)
            );
        }
        Ok(())
    });
    seen.to_timeline(rec);
    let tally = super::Tally::of(&seen);
    let label = if tainted { "race/job/taint" } else { "race/job" };
    rec.note(tally.line(label));
    agent.diag(rec);
    rec.diag("pod events", crate::race::all_events(&cluster));
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_pod_never_restarts_and_finishes() {
        let pod = job_pod("job-0", "node-1").unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].image.as_deref(), Some("shell"));
        let inits = spec.init_containers.unwrap();
        assert_eq!(inits[0].name, "istio-validation");
        assert_eq!(inits[1].restart_policy.as_deref(), Some("Always"), "a native sidecar");
        assert_eq!(pod.metadata.labels.unwrap()["job-name"], "job-0");
    }
}
