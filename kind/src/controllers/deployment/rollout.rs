//! The replica counts of one rollout step, as a pure function of the
//! Deployment and its ReplicaSets.
//!
//! - `RollingUpdate`: the new ReplicaSet grows while the pods of all
//!   ReplicaSets stay within `replicas + maxSurge` (a ReplicaSet counts the
//!   larger of its wanted and its running pods, so pods still going away
//!   count); a step that grew it stops there. Otherwise old ReplicaSets
//!   shrink, oldest first, while `replicas - maxUnavailable` pods stay
//!   available: first their unavailable pods, then available ones.
//!   `maxSurge` rounds up, `maxUnavailable` down; both zero means one may
//!   be unavailable.
//! - `Recreate`: old ReplicaSets go to zero; once their pods are gone the
//!   new one is scaled to `replicas`.

use k8s_openapi::api::apps::v1::Deployment;

use crate::controllers::owned::scaled;

/// A ReplicaSet as a rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rs {
    pub name: String,
    /// `spec.replicas`.
    pub wanted: i32,
    /// `status.replicas`: its active pods.
    pub running: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl Rs {
    fn pods(&self) -> i32 {
        self.wanted.max(self.running)
    }
}

/// What a step changes: the new ReplicaSet's replicas (created when it does
/// not exist) and old ReplicaSets' (by name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    pub new: Option<i32>,
    pub old: Vec<(String, i32)>,
}

/// `maxSurge` and `maxUnavailable` of a Deployment as counts.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let ru = spec.strategy.and_then(|s| s.rolling_update).unwrap_or_default();
    let surge = scaled(ru.max_surge.as_ref(), replicas, true, 0);
    let unavailable = scaled(ru.max_unavailable.as_ref(), replicas, false, 0).min(replicas);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// One step of `d`'s rollout. `old` is ordered oldest first.
