//! OpenAPI v3 discovery, as much as kubectl's field validation needs, and
//! the server side of that validation.
//!
//! `kubectl apply`/`create`/`replace` validate by default (`--validate=strict`):
//! kubectl reads `/openapi/v3`, then the document of the object's
//! group-version, and when the object's PATCH operation (found by its
//! `x-kubernetes-group-version-kind`) takes a `fieldValidation` query
//! parameter, it sends `?fieldValidation=Strict` and leaves the checking to
//! the server. Without these documents it falls back to `/openapi/v2` schemas
//! and, finding none, refuses to run (hence `--validate=false` before).
//!
//! The documents here declare every stored resource's create, update and
//! patch operations with that parameter, and no schemas (`kubectl explain`
//! still needs a real cluster). The server then checks unknown fields the way
//! kube-apiserver's strict decoding does: a field of the request that the
//! kind's type does not have, found by a round trip through the typed
//! k8s-openapi struct ([`unknown_fields`]). `Strict` refuses the request,
//! `Warn` (the default) answers with a `Warning` header, `Ignore` neither.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::apiserver::discovery::GIT_VERSION;
use crate::apiserver::registry::resources::{RESOURCES, ResourceInfo};
use crate::apiserver::status::ApiError;

/// `gv` as it appears in `/openapi/v3` paths: `api/v1`, `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Resources that are stored (not reviews), in the order served.
fn stored() -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES.iter().filter(|r| !r.review)
}

/// `/openapi/v3`: one document per group-version. The hash only has to
/// change when the documents do (clients cache by URL): the server version.
pub fn index() -> Value {
    let mut paths = Map::new();
    for r in stored() {
        let gv = gv_path(r.group, r.version);
        paths
            .entry(gv.clone())
            .or_insert_with(|| json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={GIT_VERSION}")}));
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group-version, or `None` when not served.
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in stored().filter(|r| r.group == group && r.version == version) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let op = |id: &str| {
            json!({
                "operationId": format!("{id}{}", r.kind),
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
                     "description": "Ignore, Warn (default) or Strict: what to do with unknown fields"},
                    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                ],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": id_action(id),
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let prefix = format!("/{}", gv_path(r.group, r.version));
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        paths.insert(collection.clone(), json!({ "post": op("create") }));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({ "put": op("replace"), "patch": op("patch") }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
    }))
}

fn id_action(id: &str) -> &'static str {
    match id {
        "create" => "post",
        "replace" => "put",
        _ => "patch",
    }
}

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// The parameter's value; absent is `Warn`, as in kube-apiserver.
    pub fn parse(value: Option<&str>) -> Result<FieldValidation, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation {other:?} is invalid: must be Ignore, Warn or Strict"
            ))),
        }
    }

    /// Checks `obj`, of `info`'s kind: under `Strict` unknown fields are an
    /// error; under `Warn` they come back as warnings; `Ignore` skips it.
    pub fn check(self, info: &ResourceInfo, obj: &Value) -> Result<Vec<String>, ApiError> {
        if self == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let found: Vec<String> = unknown_fields(info.kind, obj)
            .into_iter()
            .map(|path| format!("unknown field {path:?}"))
            .collect();
        if found.is_empty() || self == FieldValidation::Warn {
            return Ok(found);
        }
        Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            found.join(", "),
            kind = info.kind,
            version = info.version,
        )))
    }
}

