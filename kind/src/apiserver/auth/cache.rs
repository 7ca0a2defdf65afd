//! The RBAC policy in effect: derived from the stored roles and bindings,
//! rebuilt when one of them changed since the last request.

use std::sync::{Arc, Mutex, PoisonError};

use super::rbac::Policy;
use crate::apiserver::registry::Store;
use crate::apiserver::registry::resources::{ResourceId, ids};

const RBAC: [ResourceId; 4] = [
    ids::CLUSTERROLES,
    ids::ROLES,
    ids::CLUSTERROLEBINDINGS,
    ids::ROLEBINDINGS,
];

/// The policy and the latest event of each RBAC resource it was built from.
#[derive(Default)]
pub(crate) struct PolicyCache {
    built: Mutex<([u64; 4], Arc<Policy>)>,
}

impl PolicyCache {
    /// The policy as of the store's current state: a write to a role or
    /// binding is in effect for every request that starts after it returned.
    pub(crate) fn current(&self, store: &Store) -> Arc<Policy> {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if RBAC.iter().zip(built.0).all(|(r, seen)| store.last_event(*r) == seen) {
            return built.1.clone();
        }
        let snap = store.snapshot(&RBAC);
        let vals = |i: usize| snap[i].1.iter().map(|v| &**v);
        let policy = Arc::new(Policy::from_objects(vals(0), vals(1), vals(2), vals(3)));
        *built = ([snap[0].0, snap[1].0, snap[2].0, snap[3].0], policy.clone());
        policy
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::registry::{Preconditions, StoreOptions};

    #[test]
    fn policy_follows_writes() {
        let s = Store::new(StoreOptions::default());
        let cache = PolicyCache::default();
        assert!(cache.current(&s).cluster_roles.is_empty());
        let first = cache.current(&s);
        assert!(
            Arc::ptr_eq(&first, &cache.current(&s)),
            "unchanged roles: the same policy"
        );
        s.create(
            ids::CLUSTERROLES,
            "",
            json!({"metadata": {"name": "r"}, "rules": []}),
            false,
        )
        .unwrap();
        assert!(cache.current(&s).cluster_roles.contains_key("r"));
        s.delete(ids::CLUSTERROLES, "", "r", &Preconditions::default(), false)
            .unwrap();
        assert!(cache.current(&s).cluster_roles.is_empty());
    }
}