pub fn step(d: &Deployment, new: Option<&Rs>, old: &[Rs]) -> Step {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut out = Step::default();
    if recreate(d) {
        out.old = old
            .iter()
            .filter(|r| r.wanted > 0)
            .map(|r| (r.name.clone(), 0))
            .collect();
        let old_pods: i32 = old.iter().map(|r| r.running).sum();
        if out.old.is_empty() && old_pods == 0 && new.is_none_or(|n| n.wanted != replicas) {
            out.new = Some(replicas);
        }
        return out;
    }
    let (surge, max_unavailable) = surge_and_unavailable(d);
    let new_wanted = new.map_or(0, |n| n.wanted);
    if new_wanted > replicas {
        out.new = Some(replicas);
        return out;
    }
    if new.is_none() || new_wanted < replicas {
        let total: i32 = old.iter().chain(new).map(Rs::pods).sum();
        let room = (replicas + surge - total).max(0);
        let grow = room.min(replicas - new_wanted);
        if grow > 0 || new.is_none() {
            out.new = Some(new_wanted + grow);
            return out;
        }
    }
    // Shrink the old ReplicaSets within the availability budget.
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.map_or(0, |n| (n.wanted - n.available).max(0));
    let all_pods: i32 = old.iter().chain(new).map(Rs::pods).sum();
    let mut budget = all_pods - min_available - new_unavailable;
    if budget <= 0 {
        return out;
    }
    let mut wanted: Vec<i32> = old.iter().map(|r| r.wanted).collect();
    // First the pods that are not available anyway.
    for (r, w) in old.iter().zip(wanted.iter_mut()) {
        let unhealthy = (*w - r.available.min(*w)).max(0);
        let cut = unhealthy.min(budget);
        *w -= cut;
        budget -= cut;
    }
    // Then available ones, as long as enough stay available.
    let available: i32 =
        old.iter().zip(&wanted).map(|(r, w)| r.available.min(*w)).sum::<i32>() + new.map_or(0, |n| n.available);
    let mut cut_total = (available - min_available).max(0);
    for w in &mut wanted {
        let cut = (*w).min(cut_total);
        *w -= cut;
        cut_total -= cut;
    }
    out.old = old
        .iter()
        .zip(wanted)
        .filter(|(r, w)| r.wanted != *w)
        .map(|(r, w)| (r.name.clone(), w))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn deploy(replicas: i32, strategy: Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}}, "template": {}, "strategy": strategy}}))
        .unwrap()
    }

    fn rs(name: &str, wanted: i32, running: i32, available: i32) -> Rs {
        Rs {
            name: name.into(),
            wanted,
            running,
            available,
        }
    }

    fn default_rolling() -> Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    }

    #[test]
    fn the_defaults_for_three_replicas_surge_one_and_keep_all_available() {
        assert_eq!(surge_and_unavailable(&deploy(3, default_rolling())), (1, 0));
        assert_eq!(surge_and_unavailable(&deploy(8, default_rolling())), (2, 2));
        let none = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}});
        assert_eq!(surge_and_unavailable(&deploy(3, none)), (0, 1));
    }

    #[test]
    fn a_first_rollout_creates_the_whole_new_replicaset() {
        let d = deploy(3, default_rolling());
        assert_eq!(step(&d, None, &[]).new, Some(3));
        assert_eq!(step(&d, Some(&rs("n", 1, 1, 1)), &[]).new, Some(3));
        assert_eq!(step(&d, Some(&rs("n", 5, 5, 5)), &[]).new, Some(3), "scaled down");
        assert_eq!(step(&d, Some(&rs("n", 3, 3, 3)), &[]), Step::default());
    }

    /// Runs a rolling update to its end, pods becoming available at once,
    /// checking the surge and availability bounds at every step.
    #[test]
    fn a_rolling_update_stays_within_its_bounds() {
        for (replicas, strategy) in [
            (3, default_rolling()),
            (8, default_rolling()),
            (
                4,
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            ),
            (
                5,
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}}),
            ),
        ] {
            let d = deploy(replicas, strategy);
            let (surge, unavailable) = surge_and_unavailable(&d);
            let mut old = vec![rs("o", replicas, replicas, replicas)];
            let mut new: Option<Rs> = None;
            for _ in 0..100 {
                let s = step(&d, new.as_ref(), &old);
                if s == Step::default() {
                    break;
                }
                if let Some(n) = s.new {
                    new = Some(rs("n", n, n, n));
                }
                for (name, w) in s.old {
                    let r = old.iter_mut().find(|r| r.name == name).unwrap();
                    *r = rs(&name, w, w, w);
                }
                let total: i32 = old.iter().chain(new.as_ref()).map(|r| r.running).sum();
                let available: i32 = old.iter().chain(new.as_ref()).map(|r| r.available).sum();
                assert!(total <= replicas + surge, "{replicas}: {total} pods");
                assert!(available >= replicas - unavailable, "{replicas}: {available} available");
            }
            assert_eq!(new.map(|n| n.wanted), Some(replicas));
            assert_eq!(old[0].wanted, 0);
        }
    }

    #[test]
    fn old_pods_still_running_count_against_the_surge() {
        let d = deploy(3, default_rolling());
        // The old ReplicaSet was cut to 2 but still runs 3 pods: no room.
        let s = step(&d, Some(&rs("n", 1, 1, 1)), &[rs("o", 2, 3, 3)]);
        assert_eq!(s.new, None);
        // Unavailable new pods hold the old ones back.
        let s = step(&d, Some(&rs("n", 1, 1, 0)), &[rs("o", 3, 3, 3)]);
        assert_eq!(s, Step::default());
        // Unavailable old pods go first (within the budget), available ones stay.
        let d = deploy(
            4,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
        );
        let s = step(&d, Some(&rs("n", 0, 0, 0)), &[rs("o1", 2, 2, 0), rs("o2", 2, 2, 2)]);
        assert_eq!(s.new, None);
        assert_eq!(s.old, [("o1".to_string(), 1)]);
        let d = deploy(
            4,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 2}}),
        );
        let s = step(&d, Some(&rs("n", 0, 0, 0)), &[rs("o1", 2, 2, 0), rs("o2", 2, 2, 2)]);
        assert_eq!(
            s.old,
            [("o1".to_string(), 0)],
            "o2's available pods are all still needed"
        );
    }

    #[test]
    fn recreate_empties_the_old_before_the_new_starts() {
        let d = deploy(2, json!({"type": "Recreate"}));
        let s = step(&d, None, &[rs("o", 2, 2, 2)]);
        assert_eq!((s.new, s.old), (None, vec![("o".to_string(), 0)]));
        assert_eq!(step(&d, None, &[rs("o", 0, 1, 1)]), Step::default(), "a pod still runs");
        assert_eq!(step(&d, None, &[rs("o", 0, 0, 0)]).new, Some(2));
        assert_eq!(step(&d, Some(&rs("n", 2, 0, 0)), &[rs("o", 0, 0, 0)]), Step::default());
    }
}