/// The fields of `obj` that `kind`'s type does not have, as paths
/// (`spec.containers[0].imagePullPolicyy`). Empty for kinds without a typed
/// struct here and for objects that do not decode at all (the store reports
/// those).
pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::api::scheduling::v1::PriorityClass;

    let typed = match kind {
        "Namespace" => round_trip::<Namespace>(obj),
        "Node" => round_trip::<Node>(obj),
        "Pod" => round_trip::<Pod>(obj),
        "Event" => round_trip::<Event>(obj),
        "ServiceAccount" => round_trip::<ServiceAccount>(obj),
        "ConfigMap" => round_trip::<ConfigMap>(obj),
        "Secret" => round_trip::<Secret>(obj),
        "DaemonSet" => round_trip::<DaemonSet>(obj),
        "Deployment" => round_trip::<Deployment>(obj),
        "ReplicaSet" => round_trip::<ReplicaSet>(obj),
        "ControllerRevision" => round_trip::<ControllerRevision>(obj),
        "PriorityClass" => round_trip::<PriorityClass>(obj),
        "ClusterRole" => round_trip::<ClusterRole>(obj),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(obj),
        "Role" => round_trip::<Role>(obj),
        "RoleBinding" => round_trip::<RoleBinding>(obj),
        "Lease" => round_trip::<Lease>(obj),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(typed) = typed {
        missing(obj, &typed, "", &mut out);
    }
    out
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// Paths present (and not null) in `given` but absent from `kept`.
fn missing(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, value) in g {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kept) => missing(value, kept, &here, out),
                    None if value.is_null() => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) => {
            for (i, (value, kept)) in g.iter().zip(k).enumerate() {
                missing(value, kept, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_names_a_document_per_group_version() {
        let index = index();
        let paths = index["paths"].as_object().unwrap();
        for gv in ["api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1"] {
            let url = paths[gv]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{gv}?hash=")), "{url}");
        }
        assert!(group_version("apps", "v2").is_none());
    }

    #[test]
    fn every_patch_operation_takes_field_validation_and_names_its_kind() {
        let doc = group_version("apps", "v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"]["patch"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "DaemonSet"})
        );
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"fieldValidation"), "{params:?}");
        let core = group_version("", "v1").unwrap();
        assert!(core["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"].is_object());
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth_and_nulls_are_not_fields() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "creationTimestamp": null, "labels": {"any-key": "is fine"}},
            "spec": {
                "containers": [
                    {"name": "a", "image": "x"},
                    {"name": "b", "image": "x", "imagePullPolicyy": "Always", "ports": [{"containerPort": 80, "proto": "TCP"}]}
                ],
                "nodeNmae": "node-0"
            },
            "extra": 1
        });
        assert_eq!(
            unknown_fields("Pod", &pod),
            [
                "extra",
                "spec.containers[1].imagePullPolicyy",
                "spec.containers[1].ports[0].proto",
                "spec.nodeNmae"
            ]
        );
        let deploy = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
            "templat": {}}});
        assert_eq!(unknown_fields("Deployment", &deploy), ["spec.templat"]);
        let pc = json!({"metadata": {"name": "p"}, "value": 1, "globalDefault": false, "preemptionPolicy": "Never"});
        assert!(unknown_fields("PriorityClass", &pc).is_empty());
        let cm = json!({"metadata": {"name": "c"}, "data": {"k": "v"}, "binaryData": null});
        assert!(unknown_fields("ConfigMap", &cm).is_empty());
        assert!(unknown_fields("SelfSubjectAccessReview", &pod).is_empty());
    }

    #[test]
    fn the_modes_refuse_warn_or_ignore() {
        let info = RESOURCES.iter().find(|r| r.kind == "ConfigMap").unwrap();
        let cm = json!({"metadata": {"name": "c"}, "dta": {"k": "v"}});
        let strict = FieldValidation::parse(Some("Strict"))
            .unwrap()
            .check(info, &cm)
            .unwrap_err();
        assert_eq!(strict.code, 400);
        assert!(
            strict
                .message
                .ends_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"dta\""),
            "{}",
            strict.message
        );
        assert_eq!(
            FieldValidation::parse(None).unwrap().check(info, &cm).unwrap(),
            ["unknown field \"dta\""]
        );
        assert!(FieldValidation::Ignore.check(info, &cm).unwrap().is_empty());
        assert!(FieldValidation::parse(Some("Loose")).is_err());
    }
}
