//! The Kubernetes objects, as typed k8s-openapi values (docs/agent.md#objects,
//! docs/repair.md#rbac).
//!
//! Where we differ from the chart, on purpose:
//! - the container runs our image's `istio-cni-agent run` (ENTRYPOINT plus
//!   args), and only the env our agent reads is set;
//! - privileges follow the repair mode: the host `/proc` mount,
//!   `ALLOW_SWITCH_TO_HOST_NS` and the netns capabilities (NET_ADMIN, NET_RAW,
//!   SYS_PTRACE, SYS_ADMIN) only with repairPods; the installer alone needs
//!   DAC_OVERRIDE (hostPath dirs not owned by root);
//! - no ambient objects (the agent is sidecar-only), no unused netns volume;
//! - two opt-in features of ours (docs/taint-and-safe-upgrade.md), each with
//!   its settings and its RBAC only when enabled: `taint.enabled` (nodes get,
//!   patch) and `safeUpgrade.enabled` (a Role: get on the DaemonSet and on pods).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, HostPathVolumeSource, LocalObjectReference, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec, ResourceRequirements, ScopeSelector,
    ScopedResourceSelectorRequirement, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::Manifest;
use super::platform::{GKE_BIN_DIR, Platform};
use crate::config::RepairMode;

pub const DAEMONSET: &str = "istio-cni-node";
pub const SERVICE_ACCOUNT: &str = "istio-cni";
pub const CONFIG_MAP: &str = "istio-cni-config";
pub const CONTAINER: &str = "install-cni";
pub const CLUSTER_ROLE: &str = "istio-cni";
pub const REPAIR_ROLE: &str = "istio-cni-repair-role";
pub const REPAIR_BINDING: &str = "istio-cni-repair-rolebinding";
/// ClusterRole and binding for `taint.enabled`.
pub const TAINT_ROLE: &str = "istio-cni-taint";
/// Role and RoleBinding for `safeUpgrade.enabled`.
pub const SAFE_UPGRADE_ROLE: &str = "istio-cni-safe-upgrade";
pub const PRIORITY_CLASS: &str = "system-node-critical";
/// `/healthz` and `/readyz` (Istio hard-codes it).
pub const HEALTH_PORT: i32 = 8000;
pub const METRICS_PORT: i32 = 15014;

/// In-container paths; only the host side of each mount follows the values.
pub const MOUNTED_BIN_DIR: &str = "/host/opt/cni/bin";
pub const MOUNTED_CONF_DIR: &str = "/host/etc/cni/net.d";
pub const RUN_DIR: &str = "/var/run/istio-cni";
pub const MOUNTED_PROC: &str = "/host/proc";

/// One hostPath mount of the agent's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub volume: &'static str,
    pub host_path: String,
    pub container_path: &'static str,
    pub read_only: bool,
    /// The hostPath `type` ("" for none).
    pub host_path_type: &'static str,
}

/// Everything rendered, typed. Absent objects are out of `resourceScope` or not enabled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    pub service_account: Option<ServiceAccount>,
    pub config_map: Option<ConfigMap>,
    pub daemon_set: Option<DaemonSet>,
    pub resource_quota: Option<ResourceQuota>,
    pub network_policy: Option<NetworkPolicy>,
    /// Multus's `NetworkAttachmentDefinition` (a CRD, so untyped).
    pub network_attachment: Option<Value>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

impl Objects {
    /// Every object as JSON, in apply order: identity and RBAC first, the
    /// DaemonSet last so it starts with everything it needs in place.
    pub fn to_values(&self) -> Result<Vec<Value>, serde_json::Error> {
        let mut out = Vec::new();
        if let Some(sa) = &self.service_account {
            out.push(serde_json::to_value(sa)?);
        }
        for (role, binding) in self.cluster_roles.iter().zip(&self.cluster_role_bindings) {
            out.push(serde_json::to_value(role)?);
            out.push(serde_json::to_value(binding)?);
        }
        for (role, binding) in self.roles.iter().zip(&self.role_bindings) {
            out.push(serde_json::to_value(role)?);
            out.push(serde_json::to_value(binding)?);
        }
        if let Some(cm) = &self.config_map {
            out.push(serde_json::to_value(cm)?);
        }
        if let Some(rq) = &self.resource_quota {
            out.push(serde_json::to_value(rq)?);
        }
        if let Some(np) = &self.network_policy {
            out.push(serde_json::to_value(np)?);
        }
        if let Some(nad) = &self.network_attachment {
            out.push(nad.clone());
        }
        if let Some(ds) = &self.daemon_set {
            out.push(serde_json::to_value(ds)?);
        }
        Ok(out)
    }
}

