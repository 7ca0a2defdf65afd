//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes strategic merge patch (pure).
//!
//! The strategic merge patch knows the list merge keys of the built-in types
//! it serves (containers by `name`, volume mounts by `mountPath`, conditions
//! by `type`, ...) and the directives `kubectl` sends: `$patch`
//! (`replace`/`delete`/`merge`), `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>`.

use serde_json::{Map, Value};

/// The patch formats, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml` (server-side apply, approximated by a
    /// strategic merge without field ownership)
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match base.as_str() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Parses a patch body for `ty` (JSON, or YAML for apply).
pub fn parse_patch(ty: PatchType, body: &[u8]) -> Result<Value, String> {
    match ty {
        PatchType::Apply => serde_yaml::from_slice::<Value>(body).map_err(|e| format!("invalid apply patch: {e}")),
        _ => serde_json::from_slice::<Value>(body).map_err(|e| format!("invalid patch body: {e}")),
    }
}

/// Applies a parsed patch to `original`, returning the patched object.
pub fn apply(ty: PatchType, original: &Value, patch: &Value) -> Result<Value, String> {
    match ty {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            let mut out = original.clone();
            merge_patch(&mut out, patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
            let mut out = original.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| format!("JSON patch failed: {e}"))?;
            Ok(out)
        }
        PatchType::Strategic | PatchType::Apply => strategic_merge(original, patch),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// How a list field merges in a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the original (the default, "atomic").
    Replace,
    /// Elements are objects merged by the value of this key.
    MergeByKey(&'static str),
    /// Primitive elements: union (e.g. `metadata.finalizers`).
    MergePrimitives,
}

/// The list strategy of the field at `path` (the object keys from the root,
/// list positions omitted), from the built-in types' patch tags.
pub fn list_strategy(path: &[String]) -> ListStrategy {
    let Some(last) = path.last() else {
        return ListStrategy::Replace;
    };
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str()).unwrap_or("");
    match last.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "ports" if matches!(parent, "containers" | "initContainers" | "ephemeralContainers") => {
            ListStrategy::MergeByKey("containerPort")
        }
        "ports" => ListStrategy::MergeByKey("port"),
        "hostAliases" | "podIPs" | "hostIPs" => ListStrategy::MergeByKey("ip"),
        "conditions" | "addresses" => ListStrategy::MergeByKey("type"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "finalizers" if parent == "metadata" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let mut out = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match merge_map(&mut out, p, &mut path)? {
        MapOutcome::Keep => Ok(Value::Object(out)),
        MapOutcome::Delete => Ok(Value::Object(Map::new())),
    }
}

enum MapOutcome {
    Keep,
    Delete,
}

fn directive(p: &Map<String, Value>) -> Result<Option<&str>, String> {
    match p.get(DIRECTIVE) {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "delete" | "merge") => Ok(Some(s.as_str())),
        Some(other) => Err(format!("unknown patch directive {other}")),
    }
}

/// A patch value as a fresh object (no original): directives applied to nothing.
fn fresh(v: &Value, path: &mut Vec<String>) -> Result<Option<Value>, String> {
    match v {
        Value::Object(p) => {
            let mut m = Map::new();
            match merge_map(&mut m, p, path)? {
                MapOutcome::Keep => Ok(Some(Value::Object(m))),
                MapOutcome::Delete => Ok(None),
            }
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                if is_directive_element(item) {
                    continue;
                }
                if let Some(x) = fresh(item, path)? {
                    out.push(x);
                }
            }
            Ok(Some(Value::Array(out)))
        }
        Value::Null => Ok(None),
        other => Ok(Some(other.clone())),
    }
}

