//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and prints.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::apiserver::ids;

use crate::apiserver::registry::resources::ResourceInfo;
use crate::apiserver::registry::selectors::LabelSelector;
use crate::apiserver::registry::strategy::pod;

/// What each row carries in `object` (the `includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    // The first acceptable media type wins; kubectl lists Table first.
    let first = accept.split(',').next().unwrap_or("");
    first.contains("as=Table") && first.contains("g=meta.k8s.io")
}

struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
}

const fn col(name: &'static str) -> Col {
    Col {
        name,
        ty: "string",
        priority: 0,
    }
}

const fn wide(name: &'static str) -> Col {
    Col {
        name,
        ty: "string",
        priority: 1,
    }
}

fn columns(info: &ResourceInfo) -> Vec<Col> {
    match (info.group, info.plural) {
        ("", "pods") => vec![
            col("Name"),
            col("Ready"),
            col("Status"),
            Col {
                ty: "integer",
                ..col("Restarts")
            },
            col("Age"),
            wide("IP"),
            wide("Node"),
            wide("Nominated Node"),
            wide("Readiness Gates"),
        ],
        ("", "nodes") => vec![
            col("Name"),
            col("Status"),
            col("Roles"),
            col("Age"),
            col("Version"),
            wide("Internal-IP"),
            wide("External-IP"),
            wide("OS-Image"),
            wide("Kernel-Version"),
            wide("Container-Runtime"),
        ],
        ("", "namespaces") => vec![col("Name"), col("Status"), col("Age")],
        ("", "configmaps") => vec![col("Name"), col("Data"), col("Age")],
        ("", "secrets") => vec![col("Name"), col("Type"), col("Data"), col("Age")],
        ("", "serviceaccounts") => vec![col("Name"), col("Secrets"), col("Age")],
        ("", "events") => vec![
            col("Last Seen"),
            col("Type"),
            col("Reason"),
            col("Object"),
            col("Message"),
        ],
        ("apps", "daemonsets") => vec![
            col("Name"),
            col("Desired"),
            col("Current"),
            col("Ready"),
            col("Up-to-date"),
            col("Available"),
            col("Node Selector"),
            col("Age"),
            wide("Containers"),
            wide("Images"),
            wide("Selector"),
        ],
        ("apps", "deployments") => vec![
            col("Name"),
            col("Ready"),
            col("Up-to-date"),
            col("Available"),
            col("Age"),
            wide("Containers"),
            wide("Images"),
            wide("Selector"),
        ],
        ("apps", "replicasets") => vec![
            col("Name"),
            col("Desired"),
            col("Current"),
            col("Ready"),
            col("Age"),
            wide("Containers"),
            wide("Images"),
            wide("Selector"),
        ],
        ("apps", "controllerrevisions") => vec![col("Name"), col("Controller"), col("Revision"), col("Age")],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            col("Name"),
            col("Value"),
            col("Global-Default"),
            col("Age"),
            col("PreemptionPolicy"),
        ],
        (_, "clusterrolebindings" | "rolebindings") => vec![col("Name"), col("Role"), col("Age")],
        ("coordination.k8s.io", "leases") => vec![col("Name"), col("Holder"), col("Age")],
        _ => vec![col("Name"), col("Age")],
    }
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn age(obj: &Value) -> String {
    ids::seconds_since(s(obj, "/metadata/creationTimestamp")).map_or_else(|| "<unknown>".into(), ids::human_duration)
}

