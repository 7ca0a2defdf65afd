//! Safe upgrade (docs/taint-and-safe-upgrade.md): on SIGTERM, an agent whose
//! DaemonSet is being rolled leaves the plugin binary, its kubeconfig and the
//! CNI config entry in place, so pods created on the node while no agent
//! runs still get their rules; the next agent's first install pass takes the
//! files over (the restore record in the run dir carries on). Everything
//! else, an uninstall above all, cleans up as always.
//!
//! "Being rolled" is read from two objects only (RBAC: get on this pod and
//! on the DaemonSet): the pod's `pod-template-generation` label, the
//! DaemonSet generation it was made from, against the DaemonSet's
//! `metadata.generation` now. The DaemonSet controller deletes an old pod
//! only after the template changed, so a generation that moved on is a
//! roll. A spec change that leaves the template alone also bumps the
//! generation; a pod of that DaemonSet terminated for another reason then
//! keeps its files too, which only leaves the plugin installed for the
//! replacement the DaemonSet schedules. Any doubt (a lookup failed, labels
//! missing, the DaemonSet gone, replaced or being deleted) cleans up.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::config::Settings;

/// The label the DaemonSet controller puts the template's revision hash in.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label with the DaemonSet generation the pod was made from.
pub const GENERATION_LABEL: &str = "pod-template-generation";

/// What SIGTERM does to the node's files, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the plugin installed for the next agent.
    Keep(String),
    /// Run the normal cleanup.
    Clean(String),
}

impl Decision {
    pub fn keeps(&self) -> bool {
        matches!(self, Decision::Keep(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Decision::Keep(r) | Decision::Clean(r) => r,
        }
    }
}

/// The DaemonSet controlling `pod`: `(name, uid)`.
pub fn owner(pod: &Pod) -> Option<(&str, &str)> {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "DaemonSet" && o.api_version == "apps/v1")
        .map(|o| (o.name.as_str(), o.uid.as_str()))
}

/// The decision from this agent's pod and its DaemonSet (`None`: not found).
pub fn decide(pod: &Pod, ds: Option<&DaemonSet>) -> Decision {
    let clean = |why: String| Decision::Clean(why);
    let Some((name, uid)) = owner(pod) else {
        return clean("this pod is not controlled by a DaemonSet".into());
    };
    let Some(ds) = ds else {
        return clean(format!("DaemonSet {name} is gone (uninstall)"));
    };
    if ds.metadata.uid.as_deref() != Some(uid) {
        return clean(format!(
            "DaemonSet {name} is not the one that made this pod (deleted and recreated)"
        ));
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return clean(format!("DaemonSet {name} is being deleted (uninstall)"));
    }
    let labels = pod.metadata.labels.as_ref();
    let Some(hash) = labels.and_then(|l| l.get(REVISION_LABEL)) else {
        return clean(format!("this pod has no {REVISION_LABEL} label"));
    };
    let Some(made_from) = labels
        .and_then(|l| l.get(GENERATION_LABEL))
        .and_then(|g| g.parse::<i64>().ok())
    else {
        return clean(format!("this pod has no numeric {GENERATION_LABEL} label"));
    };
    let Some(now) = ds.metadata.generation else {
        return clean(format!("DaemonSet {name} reports no generation"));
    };
    if now > made_from {
        Decision::Keep(format!(
            "DaemonSet {name} is rolling: generation {now}, this pod (revision {hash}) is of generation {made_from}"
        ))
    } else {
        clean(format!(
            "DaemonSet {name} is not rolling: this pod runs its current generation {now}"
        ))
    }
}

/// How long SIGTERM waits for the two lookups before cleaning up anyway.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The decision for this agent now; cleanup unless the feature is on and
/// both lookups answered within [`LOOKUP_TIMEOUT`].
pub async fn on_termination(settings: &Settings) -> Decision {
    if !settings.node.safe_upgrade_enabled {
        return Decision::Clean("safe upgrade is disabled".into());
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, look(settings)).await {
        Ok(Ok(decision)) => decision,
        Ok(Err(e)) => Decision::Clean(format!("{e}; cleaning up to be safe")),
        Err(_) => Decision::Clean(format!(
            "no answer from the API server within {LOOKUP_TIMEOUT:?}; cleaning up to be safe"
        )),
    }
}