/// Renders every object of `m`.
pub fn render(m: &Manifest) -> Objects {
    let scope = m.values.global.resource_scope.as_str();
    let namespaced = scope != "cluster";
    let cluster = scope != "namespace";
    let mut o = Objects::default();
    if namespaced {
        o.service_account = Some(service_account(m));
        o.config_map = Some(config_map(m));
        let mut ds = daemon_set(m);
        m.overlay.apply(&mut ds);
        o.daemon_set = Some(ds);
        o.resource_quota = m.values.resource_quotas.enabled.then(|| resource_quota(m));
        o.network_policy = m.values.global.network_policy.enabled.then(|| network_policy(m));
        o.network_attachment = (m.values.provider == "multus").then(|| network_attachment(m));
        if m.values.safe_upgrade.enabled {
            o.roles.push(safe_upgrade_role(m));
            o.role_bindings.push(role_binding(m, SAFE_UPGRADE_ROLE));
        }
    }
    if cluster {
        o.cluster_roles.push(cluster_role(m));
        o.cluster_role_bindings
            .push(binding(m, CLUSTER_ROLE, CLUSTER_ROLE, CLUSTER_ROLE));
        if m.values.repair.enabled {
            o.cluster_roles.push(repair_role(m));
            let mut b = binding(m, REPAIR_BINDING, REPAIR_ROLE, "istio-cni-repair");
            if let Some(labels) = b.metadata.labels.as_mut() {
                labels.insert("k8s-app".into(), "istio-cni-repair".into());
            }
            o.cluster_role_bindings.push(b);
        }
        if m.values.taint.enabled {
            o.cluster_roles.push(taint_role(m));
            o.cluster_role_bindings
                .push(binding(m, TAINT_ROLE, TAINT_ROLE, "istio-cni"));
        }
    }
    o
}

