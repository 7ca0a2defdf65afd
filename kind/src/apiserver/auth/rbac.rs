//! RBAC authorization from stored ClusterRoles, Roles and their bindings (pure).
//!
//! A request is allowed when some binding whose subjects include the user
//! (by service account, user name or group) references a role with a rule
//! that covers the request's verb, API group, resource (or
//! `resource/subresource`) and name. ClusterRoleBindings apply everywhere,
//! RoleBindings only in their own namespace. Members of `system:masters` are
//! allowed everything.

use std::collections::HashMap;

use serde_json::Value;

/// The authenticated identity of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

pub const MASTERS_GROUP: &str = "system:masters";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

impl UserInfo {
    /// A service account's identity: `system:serviceaccount:<ns>:<name>` in
    /// the groups `system:serviceaccounts`, `system:serviceaccounts:<ns>` and
    /// `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED_GROUP.into(),
            ],
        }
    }

    /// The cluster administrator.
    pub fn admin() -> UserInfo {
        UserInfo {
            name: "kubernetes-admin".into(),
            groups: vec![MASTERS_GROUP.into(), AUTHENTICATED_GROUP.into()],
        }
    }

    /// `(namespace, name)` when this is a service account.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        rest.split_once(':')
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource(ResourceAttributes),
    NonResource { verb: String, path: String },
}

/// What a request on an API resource wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// `""` for cluster-scoped resources and all-namespace requests.
    pub namespace: String,
    /// `""` for collection requests.
    pub name: String,
}

impl ResourceAttributes {
    /// `pods`, or `pods/log` for a subresource: how rules and messages name it.
    fn path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// One policy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `"ClusterRole"` or `"Role"`.
    pub role_kind: String,
    pub role_name: String,
    pub subjects: Vec<Subject>,
    /// The namespace of a RoleBinding; `None` for a ClusterRoleBinding.
    pub namespace: Option<String>,
}

/// The authorization state: roles and bindings.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cluster_roles: HashMap<String, Vec<Rule>>,
    /// Roles by `(namespace, name)`.
    pub roles: HashMap<(String, String), Vec<Rule>>,
    pub bindings: Vec<Binding>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Parses the `rules` of a Role or ClusterRole object.
