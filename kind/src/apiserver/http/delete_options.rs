//! `DeleteOptions`, the body of a DELETE (JSON or protobuf) and the
//! `deleteOptions` of a policy/v1 `Eviction`.
//!
//! The store applies all of them: preconditions, dryRun, and as a
//! [`DeletePolicy`] the grace period and the propagation policy (the
//! legacy `orphanDependents` is the `Orphan` or `Background` policy).

use serde_json::Value;

use crate::apiserver::registry::{DeletePolicy, Preconditions, Propagation};
use crate::apiserver::status::ApiError;

/// The options of one delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeleteOptions {
    pub preconditions: Preconditions,
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
}

const POLICIES: &[&str] = &["Orphan", "Background", "Foreground"];

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::invalid("DeleteOptions", "", field, &message)
}

impl DeleteOptions {
    /// Reads the JSON form of the options; `Null` (no body) is the defaults.
    pub fn from_json(opts: &Value) -> Result<DeleteOptions, ApiError> {
        if opts.is_null() {
            return Ok(DeleteOptions::default());
        }
        let Some(o) = opts.as_object() else {
            return Err(ApiError::bad_request("DeleteOptions must be an object"));
        };
        if let Some(kind) = o.get("kind").and_then(Value::as_str)
            && kind != "DeleteOptions"
        {
            return Err(ApiError::bad_request(format!(
                "expected a DeleteOptions body, got kind {kind:?}"
            )));
        }
        let string = |p: &str| -> Result<Option<String>, ApiError> {
            match opts.pointer(p) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(ApiError::bad_request(format!(
                    "DeleteOptions{}: expected a string, got {other}",
                    p.replace('/', ".")
                ))),
            }
        };
        let preconditions = Preconditions {
            uid: string("/preconditions/uid")?,
            resource_version: string("/preconditions/resourceVersion")?,
        };
        let grace_period_seconds = match o.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "DeleteOptions.gracePeriodSeconds: expected an integer, got {v}"
                ))
            })?),
        };
        let mut propagation_policy = string("/propagationPolicy")?;
        if let Some(p) = &propagation_policy
            && !POLICIES.contains(&p.as_str())
        {
            return Err(invalid(
                "propagationPolicy",
                format!("Unsupported value: {p:?}: supported values: \"Orphan\", \"Background\", \"Foreground\""),
            ));
        }
        if propagation_policy.is_some() && o.get("orphanDependents").is_some_and(|v| !v.is_null()) {
            return Err(invalid(
                "propagationPolicy",
                "orphanDependents and deletionPropagation cannot be both set".into(),
            ));
        }
        if let Some(orphan) = o.get("orphanDependents").and_then(Value::as_bool) {
            propagation_policy = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
        let dry_run = match o.get("dryRun") {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => {
                for v in a {
                    if v.as_str() != Some("All") {
                        return Err(invalid(
                            "dryRun",
                            format!("Unsupported value: {v}: supported values: \"All\""),
                        ));
                    }
                }
                !a.is_empty()
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.dryRun: expected a list, got {other}"
                )));
            }
        };
        Ok(DeleteOptions {
            preconditions,
            dry_run,
            grace_period_seconds,
            propagation_policy,
        })
    }

    /// Fills what the body left unset from the query (`?gracePeriodSeconds=`,
    /// `?propagationPolicy=`, `?orphanDependents=`), as kube-apiserver
    /// accepts them there too.
    pub fn with_query(mut self, get: impl Fn(&str) -> Option<String>) -> Result<DeleteOptions, ApiError> {
        if self.grace_period_seconds.is_none()
            && let Some(g) = get("gracePeriodSeconds").filter(|g| !g.is_empty())
        {
            let g = g
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("gracePeriodSeconds: expected an integer, got {g:?}")))?;
            self.grace_period_seconds = Some(g);
        }
        if self.propagation_policy.is_none() {
            let mut query = serde_json::Map::new();
            if let Some(p) = get("propagationPolicy").filter(|p| !p.is_empty()) {
                query.insert("propagationPolicy".into(), Value::String(p));
            }
            if let Some(o) = get("orphanDependents").filter(|o| !o.is_empty()) {
                query.insert("orphanDependents".into(), Value::Bool(o == "true"));
            }
            self.propagation_policy = DeleteOptions::from_json(&Value::Object(query))?.propagation_policy;
        }
        Ok(self)
    }

    /// The grace period and propagation policy, for the store.
    pub fn policy(&self) -> DeletePolicy {
        DeletePolicy {
            grace_period_seconds: self.grace_period_seconds,
            propagation: self.propagation_policy.as_deref().and_then(Propagation::parse),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_every_option() {
        let o = DeleteOptions::from_json(&json!({
            "kind": "DeleteOptions", "apiVersion": "v1",
            "gracePeriodSeconds": 0, "propagationPolicy": "Foreground",
            "preconditions": {"uid": "u", "resourceVersion": "3"}, "dryRun": ["All"]
        }))
        .unwrap();
        assert_eq!(
            o,
            DeleteOptions {
                preconditions: Preconditions {
                    uid: Some("u".into()),
                    resource_version: Some("3".into())
                },
                dry_run: true,
                grace_period_seconds: Some(0),
                propagation_policy: Some("Foreground".into()),
            }
        );
        assert_eq!(
            DeleteOptions::from_json(&Value::Null).unwrap(),
            DeleteOptions::default()
        );
        assert!(!DeleteOptions::from_json(&json!({"dryRun": []})).unwrap().dry_run);
        let orphan = DeleteOptions::from_json(&json!({"orphanDependents": true})).unwrap();
        assert_eq!(orphan.policy().propagation, Some(Propagation::Orphan));
    }

    #[test]
    fn the_query_fills_what_the_body_leaves_unset() {
        let query = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let o = DeleteOptions::default()
            .with_query(query(&[
                ("gracePeriodSeconds", "5"),
                ("propagationPolicy", "Foreground"),
            ]))
            .unwrap();
        assert_eq!(
            o.policy(),
            DeletePolicy {
                grace_period_seconds: Some(5),
                propagation: Some(Propagation::Foreground)
            }
        );
        let body = DeleteOptions::from_json(&json!({"gracePeriodSeconds": 1})).unwrap();
        let o = body.with_query(query(&[("gracePeriodSeconds", "9")])).unwrap();
        assert_eq!(o.grace_period_seconds, Some(1), "the body wins");
        let bad = DeleteOptions::default().with_query(query(&[("gracePeriodSeconds", "soon")]));
        assert!(bad.unwrap_err().message.contains("soon"));
        let bad = DeleteOptions::default().with_query(query(&[("propagationPolicy", "Up")]));
        assert_eq!(bad.unwrap_err().code, 422);
    }

    #[test]
    fn rejects_bad_options_by_name() {
        let e = |v: Value| DeleteOptions::from_json(&v).unwrap_err();
        let bad = e(json!({"propagationPolicy": "Sideways"}));
        assert_eq!(bad.code, 422);
        assert!(bad.message.contains("Sideways"), "{}", bad.message);
        assert_eq!(e(json!({"dryRun": ["Some"]})).code, 422);
        assert_eq!(
            e(json!({"propagationPolicy": "Orphan", "orphanDependents": true})).code,
            422
        );
        assert!(
            e(json!({"gracePeriodSeconds": "soon"}))
                .message
                .contains("gracePeriodSeconds")
        );
        assert!(e(json!({"kind": "Pod"})).message.contains("\"Pod\""));
        assert!(
            e(json!({"preconditions": {"uid": 5}}))
                .message
                .contains("preconditions.uid")
        );
        assert_eq!(e(json!([1])).code, 400);
    }
}