fn s(v: &str) -> String {
    v.to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Labels on every object (the chart's istio labels, with us as the manager).
fn labels(m: &Manifest, app: &str) -> BTreeMap<String, String> {
    let v = &m.values;
    let rev = if v.revision.is_empty() { "default" } else { &v.revision };
    let owner = if v.owner_name.is_empty() {
        "unknown"
    } else {
        &v.owner_name
    };
    BTreeMap::from([
        (s("app"), s(app)),
        (s("istio.io/rev"), s(rev)),
        (s("install.operator.istio.io/owning-resource"), s(owner)),
        (s("operator.istio.io/component"), s("Cni")),
        (s("app.kubernetes.io/name"), s("istio-cni")),
        (s("app.kubernetes.io/instance"), s("istio-cni")),
        (s("app.kubernetes.io/part-of"), s("istio")),
        (s("app.kubernetes.io/managed-by"), s("istio-cni-agent")),
    ])
}

fn meta(m: &Manifest, name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(s(name)),
        namespace: namespaced.then(|| m.namespace.clone()),
        labels: Some(labels(m, "istio-cni")),
        ..Default::default()
    }
}

fn service_account(m: &Manifest) -> ServiceAccount {
    let secrets = &m.values.global.image_pull_secrets;
    ServiceAccount {
        metadata: meta(m, SERVICE_ACCOUNT, true),
        image_pull_secrets: (!secrets.is_empty()).then(|| {
            secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        ..Default::default()
    }
}

/// The agent's settings from the values (the chart's ConfigMap, minus keys our agent does not read).
pub fn config_data(m: &Manifest) -> BTreeMap<String, String> {
    let v = &m.values;
    let b = |x: bool| x.to_string();
    let mut data = BTreeMap::from([
        (s("AMBIENT_ENABLED"), b(false)),
        (s("CHAINED_CNI_PLUGIN"), b(v.chained)),
        (s("EXCLUDE_NAMESPACES"), v.exclude_namespaces.join(",")),
        (s("NATIVE_NFTABLES"), b(v.global.native_nftables)),
        (s("REPAIR_ENABLED"), b(v.repair.enabled)),
        (s("REPAIR_REPAIR_PODS"), b(v.repair.repair_pods)),
        (s("REPAIR_DELETE_PODS"), b(v.repair.delete_pods)),
        (s("REPAIR_LABEL_PODS"), b(v.repair.label_pods)),
        (s("REPAIR_INIT_CONTAINER_NAME"), v.repair.init_container_name.clone()),
        (s("REPAIR_BROKEN_POD_LABEL_KEY"), v.repair.broken_pod_label_key.clone()),
        (
            s("REPAIR_BROKEN_POD_LABEL_VALUE"),
            v.repair.broken_pod_label_value.clone(),
        ),
    ]);
    if !v.cni_conf_file_name.is_empty() {
        data.insert(s("CNI_CONF_NAME"), v.cni_conf_file_name.clone());
    }
    // Only when enabled, so the default ConfigMap stays Istio's.
    if v.taint.enabled {
        data.insert(s("NOT_READY_TAINT_ENABLED"), b(true));
        data.insert(s("NOT_READY_TAINT_NAME"), v.taint.name.clone());
    }
    if v.safe_upgrade.enabled {
        data.insert(s("SAFE_UPGRADE_ENABLED"), b(true));
    }
    data.extend(v.env.clone());
    data
}

fn config_map(m: &Manifest) -> ConfigMap {
    ConfigMap {
        metadata: meta(m, CONFIG_MAP, true),
        data: Some(config_data(m)),
        ..Default::default()
    }
}

/// The node's CNI plugin dir (`cniBinDir`; empty: GKE's on GKE, else `/opt/cni/bin`).
pub fn host_bin_dir(m: &Manifest) -> String {
    match m.values.cni_bin_dir.as_str() {
        "" if m.platform == Some(Platform::Gke) => s(GKE_BIN_DIR),
        "" => s("/opt/cni/bin"),
        dir => s(dir),
    }
}

/// The container's hostPath mounts.
pub fn host_mounts(m: &Manifest) -> Vec<HostMount> {
    let mount = |volume, host_path: String, container_path, read_only, host_path_type| HostMount {
        volume,
        host_path,
        container_path,
        read_only,
        host_path_type,
    };
    let mut mounts = vec![
        mount("cni-bin-dir", host_bin_dir(m), MOUNTED_BIN_DIR, false, ""),
        mount(
            "cni-net-dir",
            m.values.cni_conf_dir.clone(),
            MOUNTED_CONF_DIR,
            false,
            "",
        ),
        mount("cni-socket-dir", s(RUN_DIR), RUN_DIR, false, ""),
    ];
    if m.values.repair_mode() == Some(RepairMode::Repair) {
        // Repair enters pods' netns through their processes (/host/proc/<pid>/ns/net).
        mounts.push(mount("cni-host-procfs", s("/proc"), MOUNTED_PROC, true, "Directory"));
    }
    mounts
}

/// The capabilities the container adds (after dropping ALL).
pub fn capabilities(m: &Manifest) -> Vec<String> {
    if m.values.repair_mode() == Some(RepairMode::Repair) {
        strings(&["NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_ADMIN", "DAC_OVERRIDE"])
    } else {
        strings(&["DAC_OVERRIDE"])
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: s(name),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: s(path),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn literal_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: s(name),
        value: Some(s(value)),
        ..Default::default()
    }
}

/// The container's own env (on top of the ConfigMap's).
pub fn container_env(m: &Manifest) -> Vec<EnvVar> {
    let mut env = vec![
        field_env("REPAIR_NODE_NAME", "spec.nodeName"),
        literal_env("REPAIR_SIDECAR_ANNOTATION", "sidecar.istio.io/status"),
    ];
    if m.values.repair_mode() == Some(RepairMode::Repair) {
        // The host netns repair must never touch, seen through the /proc mount.
        env.push(literal_env("ALLOW_SWITCH_TO_HOST_NS", "true"));
    }
    env.extend([
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ]);
    env.extend(m.values.env.iter().map(|(k, v)| literal_env(k, v)));
    env
}

/// The container's args after the image's ENTRYPOINT (`istio-cni-agent`).
pub fn container_args(m: &Manifest) -> Vec<String> {
    let mut args = vec![s("run"), format!("--log_output_level={}", m.values.log_level())];
    if m.values.global.log_as_json {
        args.push(s("--log_as_json=true"));
    }
    args
}

fn resources(m: &Manifest) -> Option<ResourceRequirements> {
    let pick = |kind: &str| {
        let map: BTreeMap<String, Quantity> = m
            .values
            .effective_resources()
            .get(kind)?
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, q)| (k.clone(), Quantity(q.clone())))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let (requests, limits) = (pick("requests"), pick("limits"));
    (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
        requests,
        limits,
        ..Default::default()
    })
}

fn security_context(m: &Manifest) -> SecurityContext {
    let v = &m.values;
    let se_linux = v
        .se_linux_options
        .clone()
        .filter(|o| *o != Default::default())
        .map(|mut o| {
            // The chart's default for any SELinux setting: a super-privileged container.
            if o.type_.as_deref().unwrap_or("").is_empty() {
                o.type_ = Some(s("spc_t"));
            }
            o
        });
    SecurityContext {
        privileged: Some(false),
        run_as_user: Some(0),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(strings(&["ALL"])),
            add: Some(capabilities(m)),
        }),
        se_linux_options: se_linux,
        seccomp_profile: v.seccomp_profile.clone().filter(|p| !p.type_.is_empty()),
        app_armor_profile: (!v.use_app_armor_annotation).then(|| AppArmorProfile {
            type_: s("Unconfined"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn daemon_set(m: &Manifest) -> DaemonSet {
    let v = &m.values;
    let selector = BTreeMap::from([(s("k8s-app"), s(DAEMONSET))]);

    let mut ds_labels = labels(m, "istio-cni");
    ds_labels.extend(selector.clone());
    ds_labels.insert(s("release"), s("istio-cni"));
    ds_labels.extend(v.daemon_set_labels.clone());

    let mut pod_labels = labels(m, "istio-cni");
    pod_labels.extend(selector.clone());
    pod_labels.insert(s("sidecar.istio.io/inject"), s("false"));
    pod_labels.insert(s("istio.io/dataplane-mode"), s("none"));
    pod_labels.extend(v.pod_labels.clone());

    let mut annotations = BTreeMap::from([
        (s("sidecar.istio.io/inject"), s("false")),
        (s("prometheus.io/scrape"), s("true")),
        (s("prometheus.io/port"), METRICS_PORT.to_string()),
        (s("prometheus.io/path"), s("/metrics")),
    ]);
    if v.use_app_armor_annotation {
        annotations.insert(
            format!("container.apparmor.security.beta.kubernetes.io/{CONTAINER}"),
            s("unconfined"),
        );
    }
    annotations.extend(v.pod_annotations.clone());

    let mounts = host_mounts(m);
    let container = Container {
        name: s(CONTAINER),
        image: Some(v.image_ref()),
        image_pull_policy: Some(s(v.pull_policy())).filter(|p| !p.is_empty()),
        args: Some(container_args(m)),
        ports: Some(vec![ContainerPort {
            container_port: METRICS_PORT,
            name: Some(s("metrics")),
            protocol: Some(s("TCP")),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(s("/readyz")),
                port: IntOrString::Int(HEALTH_PORT),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(security_context(m)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: s(CONFIG_MAP),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env: Some(container_env(m)),
        resources: resources(m),
        volume_mounts: Some(
            mounts
                .iter()
                .map(|h| VolumeMount {
                    name: s(h.volume),
                    mount_path: s(h.container_path),
                    read_only: h.read_only.then_some(true),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    let volumes = mounts
        .iter()
        .map(|h| Volume {
            name: s(h.volume),
            host_path: Some(HostPathVolumeSource {
                path: h.host_path.clone(),
                type_: Some(s(h.host_path_type)).filter(|t| !t.is_empty()),
            }),
            ..Default::default()
        })
        .collect();
    let affinity = v.affinity.clone().filter(|a| *a != Default::default());

    DaemonSet {
        metadata: ObjectMeta {
            labels: Some(ds_labels),
            ..meta(m, DAEMONSET, true)
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            update_strategy: v.update_strategy.clone(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([(s("kubernetes.io/os"), s("linux"))])),
                    affinity,
                    tolerations: Some(v.tolerations.clone()).filter(|t| !t.is_empty()),
                    priority_class_name: Some(s(PRIORITY_CLASS)),
                    service_account_name: Some(s(SERVICE_ACCOUNT)),
                    termination_grace_period_seconds: v.termination_grace_period_seconds,
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..Default::default()
    }
}

fn cluster_role(m: &Manifest) -> ClusterRole {
    let mut rules = vec![rule(&[""], &["pods", "nodes", "namespaces"], &["get", "list", "watch"])];
    if m.platform == Some(Platform::Openshift) {
        rules.push(PolicyRule {
            resource_names: Some(strings(&["privileged"])),
            ..rule(&["security.openshift.io"], &["securitycontextconstraints"], &["use"])
        });
    }
    ClusterRole {
        metadata: meta(m, CLUSTER_ROLE, false),
        rules: Some(rules),
        ..Default::default()
    }
}

/// Exactly what the active repair mode needs (docs/repair.md#rbac).
fn repair_role(m: &Manifest) -> ClusterRole {
    let mut rules = vec![
        rule(&[""], &["events"], &["create", "patch"]),
        rule(&[""], &["pods"], &["watch", "get", "list"]),
    ];
    match m.values.repair_mode() {
        Some(RepairMode::Delete) => rules.push(rule(&[""], &["pods"], &["delete"])),
        Some(RepairMode::Label) => rules.push(rule(&[""], &["pods/status"], &["patch", "update"])),
        Some(RepairMode::Repair) | None => {}
    }
    ClusterRole {
        metadata: meta(m, REPAIR_ROLE, false),
        rules: Some(rules),
        ..Default::default()
    }
}

/// `taint.enabled`: read this node and patch its taints away. A
/// DaemonSet's pods share one ServiceAccount, so RBAC cannot narrow this to
/// the agent's own node (resourceNames would need every node's name), and
/// the NodeRestriction admission plugin only restricts kubelets' node
/// identities, not ServiceAccounts: any agent could patch any node. The
/// agent itself only ever patches NODE_NAME, and only the taint's entries.
fn taint_role(m: &Manifest) -> ClusterRole {
    ClusterRole {
        metadata: meta(m, TAINT_ROLE, false),
        rules: Some(vec![rule(&[""], &["nodes"], &["get", "patch"])]),
        ..Default::default()
    }
}

/// `safeUpgrade.enabled`: on SIGTERM the agent reads its own pod and its
/// DaemonSet, in its namespace. The DaemonSet is named; the pod cannot be
/// (its name is generated), so pods in this namespace are readable.
fn safe_upgrade_role(m: &Manifest) -> Role {
    Role {
        metadata: meta(m, SAFE_UPGRADE_ROLE, true),
        rules: Some(vec![
            PolicyRule {
                resource_names: Some(strings(&[DAEMONSET])),
                ..rule(&["apps"], &["daemonsets"], &["get"])
            },
            rule(&[""], &["pods"], &["get"]),
        ]),
    }
}

fn role_binding(m: &Manifest, name: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(m, name, true),
        role_ref: role_ref("Role", name),
        subjects: agent_subjects(m),
    }
}

fn binding(m: &Manifest, name: &str, role: &str, app: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            labels: Some(labels(m, app)),
            ..meta(m, name, false)
        },
        role_ref: role_ref("ClusterRole", role),
        subjects: agent_subjects(m),
    }
}

/// A binding's reference to the (cluster) role `name`.
fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: s("rbac.authorization.k8s.io"),
        kind: s(kind),
        name: s(name),
    }
}

/// A binding's subjects: the agent's service account.
fn agent_subjects(m: &Manifest) -> Option<Vec<Subject>> {
    Some(vec![Subject {
        kind: s("ServiceAccount"),
        name: s(SERVICE_ACCOUNT),
        namespace: Some(m.namespace.clone()),
        ..Default::default()
    }])
}

fn resource_quota(m: &Manifest) -> ResourceQuota {
    ResourceQuota {
        metadata: meta(m, "istio-cni-resource-quota", true),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                s("pods"),
                Quantity(m.values.resource_quotas.pods.to_string()),
            )])),
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    operator: s("In"),
                    scope_name: s("PriorityClass"),
                    values: Some(strings(&[PRIORITY_CLASS])),
                }]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn network_policy(m: &Manifest) -> NetworkPolicy {
    let name = if m.values.revision.is_empty() {
        s("istio-cni")
    } else {
        format!("istio-cni-{}", m.values.revision)
    };
    let port = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some(s("TCP")),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(m, &name, true),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(s("k8s-app"), s(DAEMONSET))])),
                ..Default::default()
            }),
            policy_types: Some(strings(&["Ingress", "Egress"])),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![port(METRICS_PORT), port(HEALTH_PORT)]),
                ..Default::default()
            }]),
            egress: Some(vec![NetworkPolicyEgressRule::default()]),
        }),
    }
}

fn network_attachment(m: &Manifest) -> Value {
    json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "istio-cni", "namespace": "default", "labels": labels(m, "istio-cni")},
    })
}
