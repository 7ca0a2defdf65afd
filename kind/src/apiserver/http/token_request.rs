//! `serviceaccounts/<name>/token` (TokenRequest, authentication.k8s.io/v1):
//! an expiring, audience-bound token for a service account, which the
//! authenticator accepts as that account until it expires, and only when
//! it is meant for the API server.

use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::apiserver::auth::rbac::UserInfo;
use crate::apiserver::auth::{API_AUDIENCE, Tokens};
use crate::apiserver::ids;
use crate::apiserver::registry::Store;
use crate::apiserver::registry::resources::{self, ids as res};
use crate::apiserver::status::ApiError;

/// A token's lifetime when the request names none (kube-apiserver's).
const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);
/// The longest lifetime granted (`2^32` seconds, the API's limit).
const MAX_EXPIRATION: Duration = Duration::from_secs(1 << 32);

/// What the request asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    audiences: Vec<String>,
    expiration: Duration,
    bound: Option<BoundObject>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct BoundObject {
    kind: String,
    name: String,
    uid: Option<String>,
}

fn invalid(sa: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid("TokenRequest", sa, field, message)
}

fn parse(body: &Value, sa: &str, min_expiration: Duration) -> Result<Request, ApiError> {
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != "TokenRequest" {
        return Err(ApiError::bad_request(format!(
            "expected a TokenRequest body, got kind {kind:?}"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(sa, "spec.audiences", "Invalid value: audiences must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(sa, "spec.audiences", "Invalid value: must be a list")),
    };
    let audiences = if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(v) => {
            let secs = v
                .as_i64()
                .ok_or_else(|| invalid(sa, "spec.expirationSeconds", "Invalid value: must be an integer"))?;
            let asked = Duration::from_secs(secs.max(0).unsigned_abs());
            if secs < 0 || asked < min_expiration {
                return Err(invalid(
                    sa,
                    "spec.expirationSeconds",
                    &format!(
                        "Invalid value: {secs}: may not specify a duration less than {} seconds",
                        min_expiration.as_secs()
                    ),
                ));
            }
            asked.min(MAX_EXPIRATION)
        }
    };
    let bound = match spec.get("boundObjectRef") {
        None | Some(Value::Null) => None,
        Some(r) => {
            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (kind, name) = (s("kind"), s("name"));
            if !matches!(kind.as_str(), "Pod" | "Secret" | "Node") {
                return Err(invalid(
                    sa,
                    "spec.boundObjectRef.kind",
                    &format!("Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\", \"Node\""),
                ));
            }
            if name.is_empty() {
                return Err(invalid(sa, "spec.boundObjectRef.name", "Required value"));
            }
            Some(BoundObject {
                kind,
                name,
                uid: Some(s("uid")).filter(|u| !u.is_empty()),
            })
        }
    };
    Ok(Request {
        audiences,
        expiration,
        bound,
    })
}

/// Handles `POST .../serviceaccounts/<sa>/token`: the service account must
/// exist, as must the bound object (with its uid, when given).
pub(crate) fn create(
    store: &Store,
    tokens: &Tokens,
    min_expiration: Duration,
    ns: &str,
    sa: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let request = parse(body, sa, min_expiration)?;
    store.get(res::SERVICEACCOUNTS, ns, sa)?;
    if let Some(bound) = &request.bound {
        let (id, obj_ns) = match bound.kind.as_str() {
            "Pod" => (res::PODS, ns),
            "Secret" => (
                resources::find("", "v1", "secrets").ok_or_else(|| ApiError::bad_request("secrets are not served"))?,
                ns,
            ),
            _ => (res::NODES, ""),
        };
        let obj = store.get(id, obj_ns, &bound.name)?;
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
        if let Some(want) = &bound.uid
            && want != uid
        {
            return Err(ApiError::conflict(
                "",
                "serviceaccounts",
                sa,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"
                ),
            ));
        }
    }
    let (token, expires) = tokens.mint_expiring(
        UserInfo::service_account(ns, sa),
        request.audiences.clone(),
        request.expiration,
    );
    let mut spec = json!({
        "audiences": request.audiences,
        "expirationSeconds": request.expiration.as_secs(),
    });
    if let Some(b) = &request.bound {
        spec["boundObjectRef"] = json!({"kind": b.kind, "apiVersion": "v1", "name": b.name});
        if let Some(uid) = &b.uid {
            spec["boundObjectRef"]["uid"] = json!(uid);
        }
    }
    Ok(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": sa, "namespace": ns, "creationTimestamp": ids::now_rfc3339()},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
    }))
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(600);

    #[test]
    fn defaults_are_the_api_audience_and_an_hour() {
        let r = parse(&json!({"spec": {}}), "sa", MIN).unwrap();
        assert_eq!(r.audiences, vec![API_AUDIENCE]);
        assert_eq!(r.expiration, DEFAULT_EXPIRATION);
        assert_eq!(r.bound, None);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, field) in [
            (json!({"spec": {"expirationSeconds": 10}}), "spec.expirationSeconds"),
            (json!({"spec": {"expirationSeconds": "x"}}), "spec.expirationSeconds"),
            (json!({"spec": {"audiences": [1]}}), "spec.audiences"),
            (
                json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "name": "x"}}}),
                "spec.boundObjectRef.kind",
            ),
            (
                json!({"spec": {"boundObjectRef": {"kind": "Pod"}}}),
                "spec.boundObjectRef.name",
            ),
        ] {
            let e = parse(&body, "sa", MIN).unwrap_err();
            assert_eq!(e.code, 422, "{body}");
            assert!(e.to_status().to_string().contains(field), "{body}: {:?}", e.to_status());
        }
        assert_eq!(parse(&json!({"kind": "Pod"}), "sa", MIN).unwrap_err().code, 400);
    }

    #[test]
    fn long_lifetimes_are_capped_and_bound_objects_kept() {
        let r = parse(
            &json!({"spec": {"expirationSeconds": 1u64 << 40, "audiences": ["a", "b"],
                "boundObjectRef": {"kind": "Pod", "name": "p", "uid": "u-1"}}}),
            "sa",
            MIN,
        )
        .unwrap();
        assert_eq!(r.expiration, MAX_EXPIRATION);
        assert_eq!(r.audiences, vec!["a", "b"]);
        assert_eq!(
            r.bound,
            Some(BoundObject {
                kind: "Pod".into(),
                name: "p".into(),
                uid: Some("u-1".into())
            })
        );
    }
}
