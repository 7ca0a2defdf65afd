//! The garbage collector's view of the cluster as a pure structure: every
//! object's metadata by uid, and from it the steps a pass takes.
//!
//! - A dependent all of whose owners are gone is deleted (in the background;
//!   in the foreground when the owner was being deleted so). One with only
//!   some owners gone loses the references to those.
//! - An owner being deleted with the `orphan` finalizer: its dependents lose
//!   their reference to it, then the finalizer goes.
//! - An owner being deleted with `foregroundDeletion`: its dependents are
//!   deleted (in the foreground), and the finalizer goes once no dependent
//!   with `blockOwnerDeletion` is left.
//!
//! Owners are known by uid: an owner reference whose uid is not in the
//! graph is only taken as gone once the API server confirmed it
//! ([`Graph::unknown_owners`], then [`Graph::plan`] with the confirmed set).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::apiserver::{FOREGROUND, ORPHAN};

/// Where an object is: its resource (an index into the collector's list),
/// namespace, name, and the resourceVersion a write to it is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
}

/// One object in the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub key: Key,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

impl Node {
    /// The node for an object's metadata in `resource` (`None` without a uid).
    pub fn from_meta(resource: usize, meta: &ObjectMeta) -> Option<Node> {
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        Some(Node {
            key: Key {
                resource,
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
                uid,
                resource_version: meta.resource_version.clone().unwrap_or_default(),
            },
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        })
    }

    fn has(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// An owner reference the graph cannot resolve: its kind, name and the
/// namespace of the dependent naming it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
}

/// How a dependent is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    Background,
    Foreground,
}

/// One write of a pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Delete the object (uid precondition).
    Delete { key: Key, cascade: Cascade },
    /// Replace the object's owner references with `keep`.
    SetOwners { key: Key, keep: Vec<OwnerReference> },
    /// Drop `finalizer` from the object's finalizers (`keep` is the rest).
    DropFinalizer {
        key: Key,
        finalizer: &'static str,
        keep: Vec<String>,
    },
}

/// What a pass found: its steps, and whether something is still waited for.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub waiting: bool,
}

/// Every object's metadata, by uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    pub fn upsert(&mut self, node: Node) {
        self.nodes.insert(node.key.uid.clone(), node);
    }

    pub fn remove(&mut self, uid: &str) {
        self.nodes.remove(uid);
    }

    /// Drops the objects of `resource` whose uid is not in `listed` (after
    /// a relist of that resource).
    pub fn retain_listed(&mut self, resource: usize, listed: &BTreeSet<String>) {
        self.nodes
            .retain(|uid, n| n.key.resource != resource || listed.contains(uid));
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Owner references whose uid the graph does not hold, from dependents
    /// not being deleted yet: to be confirmed gone with the API server.
    pub fn unknown_owners(&self) -> BTreeSet<OwnerRef> {
        self.nodes
            .values()
            .filter(|n| !n.deleting)
            .flat_map(|n| {
                n.owners
                    .iter()
                    .filter(|o| !self.nodes.contains_key(&o.uid))
                    .map(|o| OwnerRef {
                        api_version: o.api_version.clone(),
                        kind: o.kind.clone(),
                        name: o.name.clone(),
                        namespace: n.key.namespace.clone(),
                        uid: o.uid.clone(),
                    })
            })
            .collect()
    }

    /// The steps of one pass; `gone` holds the owner uids confirmed absent.
    pub fn plan(&self, gone: &BTreeSet<String>) -> Plan {
        let mut plan = Plan::default();
        let mut dependents: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
        let mut sorted: Vec<&Node> = self.nodes.values().collect();
        sorted.sort_by(|a, b| a.key.uid.cmp(&b.key.uid));
        for n in &sorted {
            for o in &n.owners {
                dependents.entry(o.uid.as_str()).or_default().push(n);
            }
        }
        for n in &sorted {
            self.plan_dependent(n, gone, &mut plan);
            if n.deleting {
                plan_owner(
                    n,
                    dependents.get(n.key.uid.as_str()).map_or(&[], Vec::as_slice),
                    &mut plan,
                );
            }
        }
        plan
    }

    /// A dependent whose owners (some or all) are gone.
    fn plan_dependent(&self, n: &Node, gone: &BTreeSet<String>, plan: &mut Plan) {
        if n.owners.is_empty() || n.deleting {
            return;
        }
        let (dangling, live): (Vec<&OwnerReference>, Vec<&OwnerReference>) =
            n.owners.iter().partition(|o| gone.contains(&o.uid));
        if dangling.is_empty() {
            return;
        }
        if live.is_empty() {
            plan.steps.push(Step::Delete {
                key: n.key.clone(),
                cascade: Cascade::Background,
            });
            return;
        }
        plan.steps.push(Step::SetOwners {
            key: n.key.clone(),
            keep: live.into_iter().cloned().collect(),
        });
    }
}

