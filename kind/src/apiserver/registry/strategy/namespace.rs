//! Namespaces: created `Active` with the `kubernetes` finalizer; deleting
//! one marks it `Terminating` (the system namespaces cannot be deleted);
//! nothing new may be created in a terminating or missing namespace; the
//! namespace controller empties it and clears the finalizer through
//! `namespaces/<name>/finalize`, which removes it.

use serde_json::{Value, json};

use super::Strategy;
use crate::apiserver::registry::meta::{is_terminating, name_of};
use crate::apiserver::status::ApiError;

/// The finalizer the namespace controller clears once the namespace is empty.
pub const FINALIZER: &str = "kubernetes";

/// Namespaces that always exist.
pub(crate) const SYSTEM: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

pub(crate) struct NamespaceStrategy;

fn finalizers(ns: &Value) -> &[Value] {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

impl Strategy for NamespaceStrategy {
    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"] = json!({"finalizers": [FINALIZER]});
        }
    }

    fn check_delete(&self, ns: &Value) -> Result<(), ApiError> {
        let name = name_of(ns);
        if matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
                "",
                "namespaces",
                name,
            ));
        }
        Ok(())
    }

    /// `spec.finalizers` (the namespace controller's) keep it too.
    fn holds(&self, ns: &Value) -> bool {
        !finalizers(ns).is_empty()
    }

    fn mark_deleting(&self, ns: &mut Value) {
        ns["status"]["phase"] = json!("Terminating");
    }
}

/// A write to `namespaces/<name>/finalize`: only `spec.finalizers` changes.
pub(crate) fn finalize(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    let list = new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
    out["spec"]["finalizers"] = list;
    out
}

/// Whether a new object may go into namespace `ns`, given its stored object.
pub(crate) fn admit(ns: &str, stored: Option<&Value>, group: &str, plural: &str, name: &str) -> Result<(), ApiError> {
    match stored {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if is_terminating(n) => Err(ApiError::forbidden(
            format!(
                "{plural} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
            ),
            group,
            plural,
            name,
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::resources::{self, ids};
    use crate::apiserver::registry::strategy::Deletion;
    use crate::apiserver::registry::strategy::deletion::{DeletePolicy, finalized, plan};

    fn delete(ns: &Value) -> Result<Deletion, ApiError> {
        let now = k8s_openapi::jiff::Timestamp::now();
        plan(resources::info(ids::NAMESPACES), ns, &DeletePolicy::default(), now)
    }

    fn ns(name: &str) -> Value {
        let mut n = json!({"metadata": {"name": name}});
        NamespaceStrategy.initial_status(&mut n);
        n
    }

    #[test]
    fn delete_marks_terminating_until_finalized() {
        let n = ns("team");
        assert_eq!(n["spec"]["finalizers"], json!(["kubernetes"]));
        let Deletion::Pending(marked) = delete(&n).unwrap() else {
            panic!("a namespace with finalizers is not removed at once");
        };
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert!(is_terminating(&marked));
        assert!(!finalized(resources::info(ids::NAMESPACES), &marked));
        let done = finalize(
            &marked,
            &json!({"spec": {"finalizers": []}, "status": {"phase": "Active"}}),
        );
        assert_eq!(
            done["status"]["phase"], "Terminating",
            "finalize changes only the finalizers"
        );
        assert!(finalized(resources::info(ids::NAMESPACES), &done));
        assert!(matches!(delete(&done).unwrap(), Deletion::Now));
        assert_eq!(delete(&ns("kube-system")).unwrap_err().code, 403);
    }

    #[test]
    fn admission_of_new_content() {
        assert_eq!(admit("x", None, "", "pods", "p").unwrap_err().code, 404);
        assert!(admit("x", Some(&ns("x")), "", "pods", "p").is_ok());
        let Ok(Deletion::Pending(marked)) = delete(&ns("x")) else {
            panic!("expected a pending deletion");
        };
        let e = admit("x", Some(&marked), "", "pods", "p").unwrap_err();
        assert_eq!(e.code, 403);
        assert!(e.message.contains("because it is being terminated"), "{}", e.message);
    }
}