fn is_directive_element(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.get(DIRECTIVE).is_some_and(|d| d == "replace"))
}

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> Result<MapOutcome, String> {
    match directive(patch)? {
        Some("delete") => return Ok(MapOutcome::Delete),
        Some("replace") => {
            orig.clear();
            let stripped: Map<String, Value> = patch
                .iter()
                .filter(|(k, _)| k.as_str() != DIRECTIVE)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            merge_map(orig, &stripped, path)?;
            return Ok(MapOutcome::Keep);
        }
        _ => {}
    }
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            orders.push((field, v));
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVES) {
            let Value::Array(remove) = v else {
                return Err(format!("{k} must be a list"));
            };
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        path.push(k.clone());
        let result = merge_field(orig, k, v, path);
        path.pop();
        result?;
    }
    for (field, order) in orders {
        let Value::Array(order) = order else {
            return Err(format!("{SET_ORDER}{field} must be a list"));
        };
        path.push(field.to_string());
        let strategy = list_strategy(path);
        path.pop();
        if let Some(Value::Array(list)) = orig.get_mut(field) {
            reorder(list, order, strategy);
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(keep) = retain else {
            return Err(format!("{RETAIN_KEYS} must be a list"));
        };
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(MapOutcome::Keep)
}

fn merge_field(orig: &mut Map<String, Value>, key: &str, pv: &Value, path: &mut Vec<String>) -> Result<(), String> {
    match pv {
        Value::Null => {
            orig.remove(key);
        }
        Value::Object(pm) => match orig.get_mut(key) {
            Some(Value::Object(om)) => {
                if let MapOutcome::Delete = merge_map(om, pm, path)? {
                    orig.remove(key);
                }
            }
            _ => match fresh(pv, path)? {
                Some(v) => {
                    orig.insert(key.to_string(), v);
                }
                None => {
                    orig.remove(key);
                }
            },
        },
        Value::Array(items) => {
            let strategy = list_strategy(path);
            let replace_all = items.iter().any(is_directive_element);
            match (strategy, orig.get_mut(key)) {
                (ListStrategy::MergeByKey(mk), Some(Value::Array(list))) if !replace_all => {
                    merge_keyed_list(list, items, mk, path)?;
                }
                (ListStrategy::MergePrimitives, Some(Value::Array(list))) if !replace_all => {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
                _ => {
                    let v = fresh(pv, path)?.unwrap_or(Value::Array(Vec::new()));
                    orig.insert(key.to_string(), v);
                }
            }
        }
        other => {
            orig.insert(key.to_string(), other.clone());
        }
    }
    Ok(())
}

fn merge_keyed_list(list: &mut Vec<Value>, items: &[Value], mk: &str, path: &mut Vec<String>) -> Result<(), String> {
    for item in items {
        let Value::Object(pm) = item else {
            if !list.contains(item) {
                list.push(item.clone());
            }
            continue;
        };
        let key_value = pm.get(mk);
        let pos = key_value.and_then(|kv| list.iter().position(|e| e.get(mk) == Some(kv)));
        if directive(pm)? == Some("delete") {
            if let Some(kv) = key_value {
                list.retain(|e| e.get(mk) != Some(kv));
            }
            continue;
        }
        match pos {
            Some(i) => {
                let delete = match &mut list[i] {
                    Value::Object(om) => matches!(merge_map(om, pm, path)?, MapOutcome::Delete),
                    slot => {
                        *slot = fresh(item, path)?.unwrap_or(Value::Null);
                        false
                    }
                };
                if delete {
                    list.remove(i);
                }
            }
            None => {
                if let Some(v) = fresh(item, path)? {
                    list.push(v);
                }
            }
        }
    }
    Ok(())
}

/// Orders `list` by `order` (elements named there first, in that order; the
/// rest keep their relative order after them).
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let identity = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(identity).collect();
    let mut rest = std::mem::take(list);
    for w in &wanted {
        if let Some(i) = rest.iter().position(|e| identity(e) == *w) {
            list.push(rest.remove(i));
        }
    }
    list.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(orig: Value, patch: Value) -> Value {
        strategic_merge(&orig, &patch).unwrap()
    }

    #[test]
    fn content_types() {
        let cases = [
            ("application/merge-patch+json; charset=utf-8", Some(PatchType::Merge)),
            ("application/strategic-merge-patch+json", Some(PatchType::Strategic)),
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/apply-patch+yaml", Some(PatchType::Apply)),
            ("application/json", None),
        ];
        for (content_type, want) in cases {
            assert_eq!(PatchType::from_content_type(content_type), want, "{content_type}");
        }
    }

    #[test]
    fn merge_patch_rfc7386() {
        let orig = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let out = apply(PatchType::Merge, &orig, &json!({"a": "z", "c": {"f": null}, "l": [3]})).unwrap();
        assert_eq!(out, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
        assert!(apply(PatchType::Merge, &orig, &json!([1])).is_err());
    }

    #[test]
    fn json_patch_ops() {
        let orig = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1, 2]}});
        let ops = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "replace", "path": "/spec/x/0", "value": 9},
            {"op": "test", "path": "/spec/x/1", "value": 2},
        ]);
        let out = apply(PatchType::Json, &orig, &ops).unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"x": [9, 2]}}));
        let failing = json!([{"op": "test", "path": "/spec/x/1", "value": 3}]);
        assert!(apply(PatchType::Json, &orig, &failing).is_err());
        assert!(apply(PatchType::Json, &orig, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_maps_like_merge_patch() {
        let out = smp(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"x": "y"}}}),
            json!({"metadata": {"labels": {"a": null, "c": "3"}, "annotations": {"z": "w"}}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "annotations": {"x": "y", "z": "w"}}})
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let orig = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"},
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "new", "image": "n:1"},
        ]}});
        let out = smp(orig, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([
                {"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "side", "image": "s:1"},
                {"name": "new", "image": "n:1"},
            ])
        );
    }

    #[test]
    fn delete_and_replace_directives() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "tolerations": [{"key": "k"}]}});
        let out = smp(
            orig.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        let out = smp(
            orig.clone(),
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "c"}]));
        let out = smp(orig.clone(), json!({"spec": {"$patch": "replace", "nodeName": "n"}}));
        assert_eq!(out["spec"], json!({"nodeName": "n"}));
        let out = smp(orig.clone(), json!({"spec": {"$patch": "delete"}}));
        assert_eq!(out, json!({}));
        // Atomic lists replace.
        let out = smp(orig, json!({"spec": {"tolerations": [{"key": "j"}]}}));
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "j"}]));
        assert!(strategic_merge(&json!({}), &json!({"$patch": "bogus"})).is_err());
    }

    #[test]
    fn conditions_merge_by_type() {
        let orig = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "PodScheduled", "status": "True"},
        ]}});
        let out = smp(
            orig,
            json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"],
            json!({"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ]})
        );
    }

    #[test]
    fn primitive_lists_and_delete_from_primitive_list() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["x", "y"]}});
        let out = smp(
            orig.clone(),
            json!({"metadata": {"finalizers": ["c", "a"]}, "spec": {"args": ["z"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        assert_eq!(out["spec"]["args"], json!(["z"]));
        let out = smp(
            orig,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn set_element_order_and_retain_keys() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let out = smp(
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}], "containers": [{"name": "a", "image": "i"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c"}, {"name": "a", "image": "i"}, {"name": "b"}])
        );
        let out = smp(
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}}),
            json!({"strategy": {"$retainKeys": ["type"], "type": "OnDelete"}}),
        );
        assert_eq!(out, json!({"strategy": {"type": "OnDelete"}}));
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let orig = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}});
        let out = smp(
            orig,
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 81}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 81}])
        );
    }

    #[test]
    fn new_elements_drop_nulls_and_directives() {
        let out = smp(
            json!({}),
            json!({"spec": {"containers": [{"name": "a", "x": null}]}, "m": {"k": null}}),
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "a"}]}, "m": {}}));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(strategic_merge(&json!({}), &json!([1])).is_err());
        assert!(parse_patch(PatchType::Merge, b"{not json").is_err());
        assert_eq!(parse_patch(PatchType::Apply, b"a: 1\n").unwrap(), json!({"a": 1}));
    }
}
