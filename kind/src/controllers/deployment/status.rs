//! A Deployment's status from its ReplicaSets, and its two conditions:
//! `Available` (at least `replicas - maxUnavailable` pods available) and
//! `Progressing` (`NewReplicaSetCreated`, `ReplicaSetUpdated` while the
//! rollout moves, `NewReplicaSetAvailable` once it is complete,
//! `ProgressDeadlineExceeded` when it has not moved for
//! `progressDeadlineSeconds`, `DeploymentPaused`). `kubectl rollout status`
//! reads the counters; `helm --wait` also the `Progressing` reason.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::rollout::surge_and_unavailable;

/// What the pass knows besides the ReplicaSets.
pub struct Facts<'a> {
    /// The ReplicaSet of the current template, if it exists.
    pub new: Option<&'a ReplicaSet>,
    /// Whether this pass created it.
    pub created: bool,
    pub now: Timestamp,
}

/// The status, and when to look again for the progress deadline.
pub fn status(d: &Deployment, all: &[&ReplicaSet], facts: &Facts<'_>) -> (DeploymentStatus, Option<Duration>) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    fn st_of(rs: &ReplicaSet) -> k8s_openapi::api::apps::v1::ReplicaSetStatus {
        rs.status.clone().unwrap_or_default()
    }
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let wanted = sum(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    let available = sum(|rs| st_of(rs).available_replicas.unwrap_or(0));
    let old = d.status.clone().unwrap_or_default();
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(|rs| st_of(rs).replicas)),
        updated_replicas: Some(facts.new.map_or(0, |rs| st_of(rs).replicas)),
        ready_replicas: Some(sum(|rs| st_of(rs).ready_replicas.unwrap_or(0))),
        available_replicas: Some(available),
        unavailable_replicas: Some((wanted - available).max(0)),
        collision_count: old.collision_count,
        ..DeploymentStatus::default()
    };
    let (_, max_unavailable) = surge_and_unavailable(d);
    let now = Time(facts.now);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let minimum = available >= replicas - max_unavailable;
    set(
        &mut conditions,
        &now,
        "Available",
        if minimum { "True" } else { "False" },
        if minimum {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if minimum {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        false,
    );
    let new_name = facts.new.map(ResourceExt::name_any).unwrap_or_default();
    let all_old_gone = all
        .iter()
        .filter(|rs| Some(rs.name_any()) != facts.new.map(ResourceExt::name_any))
        .all(|rs| st_of(rs).replicas == 0);
    let complete = facts.new.is_some()
        && st.updated_replicas == Some(replicas)
        && st.replicas == Some(replicas)
        && available >= replicas
        && all_old_gone;
    let moved = old.replicas != st.replicas
        || old.updated_replicas != st.updated_replicas
        || old.ready_replicas != st.ready_replicas
        || old.available_replicas != st.available_replicas
        || old.observed_generation != st.observed_generation;
    let mut recheck = None;
    if spec.paused == Some(true) {
        set(
            &mut conditions,
            &now,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            false,
        );
    } else if complete {
        let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
        set(
            &mut conditions,
            &now,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &msg,
            false,
        );
    } else if facts.created {
        let msg = format!("Created new replica set \"{new_name}\"");
        set(
            &mut conditions,
            &now,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &msg,
            true,
        );
    } else if moved || progressing(&conditions).is_none_or(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable")) {
        let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
        set(
            &mut conditions,
            &now,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &msg,
            true,
        );
    }
    // A rollout that has not moved for the deadline has failed.
    if !complete
        && spec.paused != Some(true)
        && let Some(deadline) = spec.progress_deadline_seconds
        && let Some(c) = progressing(&conditions).filter(|c| c.reason.as_deref() != Some("ProgressDeadlineExceeded"))
    {
        let since = c.last_update_time.as_ref().map_or(facts.now, |t| t.0);
        let at = since + Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
        if at <= facts.now {
            let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
            set(
                &mut conditions,
                &now,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &msg,
                false,
            );
        } else {
            recheck = Duration::try_from(at - facts.now).ok();
        }
    }
    st.conditions = Some(conditions);
    (st, recheck)
}

fn progressing(conditions: &[DeploymentCondition]) -> Option<&DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == "Progressing")
}

