//! The resource table: every kind the server stores, with the names and
//! properties discovery, routing, RBAC and the store need.

/// One served resource (a REST collection), e.g. `pods` in the core group.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// URL segment, lower-case plural (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<sub>`.
    pub subresources: &'static [&'static str],
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub generation: bool,
    /// Verbs served on the main resource.
    pub verbs: &'static [&'static str],
    /// A review (access checks, whoami): create-only, answered, never stored.
    pub review: bool,
}

impl ResourceInfo {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether the main resource ignores status changes (status is owned by the
    /// `status` subresource, as in Kubernetes).
    pub fn has_status_subresource(&self) -> bool {
        self.has_subresource("status")
    }

    /// `pods` or `daemonsets.apps`, the form Kubernetes uses in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Verbs of a main resource.
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs, kind and group/version of a subresource, for discovery.
pub fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "ephemeralcontainers" => &["get", "patch", "update"],
        "log" => &["get"],
        "binding" | "eviction" | "token" => &["create"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "finalize" => &["update"],
        "scale" => &["get", "patch", "update"],
        _ => &[],
    }
}

/// The kind a subresource accepts/returns.
pub fn subresource_kind(res: &ResourceInfo, sub: &str) -> &'static str {
    match sub {
        "binding" => "Binding",
        "eviction" => "Eviction",
        "token" => "TokenRequest",
        "log" => "Pod",
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        "portforward" => "PodPortForwardOptions",
        "scale" => "Scale",
        _ => res.kind,
    }
}

const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        generation: false,
        verbs: RESOURCE_VERBS,
        review: false,
    }
}

const fn review(group: &'static str, plural: &'static str, singular: &'static str, kind: &'static str) -> ResourceInfo {
    ResourceInfo {
        verbs: &["create"],
        review: true,
        ..res(group, "v1", plural, singular, kind, false)
    }
}

/// Every resource the server serves. The index in this table is the store's key.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        short_names: &["ns"],
        subresources: &["status", "finalize"],
        ..res("", "v1", "namespaces", "namespace", "Namespace", false)
    },
    ResourceInfo {
        short_names: &["no"],
        subresources: &["status"],
        ..res("", "v1", "nodes", "node", "Node", false)
    },
    ResourceInfo {
        short_names: &["po"],
        categories: &["all"],
        subresources: &[
            "status",
            "log",
            "binding",
            "eviction",
            "exec",
            "attach",
            "portforward",
            "ephemeralcontainers",
        ],
        ..res("", "v1", "pods", "pod", "Pod", true)
    },
    ResourceInfo {
        short_names: &["ev"],
        ..res("", "v1", "events", "event", "Event", true)
    },
    ResourceInfo {
        short_names: &["sa"],
        subresources: &["token"],
        ..res("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", true)
    },
    ResourceInfo {
        short_names: &["cm"],
        ..res("", "v1", "configmaps", "configmap", "ConfigMap", true)
    },
    res("", "v1", "secrets", "secret", "Secret", true),
    ResourceInfo {
        short_names: &["ds"],
        categories: &["all"],
        subresources: &["status"],
        generation: true,
        ..res("apps", "v1", "daemonsets", "daemonset", "DaemonSet", true)
    },
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
    ),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
    ),
    res("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", true),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
    ),
    res("coordination.k8s.io", "v1", "leases", "lease", "Lease", true),
    review(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
    ),
    review(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
    ),
    review(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
    ),
    // Appended (not inserted) so the ids above stay where they are.
    ResourceInfo {
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        generation: true,
        ..res("apps", "v1", "deployments", "deployment", "Deployment", true)
    },
    ResourceInfo {
        short_names: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        generation: true,
        ..res("apps", "v1", "replicasets", "replicaset", "ReplicaSet", true)
    },
    res(
        "apps",
        "v1",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
    ),
    ResourceInfo {
        short_names: &["pc"],
        ..res(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "priorityclass",
            "PriorityClass",
            false,
        )
    },
];

/// Index of a resource in [`RESOURCES`].
pub type ResourceId = usize;

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by group and kind (any version).
pub fn find_kind(group: &str, kind: &str) -> Option<ResourceId> {
    RESOURCES.iter().position(|r| r.group == group && r.kind == kind)
}

pub fn info(id: ResourceId) -> &'static ResourceInfo {
    &RESOURCES[id]
}

/// The well-known ids, checked at compile time against the table order.
pub mod ids {
    use super::ResourceId;
    pub const NAMESPACES: ResourceId = 0;
    pub const NODES: ResourceId = 1;
    pub const PODS: ResourceId = 2;
    pub const SERVICEACCOUNTS: ResourceId = 4;
    pub const CLUSTERROLES: ResourceId = 8;
    pub const CLUSTERROLEBINDINGS: ResourceId = 9;
    pub const ROLES: ResourceId = 10;
    pub const ROLEBINDINGS: ResourceId = 11;
    pub const PRIORITYCLASSES: ResourceId = 19;
}

/// API groups other than core, in discovery order, with their versions.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Versions served for a group (`""` for core).
pub fn versions(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !out.contains(&r.version) {
            out.push(r.version);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_table() {
        assert_eq!(info(ids::NAMESPACES).plural, "namespaces");
        assert_eq!(info(ids::NODES).plural, "nodes");
        assert_eq!(info(ids::PODS).plural, "pods");
        assert_eq!(info(ids::SERVICEACCOUNTS).plural, "serviceaccounts");
        assert_eq!(info(ids::CLUSTERROLES).plural, "clusterroles");
        assert_eq!(info(ids::CLUSTERROLEBINDINGS).plural, "clusterrolebindings");
        assert_eq!(info(ids::ROLES).plural, "roles");
        assert_eq!(info(ids::ROLEBINDINGS).plural, "rolebindings");
        assert_eq!(info(ids::PRIORITYCLASSES).plural, "priorityclasses");
    }

    #[test]
    fn lookups() {
        assert_eq!(
            find("apps", "v1", "daemonsets").map(|i| info(i).kind),
            Some("DaemonSet")
        );
        assert_eq!(find("", "v1", "daemonsets"), None);
        assert_eq!(find_kind("", "Pod"), Some(ids::PODS));
        assert_eq!(info(ids::PODS).api_version(), "v1");
        assert_eq!(info(find("apps", "v1", "daemonsets").unwrap()).api_version(), "apps/v1");
        assert_eq!(
            groups(),
            vec![
                "apps",
                "rbac.authorization.k8s.io",
                "coordination.k8s.io",
                "authorization.k8s.io",
                "authentication.k8s.io",
                "scheduling.k8s.io"
            ]
        );
    }
}