/// A string map as `k=v,k2=v2` ("" when absent).
fn pairs(obj: &Value, ptr: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn cells(info: &ResourceInfo, obj: &Value) -> Vec<Value> {
    let name = s(obj, "/metadata/name");
    match (info.group, info.plural) {
        ("", "pods") => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = obj.pointer("/status/containerStatuses").and_then(Value::as_array);
            let ready = statuses.map_or(0, |c| c.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = statuses.map_or(0, |c| c.iter().map(|c| n(c, "/restartCount")).sum());
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod::display_status(obj)),
                json!(restarts),
                json!(age(obj)),
                json!(or_none(s(obj, "/status/podIP").to_string())),
                json!(or_none(s(obj, "/spec/nodeName").to_string())),
                json!(or_none(s(obj, "/status/nominatedNodeName").to_string())),
                json!("<none>"),
            ]
        }
        ("", "nodes") => {
            let conditions = obj.pointer("/status/conditions").and_then(Value::as_array);
            let ready = conditions.is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            let mut status = if ready { "Ready" } else { "NotReady" }.to_string();
            if obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let address = |ty: &str| -> String {
                obj.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| x["type"] == ty))
                    .map(|x| s(x, "/address").to_string())
                    .unwrap_or_default()
            };
            vec![
                json!(name),
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age(obj)),
                json!(s(obj, "/status/nodeInfo/kubeletVersion")),
                json!(or_none(address("InternalIP"))),
                json!(or_none(address("ExternalIP"))),
                json!(or_none(s(obj, "/status/nodeInfo/osImage").to_string())),
                json!(or_none(s(obj, "/status/nodeInfo/kernelVersion").to_string())),
                json!(or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion").to_string())),
            ]
        }
        ("", "namespaces") => vec![json!(name), json!(s(obj, "/status/phase")), json!(age(obj))],
        ("", "configmaps") => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_object))
                .map(serde_json::Map::len)
                .sum::<usize>();
            vec![json!(name), json!(count), json!(age(obj))]
        }
        ("", "secrets") => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, serde_json::Map::len);
            vec![json!(name), json!(s(obj, "/type")), json!(count), json!(age(obj))]
        }
        ("", "serviceaccounts") => {
            let count = obj.get("secrets").and_then(Value::as_array).map_or(0, Vec::len);
            vec![json!(name), json!(count), json!(age(obj))]
        }
        ("", "events") => {
            let since = |paths: &[&str]| {
                paths
                    .iter()
                    .map(|p| s(obj, p))
                    .find(|t| !t.is_empty())
                    .and_then(ids::seconds_since)
                    .map_or_else(|| "<unknown>".into(), ids::human_duration)
            };
            let mut last = since(&["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]);
            // Repeats counted on one Event read "5s (x12 over 2m)".
            let count = obj.get("count").and_then(Value::as_i64).unwrap_or(1);
            if count > 1 {
                let first = since(&["/firstTimestamp", "/eventTime", "/metadata/creationTimestamp"]);
                last = format!("{last} (x{count} over {first})");
            }
            let object = format!(
                "{}/{}",
                s(obj, "/involvedObject/kind").to_lowercase(),
                s(obj, "/involvedObject/name")
            );
            vec![
                json!(last),
                json!(s(obj, "/type")),
                json!(s(obj, "/reason")),
                json!(object),
                json!(s(obj, "/message")),
            ]
        }
        ("apps", "deployments") => {
            let ready = format!("{}/{}", n(obj, "/status/readyReplicas"), n(obj, "/spec/replicas"));
            let status = [
                json!(ready),
                json!(n(obj, "/status/updatedReplicas")),
                json!(n(obj, "/status/availableReplicas")),
            ];
            workload_row(obj, name, status)
        }
        ("apps", "replicasets") => {
            let status = ["/spec/replicas", "/status/replicas", "/status/readyReplicas"].map(|p| json!(n(obj, p)));
            workload_row(obj, name, status)
        }
        ("apps", "controllerrevisions") => {
            let controller = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|o| o.iter().find(|o| o["controller"] == true))
                .map(|o| {
                    let group = s(o, "/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
                    let kind = s(o, "/kind").to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", s(o, "/name"))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(name),
                json!(controller),
                json!(n(obj, "/revision")),
                json!(age(obj)),
            ]
        }
        ("scheduling.k8s.io", "priorityclasses") => vec![
            json!(name),
            json!(n(obj, "/value")),
            json!(obj.get("globalDefault") == Some(&Value::Bool(true))),
            json!(age(obj)),
            json!(or_none(s(obj, "/preemptionPolicy").to_string())),
        ],
        ("apps", "daemonsets") => {
            let node_selector = pairs(obj, "/spec/template/spec/nodeSelector");
            let selector = pairs(obj, "/spec/selector/matchLabels");
            vec![
                json!(name),
                json!(n(obj, "/status/desiredNumberScheduled")),
                json!(n(obj, "/status/currentNumberScheduled")),
                json!(n(obj, "/status/numberReady")),
                json!(n(obj, "/status/updatedNumberScheduled")),
                json!(n(obj, "/status/numberAvailable")),
                json!(or_none(node_selector)),
                json!(age(obj)),
                json!(container_fields(obj, "/name")),
                json!(container_fields(obj, "/image")),
                json!(or_none(selector)),
            ]
        }
        (_, "clusterrolebindings" | "rolebindings") => vec![
            json!(name),
            json!(format!("{}/{}", s(obj, "/roleRef/kind"), s(obj, "/roleRef/name"))),
            json!(age(obj)),
        ],
        ("coordination.k8s.io", "leases") => {
            vec![json!(name), json!(s(obj, "/spec/holderIdentity")), json!(age(obj))]
        }
        _ => vec![json!(name), json!(age(obj))],
    }
}

/// `field` of every container of a workload's template, comma-separated.
fn container_fields(obj: &Value, field: &str) -> String {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(|c| s(c, field).to_string()).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// A workload's row: its name, its `status` cells and age, then the wide
/// columns: its template's containers and images, its selector.
fn workload_row(obj: &Value, name: &str, status: [Value; 3]) -> Vec<Value> {
    let mut row = vec![json!(name)];
    row.extend(status);
    row.extend([
        json!(age(obj)),
        json!(container_fields(obj, "/name")),
        json!(container_fields(obj, "/image")),
        json!(or_none(LabelSelector::query_of_spec(obj))),
    ]);
    row
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// A Table of `objs`; `list_meta` becomes the table's metadata.
pub fn table(info: &ResourceInfo, objs: &[Arc<Value>], include: IncludeObject, list_meta: Value) -> Value {
    let cols: Vec<Value> = columns(info)
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(info, o)});
            let object = row_object(o, include);
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::resources::{RESOURCES, ids};

    #[test]
    fn accept_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }

    #[test]
    fn every_resource_has_matching_cells() {
        for info in RESOURCES {
            let t = table(
                info,
                &[Arc::new(json!({"metadata": {"name": "x"}}))],
                IncludeObject::Metadata,
                json!({}),
            );
            let ncols = t["columnDefinitions"].as_array().unwrap().len();
            let ncells = t["rows"][0]["cells"].as_array().unwrap().len();
            assert_eq!(ncols, ncells, "{}", info.plural);
            assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        }
    }

    #[test]
    fn pod_row() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": crate::apiserver::ids::now_rfc3339()},
        "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.2", "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
        ]}});
        let c = cells(&RESOURCES[ids::PODS], &pod);
        assert_eq!(c[0], "p");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], 3);
        assert_eq!(c[5], "10.0.0.2");
        assert_eq!(c[6], "n1");
    }

    #[test]
    fn event_rows_show_counted_repeats() {
        let info = RESOURCES.iter().find(|r| r.plural == "events").unwrap();
        let ago = |secs: i64| {
            let t = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs);
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        let event = |count: i64| {
            json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "Unhealthy", "count": count,
                "firstTimestamp": ago(150), "lastTimestamp": ago(5),
                "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m"})
        };
        let last = |count| cells(info, &event(count))[0].as_str().unwrap().to_string();
        assert!(last(12).ends_with(" (x12 over 2m30s)"), "{}", last(12));
        assert!(!last(1).contains("(x"), "{}", last(1));
    }

    #[test]
    fn workload_rows() {
        let find = |plural: &str| RESOURCES.iter().find(|r| r.plural == plural).unwrap();
        let deploy = json!({"metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "j"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = cells(find("deployments"), &deploy);
        assert_eq!(c[..4], [json!("web"), json!("2/3"), json!(3), json!(2)]);
        assert_eq!(c[5..], [json!("a,b"), json!("i:1,j"), json!("app=web")]);
        let c = cells(find("replicasets"), &deploy);
        assert_eq!(c[..4], [json!("web"), json!(3), json!(0), json!(2)]);
        let rev = json!({"metadata": {"name": "ds-abc", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u", "controller": true}]}, "revision": 2});
        let c = cells(find("controllerrevisions"), &rev);
        assert_eq!(c[..3], [json!("ds-abc"), json!("daemonset.apps/ds"), json!(2)]);
        let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000, "preemptionPolicy": "PreemptLowerPriority"});
        let c = cells(find("priorityclasses"), &pc);
        assert_eq!(
            c[..3],
            [json!("system-node-critical"), json!(2_000_001_000), json!(false)]
        );
        assert_eq!(c[4], "PreemptLowerPriority");
    }

    #[test]
    fn node_row() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let c = cells(&RESOURCES[ids::NODES], &node);
        assert_eq!(c[1], "Ready");
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[4], "v1.33.0");
    }
}