/// Sets a condition: the transition time changes with the status, the
/// update time with the reason or message, or always when `touch`.
fn set(
    conditions: &mut Vec<DeploymentCondition>,
    now: &Time,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    touch: bool,
) {
    let fresh = DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(now.clone()),
        last_update_time: Some(now.clone()),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        None => conditions.push(fresh),
        Some(c) => {
            let same_words = c.reason == fresh.reason && c.message == fresh.message;
            if c.status != fresh.status {
                *c = fresh;
            } else if !same_words || touch {
                c.reason = fresh.reason;
                c.message = fresh.message;
                c.last_update_time = fresh.last_update_time;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const T0: &str = "2025-01-01T00:00:00Z";

    fn deploy(status: Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600, "selector": {}, "template": {},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
            "status": status}))
        .unwrap()
    }

    fn rs(name: &str, wanted: i32, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"replicas": wanted, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}),
        )
        .unwrap()
    }

    fn at(secs: u64) -> Timestamp {
        T0.parse::<Timestamp>().unwrap() + Duration::from_secs(secs)
    }

    /// The status of `d` with the ReplicaSets `new` (created by this pass or
    /// not) and `old`, `secs` after [`T0`].
    fn status_at(
        d: &Deployment,
        (new, old): (&ReplicaSet, &ReplicaSet),
        created: bool,
        secs: u64,
    ) -> (DeploymentStatus, Option<Duration>) {
        let facts = Facts {
            new: Some(new),
            created,
            now: at(secs),
        };
        status(d, &[new, old], &facts)
    }

    fn cond<'a>(st: &'a DeploymentStatus, ty: &str) -> &'a DeploymentCondition {
        st.conditions.as_ref().unwrap().iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn a_complete_rollout_says_new_replicaset_available() {
        let new = rs("web-n", 3, 3, 3);
        let old = rs("web-o", 0, 0, 0);
        let (st, recheck) = status_at(&deploy(json!({})), (&new, &old), false, 5);
        assert_eq!(
            (
                st.replicas,
                st.updated_replicas,
                st.available_replicas,
                st.unavailable_replicas
            ),
            (Some(3), Some(3), Some(3), Some(0))
        );
        assert_eq!(st.observed_generation, Some(2));
        let p = cond(&st, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("True", Some("NewReplicaSetAvailable"))
        );
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-n\" has successfully progressed.")
        );
        assert_eq!(
            cond(&st, "Available").reason.as_deref(),
            Some("MinimumReplicasAvailable")
        );
        assert_eq!(recheck, None);
    }

    #[test]
    fn a_rollout_in_progress_and_its_deadline() {
        let new = rs("web-n", 1, 1, 0);
        let old = rs("web-o", 3, 3, 3);
        let (st, recheck) = status_at(&deploy(json!({})), (&new, &old), true, 0);
        assert_eq!(cond(&st, "Progressing").reason.as_deref(), Some("NewReplicaSetCreated"));
        assert_eq!(recheck, Some(Duration::from_secs(600)));
        assert_eq!(st.updated_replicas, Some(1));
        // Nothing moves for the deadline: the rollout has failed.
        let d = deploy(serde_json::to_value(&st).unwrap());
        let (st, _) = status_at(&d, (&new, &old), false, 601);
        let p = cond(&st, "Progressing");
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        // Progress before the deadline pushes it back.
        let moved = rs("web-n", 1, 1, 1);
        let (st, recheck) = status_at(&d, (&moved, &old), false, 300);
        assert_eq!(cond(&st, "Progressing").reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(recheck, Some(Duration::from_secs(600)));
        assert_eq!(
            cond(&st, "Available").status,
            "True",
            "3 of 3 wanted, none may be unavailable"
        );
    }
}