/// An owner being deleted that holds a finalizer of the collector's.
fn plan_owner(owner: &Node, dependents: &[&Node], plan: &mut Plan) {
    let drop = |finalizer: &'static str| Step::DropFinalizer {
        key: owner.key.clone(),
        finalizer,
        keep: owner.finalizers.iter().filter(|f| *f != finalizer).cloned().collect(),
    };
    if owner.has(ORPHAN) {
        if dependents.is_empty() {
            plan.steps.push(drop(ORPHAN));
        } else {
            plan.waiting = true;
            for d in dependents {
                let keep = d.owners.iter().filter(|o| o.uid != owner.key.uid).cloned().collect();
                plan.steps.push(Step::SetOwners {
                    key: d.key.clone(),
                    keep,
                });
            }
        }
        // The dependents are orphaned first; a foreground finalizer as well
        // then has none left to wait for.
        return;
    }
    if owner.has(FOREGROUND) {
        let mut blocked = false;
        for d in dependents {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == owner.key.uid && o.block_owner_deletion == Some(true));
            blocked |= blocks;
            if !d.deleting {
                plan.steps.push(Step::Delete {
                    key: d.key.clone(),
                    cascade: Cascade::Foreground,
                });
            }
        }
        if blocked {
            plan.waiting = true;
        } else {
            plan.steps.push(drop(FOREGROUND));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            key: Key {
                resource: 0,
                namespace: Some("default".into()),
                name: name.into(),
                uid: format!("uid-{name}"),
                resource_version: "1".into(),
            },
            owners: owners
                .iter()
                .map(|(o, block)| OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: (*o).into(),
                    uid: format!("uid-{o}"),
                    block_owner_deletion: Some(*block),
                    ..Default::default()
                })
                .collect(),
            finalizers: vec![],
            deleting: false,
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers = vec![finalizer.into(), "example.com/keep".into()];
        n
    }

    fn graph(nodes: Vec<Node>) -> Graph {
        let mut g = Graph::default();
        for n in nodes {
            g.upsert(n);
        }
        g
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Delete { key, cascade } => format!("delete {} {cascade:?}", key.name),
                Step::SetOwners { key, keep } => format!(
                    "owners {} {:?}",
                    key.name,
                    keep.iter().map(|o| o.name.as_str()).collect::<Vec<_>>()
                ),
                Step::DropFinalizer { key, finalizer, keep } => {
                    format!("drop {finalizer} from {} keep {keep:?}", key.name)
                }
            })
            .collect()
    }

    #[test]
    fn dependents_of_gone_owners_are_deleted_only_once_confirmed() {
        let g = graph(vec![
            node("a", &[("gone", false)]),
            node("b", &[("gone", false), ("live", false)]),
            node("live", &[]),
            node("c", &[("live", false)]),
        ]);
        let unknown: Vec<String> = g.unknown_owners().into_iter().map(|o| o.name).collect();
        assert_eq!(unknown, ["gone"]);
        assert_eq!(g.plan(&BTreeSet::new()), Plan::default(), "nothing until confirmed");
        let gone = BTreeSet::from(["uid-gone".to_string()]);
        assert_eq!(
            names(&g.plan(&gone).steps),
            ["delete a Background", "owners b [\"live\"]"]
        );
        // A dependent already being deleted is left alone.
        let mut a = node("a", &[("gone", false)]);
        a.deleting = true;
        assert!(graph(vec![a]).plan(&gone).steps.is_empty());
    }

    #[test]
    fn orphaning_strips_the_references_then_the_finalizer() {
        let owner = deleting(node("o", &[]), ORPHAN);
        let g = graph(vec![owner.clone(), node("d", &[("o", true), ("other", false)])]);
        let plan = g.plan(&BTreeSet::new());
        assert_eq!(names(&plan.steps), ["owners d [\"other\"]"]);
        assert!(plan.waiting);
        let g = graph(vec![owner, node("d", &[("other", false)])]);
        assert_eq!(
            names(&g.plan(&BTreeSet::new()).steps),
            ["drop orphan from o keep [\"example.com/keep\"]"]
        );
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_the_blocking_ones() {
        let owner = deleting(node("o", &[]), FOREGROUND);
        let g = graph(vec![
            owner.clone(),
            node("blocking", &[("o", true)]),
            node("free", &[("o", false)]),
        ]);
        let plan = g.plan(&BTreeSet::new());
        assert_eq!(
            names(&plan.steps),
            ["delete blocking Foreground", "delete free Foreground"]
        );
        assert!(plan.waiting);
        // The blocking one terminating: still waited for, not deleted again.
        let mut terminating = node("blocking", &[("o", true)]);
        terminating.deleting = true;
        let plan = graph(vec![owner.clone(), terminating, node("free", &[("o", false)])]).plan(&BTreeSet::new());
        assert_eq!(names(&plan.steps), ["delete free Foreground"]);
        assert!(plan.waiting);
        // Only non-blocking dependents left: the owner goes.
        let plan = graph(vec![owner, node("free", &[("o", false)])]).plan(&BTreeSet::new());
        assert_eq!(
            names(&plan.steps),
            [
                "delete free Foreground",
                "drop foregroundDeletion from o keep [\"example.com/keep\"]"
            ]
        );
        assert!(!plan.waiting);
    }

    #[test]
    fn relists_drop_what_is_gone() {
        let mut g = graph(vec![node("a", &[]), node("b", &[])]);
        g.retain_listed(0, &BTreeSet::from(["uid-a".to_string()]));
        assert_eq!(g.len(), 1);
        assert_eq!(g.unknown_owners().len(), 0);
        g.remove("uid-a");
        assert!(g.is_empty());
    }
}
