//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/<group>`, `/apis/<group>/<version>` (the legacy, non-aggregated
//! format, which kubectl and kube fall back to).

pub(crate) mod openapi;

use serde_json::{Value, json};

use crate::apiserver::registry::resources::{self, RESOURCES, subresource_kind, subresource_verbs};

/// The Kubernetes version the server reports.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";
pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = resources::versions(group)
        .into_iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups().into_iter().map(group_entry).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, or `None` for an unknown group.
pub fn api_group(group: &str) -> Option<Value> {
    if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    }
    let mut g = group_entry(group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1` or `/apis/<group>/<version>`, or `None` when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        entries.push(e);
        for sub in r.subresources {
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": subresource_kind(r, sub),
                "verbs": subresource_verbs(sub),
            });
            if *sub == "binding" {
                e["kind"] = json!("Binding");
            }
            if *sub == "eviction" {
                // kubectl drain reads the Eviction's group/version here.
                e["group"] = json!("policy");
                e["version"] = json!("v1");
            }
            if *sub == "token" {
                e["group"] = json!("authentication.k8s.io");
                e["version"] = json!("v1");
            }
            if *sub == "scale" {
                // kubectl scale finds the Scale's group/version here.
                e["group"] = json!("autoscaling");
                e["version"] = json!("v1");
            }
            entries.push(e);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in `list[key]`.
    fn names<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    /// The resource `name` of a resource list, having every one of `want`.
    fn resource<'a>(list: &'a Value, name: &str, want: &[&str]) -> &'a Value {
        let names = names(list, "resources");
        for want in want {
            assert!(names.contains(want), "{want}");
        }
        &list["resources"][names.iter().position(|n| *n == name).unwrap()]
    }

    /// A subresource's (group, version, kind) when it is not its parent's.
    fn gvk(r: &Value) -> (&str, &str, &str) {
        let field = |f: &str| r[f].as_str().unwrap_or_default();
        (field("group"), field("version"), field("kind"))
    }

    #[test]
    fn core_resource_list() {
        let l = resource_list("", "v1").unwrap();
        let want = [
            "pods",
            "pods/status",
            "pods/log",
            "pods/binding",
            "nodes",
            "namespaces",
            "events",
            "configmaps",
        ];
        assert_eq!(gvk(resource(&l, "pods/eviction", &want)), ("policy", "v1", "Eviction"));
        let pods = resource(&l, "pods", &[]);
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["namespaced"], true);
        assert!(resource_list("", "v2").is_none());
    }

    #[test]
    fn groups() {
        let g = api_group_list();
        let names = names(&g, "groups");
        assert!(names.contains(&"apps") && names.contains(&"rbac.authorization.k8s.io"));
        assert_eq!(
            api_group("apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert!(api_group("nope").is_none());
        let apps = resource_list("apps", "v1").unwrap();
        assert_eq!(apps["groupVersion"], "apps/v1");
        assert_eq!(apps["resources"][0]["shortNames"], json!(["ds"]));
        let want = [
            "deployments",
            "deployments/status",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
            "controllerrevisions",
        ];
        let scale = resource(&apps, "deployments/scale", &want);
        assert_eq!(gvk(scale), ("autoscaling", "v1", "Scale"));
        let scheduling = resource_list("scheduling.k8s.io", "v1").unwrap();
        assert_eq!(scheduling["resources"][0]["name"], "priorityclasses");
        assert_eq!(scheduling["resources"][0]["namespaced"], false);
    }
}