async fn look(settings: &Settings) -> Result<Decision, String> {
    let ns = &settings.install.pod_namespace;
    let name = &settings.node.pod_name;
    let client = crate::run::kube_client(&settings.install)?;
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("reading pod {ns}/{name}: {e}"))?;
    let ds = match owner(&pod) {
        None => None,
        Some((ds_name, _)) => match Api::<DaemonSet>::namespaced(client, ns).get(ds_name).await {
            Ok(ds) => Some(ds),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(format!("reading DaemonSet {ns}/{ds_name}: {e}")),
        },
    };
    Ok(decide(&pod, ds.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const UID: &str = "ds-uid-1";

    fn pod(owner: Option<Value>, labels: Value) -> Pod {
        let owners: Vec<Value> = owner.into_iter().collect();
        serde_json::from_value(json!({
            "metadata": {"name": "istio-cni-node-x", "namespace": "istio-system",
                          "labels": labels, "ownerReferences": owners}
        }))
        .unwrap()
    }

    fn ds_owner() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "istio-cni-node", "uid": UID, "controller": true})
    }

    fn labels(hash: Option<&str>, generation: Option<&str>) -> Value {
        let mut l = json!({"k8s-app": "istio-cni-node"});
        if let Some(h) = hash {
            l[REVISION_LABEL] = json!(h);
        }
        if let Some(g) = generation {
            l[GENERATION_LABEL] = json!(g);
        }
        l
    }

    fn ds(uid: &str, generation: Option<i64>, deleting: bool) -> DaemonSet {
        let mut meta = json!({"name": "istio-cni-node", "namespace": "istio-system", "uid": uid});
        if let Some(g) = generation {
            meta["generation"] = json!(g);
        }
        if deleting {
            meta["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({"metadata": meta})).unwrap()
    }

    /// Every combination of the inputs; only one keeps the files.
    #[test]
    fn keeps_only_for_a_live_rolling_daemonset_that_made_this_pod() {
        let owners = [
            ("no owner", None),
            ("owner", Some(ds_owner())),
            (
                "not controller",
                Some(json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "istio-cni-node", "uid": UID})),
            ),
            (
                "ReplicaSet",
                Some(
                    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": UID, "controller": true}),
                ),
            ),
        ];
        let hashes = [None, Some("abc")];
        let generations = [None, Some("x"), Some("1"), Some("2"), Some("3")];
        let daemonsets = [
            ("gone", None),
            ("gen 2", Some(ds(UID, Some(2), false))),
            ("gen 2 deleting", Some(ds(UID, Some(2), true))),
            ("gen 2 other uid", Some(ds("other", Some(2), false))),
            ("no generation", Some(ds(UID, None, false))),
        ];
        let mut kept = Vec::new();
        for (owner_case, owner) in &owners {
            for hash in hashes {
                for generation in generations {
                    for (ds_case, d) in &daemonsets {
                        let p = pod(owner.clone(), labels(hash, generation));
                        let decision = decide(&p, d.as_ref());
                        assert!(!decision.reason().is_empty());
                        if decision.keeps() {
                            kept.push((*owner_case, hash, generation, *ds_case));
                        }
                    }
                }
            }
        }
        // Generation 2 now, this pod of generation 1: the only roll.
        assert_eq!(kept, [("owner", Some("abc"), Some("1"), "gen 2")]);
    }

    #[test]
    fn reasons_name_the_case() {
        let current = pod(Some(ds_owner()), labels(Some("abc"), Some("2")));
        let old = pod(Some(ds_owner()), labels(Some("abc"), Some("1")));
        let cases = [
            (decide(&old, None), "is gone (uninstall)"),
            (decide(&old, Some(&ds(UID, Some(2), true))), "is being deleted"),
            (decide(&old, Some(&ds("x", Some(2), false))), "deleted and recreated"),
            (decide(&current, Some(&ds(UID, Some(2), false))), "not rolling"),
            (decide(&old, Some(&ds(UID, Some(2), false))), "is rolling: generation 2"),
            (
                decide(&pod(None, labels(Some("a"), Some("1"))), None),
                "not controlled by a DaemonSet",
            ),
            (
                decide(
                    &pod(Some(ds_owner()), labels(None, Some("1"))),
                    Some(&ds(UID, Some(2), false)),
                ),
                "no controller-revision-hash label",
            ),
        ];
        for (decision, expected) in cases {
            assert!(decision.reason().contains(expected), "{decision:?} lacks {expected:?}");
        }
    }
}