pub fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|r| Rule {
                    verbs: strings(r.get("verbs")),
                    api_groups: strings(r.get("apiGroups")),
                    resources: strings(r.get("resources")),
                    resource_names: strings(r.get("resourceNames")),
                    non_resource_urls: strings(r.get("nonResourceURLs")),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses a RoleBinding (with its namespace) or ClusterRoleBinding (`None`).
pub fn binding_of(obj: &Value, namespace: Option<String>) -> Binding {
    let subjects = obj
        .get("subjects")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .map(|s| Subject {
                    kind: str_at(s, "/kind").to_string(),
                    name: str_at(s, "/name").to_string(),
                    namespace: str_at(s, "/namespace").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Binding {
        role_kind: str_at(obj, "/roleRef/kind").to_string(),
        role_name: str_at(obj, "/roleRef/name").to_string(),
        subjects,
        namespace,
    }
}

fn name_of(obj: &Value) -> String {
    str_at(obj, "/metadata/name").to_string()
}

fn namespace_of(obj: &Value) -> String {
    str_at(obj, "/metadata/namespace").to_string()
}

impl Policy {
    /// Builds the policy from stored objects.
    pub fn from_objects<'a>(
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_role_bindings: impl IntoIterator<Item = &'a Value>,
        role_bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Policy {
        let mut p = Policy::default();
        for cr in cluster_roles {
            p.cluster_roles.insert(name_of(cr), rules_of(cr));
        }
        for r in roles {
            p.roles.insert((namespace_of(r), name_of(r)), rules_of(r));
        }
        for b in cluster_role_bindings {
            p.bindings.push(binding_of(b, None));
        }
        for b in role_bindings {
            p.bindings.push(binding_of(b, Some(namespace_of(b))));
        }
        p
    }

    /// The authorization decision.
    pub fn allows(&self, user: &UserInfo, attrs: &Attributes) -> bool {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return true;
        }
        let authenticated = user.groups.iter().any(|g| g == AUTHENTICATED_GROUP);
        if let Attributes::NonResource { path, .. } = attrs
            && is_discovery_path(path)
            && authenticated
        {
            return true;
        }
        // Kubernetes' `system:basic-user`: everyone may ask about themselves.
        if let Attributes::Resource(r) = attrs
            && authenticated
            && r.verb == "create"
            && matches!(
                (r.group.as_str(), r.resource.as_str()),
                ("authorization.k8s.io", "selfsubjectaccessreviews") | ("authentication.k8s.io", "selfsubjectreviews")
            )
        {
            return true;
        }
        let request_ns = match attrs {
            Attributes::Resource(r) => r.namespace.as_str(),
            Attributes::NonResource { .. } => "",
        };
        self.bindings.iter().any(|b| {
            // A RoleBinding grants only inside its namespace (never cluster-scoped
            // or all-namespace requests).
            if let Some(ns) = &b.namespace
                && (request_ns.is_empty() || ns != request_ns || matches!(attrs, Attributes::NonResource { .. }))
            {
                return false;
            }
            if !b
                .subjects
                .iter()
                .any(|s| subject_matches(s, user, b.namespace.as_deref()))
            {
                return false;
            }
            let rules = match (b.role_kind.as_str(), &b.namespace) {
                ("ClusterRole", _) => self.cluster_roles.get(&b.role_name),
                ("Role", Some(ns)) => self.roles.get(&(ns.clone(), b.role_name.clone())),
                _ => None,
            };
            rules.is_some_and(|rules| rules.iter().any(|r| rule_allows(r, attrs)))
        })
    }
}

/// Discovery and health endpoints every authenticated user may read
/// (Kubernetes' `system:discovery` and `system:public-info-viewer`).
fn is_discovery_path(path: &str) -> bool {
    matches!(path, "/api" | "/apis" | "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi/")
}

fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: Option<&str>) -> bool {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns.unwrap_or("")
            } else {
                s.namespace.as_str()
            };
            user.as_service_account() == Some((ns, s.name.as_str()))
        }
        "User" => user.name == s.name,
        "Group" => user.groups.contains(&s.name),
        _ => false,
    }
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one rule covers the request.
pub fn rule_allows(rule: &Rule, attrs: &Attributes) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            if !has(&rule.verbs, &r.verb) || !has(&rule.api_groups, &r.group) {
                return false;
            }
            let (full, any_sub) = (r.path(), format!("*/{}", r.subresource));
            let resource_ok = rule
                .resources
                .iter()
                .any(|x| *x == "*" || *x == full || (!r.subresource.is_empty() && *x == any_sub));
            if !resource_ok {
                return false;
            }
            rule.resource_names.is_empty() || (!r.name.is_empty() && rule.resource_names.contains(&r.name))
        }
        Attributes::NonResource { verb, path } => {
            has(&rule.verbs, verb)
                && rule.non_resource_urls.iter().any(|u| {
                    u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

/// The message of a 403, in Kubernetes' wording.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    match attrs {
        Attributes::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let subject = if r.name.is_empty() {
                format!("{qualified} is forbidden")
            } else {
                format!("{qualified} \"{}\" is forbidden", r.name)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            format!(
                "{subject}: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
                user.name,
                r.verb,
                r.path(),
                r.group
            )
        }
        Attributes::NonResource { verb, path } => {
            format!("forbidden: User \"{}\" cannot {verb} path \"{path}\"", user.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn policy() -> Policy {
        let pod_reader = json!({"metadata": {"name": "pod-reader"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
        ]});
        let status_writer = json!({"metadata": {"name": "status-writer"}, "rules": [
            {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["*"], "resourceNames": ["ds1"]},
        ]});
        let everything = json!({"metadata": {"name": "everything"}, "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]},
        ]});
        let cm_role = json!({"metadata": {"name": "cm", "namespace": "team"}, "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
        ]});
        let crb = json!({"metadata": {"name": "b1"}, "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "sys"}]});
        let crb2 = json!({"metadata": {"name": "b2"}, "roleRef": {"kind": "ClusterRole", "name": "status-writer"},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts:writers"}]});
        let crb3 = json!({"metadata": {"name": "b3"}, "roleRef": {"kind": "ClusterRole", "name": "everything"},
            "subjects": [{"kind": "User", "name": "alice"}]});
        let rb = json!({"metadata": {"name": "rb", "namespace": "team"}, "roleRef": {"kind": "Role", "name": "cm"},
            "subjects": [{"kind": "ServiceAccount", "name": "dev"}]});
        let rb2 = json!({"metadata": {"name": "rb2", "namespace": "team"}, "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
            "subjects": [{"kind": "Group", "name": "system:authenticated"}]});
        Policy::from_objects(
            [&pod_reader, &status_writer, &everything],
            [&cm_role],
            [&crb, &crb2, &crb3],
            [&rb, &rb2],
        )
    }

    #[test]
    fn masters_allowed_everything() {
        assert!(Policy::default().allows(&UserInfo::admin(), &res("delete", "", "nodes", "", "", "n")));
    }

    #[test]
    fn cluster_role_binding_grants_exactly_its_rules() {
        let p = policy();
        let sa = UserInfo::service_account("sys", "reader");
        assert!(p.allows(&sa, &res("list", "", "pods", "", "", "")));
        assert!(p.allows(&sa, &res("watch", "", "pods", "", "any", "")));
        assert!(p.allows(&sa, &res("get", "", "pods", "log", "any", "p")));
        assert!(!p.allows(&sa, &res("get", "", "pods", "status", "any", "p")));
        assert!(!p.allows(&sa, &res("delete", "", "pods", "", "any", "p")));
        assert!(!p.allows(&sa, &res("list", "", "configmaps", "", "any", "")));
        assert!(!p.allows(&sa, &res("list", "apps", "pods", "", "any", "")));
        let other = UserInfo::service_account("other", "reader");
        assert!(!p.allows(&other, &res("list", "", "pods", "", "", "")));
    }

    #[test]
    fn groups_subresources_and_resource_names() {
        let p = policy();
        let w = UserInfo::service_account("writers", "x");
        assert!(p.allows(&w, &res("patch", "", "pods", "status", "a", "p")));
        assert!(!p.allows(&w, &res("patch", "", "pods", "", "a", "p")));
        assert!(p.allows(&w, &res("update", "apps", "daemonsets", "", "a", "ds1")));
        assert!(!p.allows(&w, &res("update", "apps", "daemonsets", "", "a", "ds2")));
        assert!(
            !p.allows(&w, &res("list", "apps", "daemonsets", "", "a", "")),
            "resourceNames never match a list"
        );
    }

    #[test]
    fn wildcards_users_and_non_resource_urls() {
        let p = policy();
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec![AUTHENTICATED_GROUP.into()],
        };
        assert!(p.allows(
            &alice,
            &res("deletecollection", "rbac.authorization.k8s.io", "roles", "", "x", "")
        ));
        assert!(p.allows(&alice, &res("get", "", "pods", "log", "x", "p")));
        let nr = |path: &str| Attributes::NonResource {
            verb: "get".into(),
            path: path.into(),
        };
        assert!(p.allows(&alice, &nr("/metrics")));
        assert!(p.allows(&alice, &nr("/debug/pprof")));
        assert!(!p.allows(
            &alice,
            &Attributes::NonResource {
                verb: "post".into(),
                path: "/metrics".into()
            }
        ));
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec![AUTHENTICATED_GROUP.into()],
        };
        assert!(
            p.allows(&bob, &nr("/api/v1")),
            "discovery is open to authenticated users"
        );
        assert!(!p.allows(&bob, &nr("/metrics")));
    }

    #[test]
    fn role_binding_limited_to_its_namespace() {
        let p = policy();
        let dev = UserInfo::service_account("team", "dev");
        assert!(p.allows(&dev, &res("get", "", "configmaps", "", "team", "c")));
        assert!(p.allows(&dev, &res("create", "", "configmaps", "", "team", "")));
        assert!(!p.allows(&dev, &res("get", "", "configmaps", "", "other", "c")));
        assert!(!p.allows(&dev, &res("list", "", "configmaps", "", "", "")));
        assert!(!p.allows(&dev, &res("delete", "", "configmaps", "", "team", "c")));
        // A RoleBinding to a ClusterRole, for every authenticated user, in "team" only.
        let anyone = UserInfo::service_account("elsewhere", "x");
        assert!(p.allows(&anyone, &res("list", "", "pods", "", "team", "")));
        assert!(!p.allows(&anyone, &res("list", "", "pods", "", "default", "")));
        assert!(!p.allows(&anyone, &res("list", "", "pods", "", "", "")));
    }

    #[test]
    fn dangling_role_refs_grant_nothing() {
        let crb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "missing"},
            "subjects": [{"kind": "User", "name": "u"}]});
        let rb_cluster_role_kind = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "x"},
            "subjects": [{"kind": "User", "name": "u"}]});
        let p = Policy::from_objects([], [], [&crb, &rb_cluster_role_kind], []);
        let u = UserInfo {
            name: "u".into(),
            groups: vec![],
        };
        assert!(!p.allows(&u, &res("get", "", "pods", "", "", "p")));
    }

    #[test]
    fn messages() {
        let sa = UserInfo::service_account("sys", "reader");
        assert_eq!(
            forbidden_message(&sa, &res("delete", "", "pods", "", "default", "p")),
            "pods \"p\" is forbidden: User \"system:serviceaccount:sys:reader\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(
            forbidden_message(&sa, &res("list", "apps", "daemonsets", "", "", "")),
            "daemonsets.apps is forbidden: User \"system:serviceaccount:sys:reader\" cannot list resource \"daemonsets\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(sa.as_service_account(), Some(("sys", "reader")));
        assert_eq!(UserInfo::admin().as_service_account(), None);
    }
}
