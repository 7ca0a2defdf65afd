//! `istio-cni-agent manifest`: every platform × repair mode rendered,
//! deserialised into k8s-openapi types and snapshotted; the properties a user
//! checks (RBAC verbs, privileges, paths, probe); real install files; and the
//! Dockerfile the manifest's image is built from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use istio_cni_agent::config::{RepairMode, Settings};
use istio_cni_agent::manifest::objects::{CONTAINER, MOUNTED_BIN_DIR, MOUNTED_CONF_DIR, MOUNTED_PROC, RUN_DIR};
use istio_cni_agent::manifest::{Inputs, Manifest, ManifestArgs, ManifestError, Platform, Source, render};
use istio_cni_kind::node::layout::Layout;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use rstest::rstest;
use serde::Deserialize;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/manifests");

/// The repair modes of the matrix.
#[derive(Debug, Clone, Copy)]
enum Mode {
    RepairPods,
    DeletePods,
    LabelPods,
    Disabled,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::RepairPods => "repairPods",
            Mode::DeletePods => "deletePods",
            Mode::LabelPods => "labelPods",
            Mode::Disabled => "disabled",
        }
    }

    /// `--set` for the mode; the others explicitly off so only this one is active.
    fn set(self) -> Vec<String> {
        let on = |k: &str| {
            let all = ["repairPods", "deletePods", "labelPods"];
            let flags: Vec<String> = all.iter().map(|m| format!("repair.{m}={}", *m == k)).collect();
            vec![flags.join(",")]
        };
        match self {
            Mode::RepairPods => on("repairPods"),
            Mode::DeletePods => on("deletePods"),
            Mode::LabelPods => on("labelPods"),
            Mode::Disabled => vec!["cni.repair.enabled=false".into()],
        }
    }

    fn expected(self) -> Option<RepairMode> {
        match self {
            Mode::RepairPods => Some(RepairMode::Repair),
            Mode::DeletePods => Some(RepairMode::Delete),
            Mode::LabelPods => Some(RepairMode::Label),
            Mode::Disabled => None,
        }
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn manifest(platform: Option<Platform>, mode: Mode) -> Manifest {
    ok(Manifest::resolve(&Inputs {
        platform,
        set: mode.set(),
        ..Default::default()
    }))
}

/// The output, parsed back into typed objects.
#[derive(Default)]
struct Parsed {
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    quotas: Vec<ResourceQuota>,
    policies: Vec<NetworkPolicy>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    other: Vec<serde_json::Value>,
}

impl Parsed {
    fn daemon_set(&self) -> &DaemonSet {
        assert_eq!(self.daemon_sets.len(), 1);
        &self.daemon_sets[0]
    }

    fn pod(&self) -> &PodSpec {
        match self.daemon_set().spec.as_ref().and_then(|s| s.template.spec.as_ref()) {
            Some(p) => p,
            None => panic!("DaemonSet without a pod spec"),
        }
    }

    fn container(&self) -> &Container {
        let pod = self.pod();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].name, CONTAINER);
        &pod.containers[0]
    }

    fn role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
    }

    /// `resource` → sorted verbs, over every rule of `role`.
    fn verbs(&self, role: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for rule in self.role(role).and_then(|r| r.rules.clone()).unwrap_or_default() {
            for res in rule.resources.unwrap_or_default() {
                out.entry(res).or_default().extend(rule.verbs.iter().cloned());
            }
        }
        out
    }

    fn config(&self) -> BTreeMap<String, String> {
        assert_eq!(self.config_maps.len(), 1);
        self.config_maps[0].data.clone().unwrap_or_default()
    }
}

fn typed<T: serde::de::DeserializeOwned>(doc: serde_json::Value) -> T {
    ok(serde_json::from_value(doc))
}

/// Splits the YAML into documents and deserialises each by its kind.
fn parse(yaml: &str) -> Parsed {
    let mut p = Parsed::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: serde_json::Value = ok(serde_json::Value::deserialize(doc));
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        match kind.as_str() {
            "ServiceAccount" => p.service_accounts.push(typed(v)),
            "ConfigMap" => p.config_maps.push(typed(v)),
            "DaemonSet" => p.daemon_sets.push(typed(v)),
            "ClusterRole" => p.cluster_roles.push(typed(v)),
            "ClusterRoleBinding" => p.bindings.push(typed(v)),
            "ResourceQuota" => p.quotas.push(typed(v)),
            "NetworkPolicy" => p.policies.push(typed(v)),
            "Role" => p.roles.push(typed(v)),
            "RoleBinding" => p.role_bindings.push(typed(v)),
            "NetworkAttachmentDefinition" => p.other.push(v),
            other => panic!("unexpected kind {other:?} in\n{yaml}"),
        }
    }
    p
}

fn platform_name(p: Option<Platform>) -> &'static str {
    p.map_or("default", Platform::name)
}

fn layout(p: Option<Platform>) -> Layout {
    match p {
        None => Layout::Default,
        Some(Platform::Gke) => Layout::Gke,
        Some(Platform::K3d) => Layout::K3d,
        Some(Platform::K3s) => Layout::K3s,
        Some(Platform::Microk8s) => Layout::Microk8s,
        Some(Platform::Minikube) => Layout::Minikube,
        Some(Platform::Openshift) => Layout::Openshift,
    }
}

fn set(pairs: &[(&str, &str)]) -> BTreeSet<String> {
    pairs.iter().map(|s| s.0.to_string()).collect()
}

#[rstest]
fn platform_and_repair_mode(
    #[values(
        None,
        Some(Platform::Gke),
        Some(Platform::K3d),
        Some(Platform::K3s),
        Some(Platform::Microk8s),
        Some(Platform::Minikube),
        Some(Platform::Openshift)
    )]
    platform: Option<Platform>,
    #[values(Mode::RepairPods, Mode::DeletePods, Mode::LabelPods, Mode::Disabled)] mode: Mode,
) {
    let m = manifest(platform, mode);
    assert_eq!(m.values.repair_mode(), mode.expected());
    let yaml = ok(m.to_yaml());
    insta::assert_snapshot!(format!("{}_{}", platform_name(platform), mode.name()), yaml);
    let p = parse(&yaml);

    // Exactly one of each namespaced object, in the namespace.
    assert_eq!(p.service_accounts.len(), 1);
    for ns in [
        p.service_accounts[0].metadata.namespace.as_deref(),
        p.config_maps[0].metadata.namespace.as_deref(),
        p.daemon_set().metadata.namespace.as_deref(),
    ] {
        assert_eq!(ns, Some("istio-system"));
    }

    // RBAC: exactly the verbs each mode needs.
    let base = p.verbs("istio-cni");
    let read = set(&[("get", ""), ("list", ""), ("watch", "")]);
    assert_eq!(base.get("pods"), Some(&read));
    assert_eq!(base.get("nodes"), Some(&read));
    assert_eq!(base.get("namespaces"), Some(&read));
    let scc = base.get("securitycontextconstraints");
    assert_eq!(scc.is_some(), platform == Some(Platform::Openshift));
    let repair = p.verbs("istio-cni-repair-role");
    let pods = repair.get("pods").cloned().unwrap_or_default();
    let status = repair.get("pods/status");
    match mode {
        Mode::RepairPods => {
            assert_eq!(pods, read);
            assert_eq!(status, None);
        }
        Mode::DeletePods => {
            assert_eq!(pods, set(&[("delete", ""), ("get", ""), ("list", ""), ("watch", "")]));
            assert_eq!(status, None);
        }
        Mode::LabelPods => {
            assert_eq!(pods, read);
            assert_eq!(status, Some(&set(&[("patch", ""), ("update", "")])));
        }
        Mode::Disabled => {
            assert!(p.role("istio-cni-repair-role").is_none());
            assert_eq!(p.bindings.len(), 1);
        }
    }
    if !matches!(mode, Mode::Disabled) {
        assert_eq!(repair.get("events"), Some(&set(&[("create", ""), ("patch", "")])));
        assert_eq!(repair.len(), if matches!(mode, Mode::LabelPods) { 3 } else { 2 });
        assert_eq!(p.bindings.len(), 2);
    }
    for b in &p.bindings {
        let subjects = b.subjects.clone().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].name, "istio-cni");
        assert_eq!(subjects[0].namespace.as_deref(), Some("istio-system"));
        assert!(p.role(&b.role_ref.name).is_some(), "binding to a missing role");
    }

    // Privileges: the host /proc and the netns capabilities only for in-place repair.
    let repair_pods = matches!(mode, Mode::RepairPods);
    let c = p.container();
    let sc = c.security_context.clone().unwrap_or_default();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.run_as_user, Some(0));
    let caps = sc.capabilities.unwrap_or_default();
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    let add: BTreeSet<String> = caps.add.unwrap_or_default().into_iter().collect();
    let netns = set(&[
        ("NET_ADMIN", ""),
        ("NET_RAW", ""),
        ("SYS_PTRACE", ""),
        ("SYS_ADMIN", ""),
    ]);
    if repair_pods {
        assert!(add.is_superset(&netns), "{add:?}");
    } else {
        assert!(add.is_disjoint(&netns), "{add:?}");
    }
    assert!(add.contains("DAC_OVERRIDE"));
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let proc_mount = mounts.iter().find(|m| m.mount_path == MOUNTED_PROC);
    assert_eq!(proc_mount.is_some(), repair_pods);
    if let Some(m) = proc_mount {
        assert_eq!(m.read_only, Some(true));
    }
    let env = c.env.clone().unwrap_or_default();
    let switch = env.iter().find(|e| e.name == "ALLOW_SWITCH_TO_HOST_NS");
    assert_eq!(switch.and_then(|e| e.value.as_deref()), repair_pods.then_some("true"));

    // Scheduling and health.
    let pod = p.pod();
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some("istio-cni"));
    assert_eq!(pod.host_network, None, "sidecar mode runs in the pod network");
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );
    let probe = c.readiness_probe.clone().and_then(|r| r.http_get);
    let probe = probe.unwrap_or_else(|| panic!("no readiness probe"));
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8000)
    );

    // Host paths: the platform's (the same as the embedded cluster's layout).
    let l = layout(platform);
    let volumes: BTreeMap<String, String> = pod
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v.name, v.host_path?.path)))
        .collect();
    let host_of = |container_path: &str| {
        let m = mounts.iter().find(|m| m.mount_path == container_path);
        let name = m.map(|m| m.name.clone()).unwrap_or_default();
        volumes.get(&name).cloned().unwrap_or_default()
    };
    assert_eq!(host_of(MOUNTED_CONF_DIR), l.conf_dir());
    assert_eq!(host_of(MOUNTED_BIN_DIR), l.bin_dirs()[0]);
    assert_eq!(host_of(RUN_DIR), RUN_DIR);
    assert_eq!(m.host_conf_dir(), l.conf_dir());
    assert_eq!(m.host_bin_dir(), l.bin_dirs()[0]);
    assert_eq!(volumes.len(), mounts.len());

    // Chained mode and the CNI config name per platform.
    let cfg = p.config();
    let openshift = platform == Some(Platform::Openshift);
    assert_eq!(cfg["CHAINED_CNI_PLUGIN"], (!openshift).to_string());
    assert_eq!(
        cfg.get("CNI_CONF_NAME").map(String::as_str),
        openshift.then_some("istio-cni.conf")
    );
    assert_eq!(
        p.other.len(),
        usize::from(openshift),
        "multus NetworkAttachmentDefinition"
    );
    assert_eq!(p.quotas.len(), usize::from(platform == Some(Platform::Gke)));

    // The agent, configured from this env, runs the intended mode on the mounted paths.
    let settings = agent_settings(&m.agent_env("node-1", "istio-cni-node-abcde"));
    assert_eq!(settings.repair.mode(), mode.expected());
    assert_eq!(settings.install.chained_cni_plugin, !openshift);
    assert_eq!(settings.install.mounted_cni_net_dir, Path::new(MOUNTED_CONF_DIR));
    assert_eq!(settings.install.cni_bin_dir, Path::new(MOUNTED_BIN_DIR));
    assert_eq!(settings.install.cni_agent_run_dir, Path::new(RUN_DIR));
    assert_eq!(settings.install.exclude_namespaces(), ["kube-system"]);
    assert_eq!(settings.install.pod_namespace, "istio-system");
    assert_eq!(settings.repair.repair_node_name, "node-1");
    if repair_pods {
        assert!(settings.repair.host_netns().starts_with(MOUNTED_PROC));
        assert_eq!(settings.repair.repair_host_proc, Path::new(MOUNTED_PROC));
    }
}

/// The opt-in features (docs/taint-and-safe-upgrade.md): each adds its
/// settings and exactly its RBAC, and nothing when off.
#[rstest]
#[case::taint("taint", &["taint.enabled=true"])]
#[case::safe_upgrade("safeUpgrade", &["safeUpgrade.enabled=true"])]
#[case::both("taint_safeUpgrade", &["taint.enabled=true", "safeUpgrade.enabled=true", "taint.name=example.com/wait"])]
fn opt_in_features(#[case] name: &str, #[case] sets: &[&str]) {
    let m = ok(Manifest::resolve(&Inputs {
        set: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }));
    let yaml = ok(m.to_yaml());
    insta::assert_snapshot!(format!("features_{name}"), yaml);
    let p = parse(&yaml);
    let (taint, safe) = (m.values.taint.enabled, m.values.safe_upgrade.enabled);

    // RBAC: nodes get/patch only with the taint; the Role only with safe upgrade.
    let nodes = p.verbs("istio-cni-taint");
    assert_eq!(p.role("istio-cni-taint").is_some(), taint);
    if taint {
        assert_eq!(nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes.get("nodes"), Some(&set(&[("get", ""), ("patch", "")])));
        assert!(p.bindings.iter().any(|b| b.role_ref.name == "istio-cni-taint"));
    }
    assert_eq!(p.roles.len(), usize::from(safe));
    assert_eq!(p.role_bindings.len(), usize::from(safe));
    if safe {
        let role = &p.roles[0];
        assert_eq!(role.metadata.namespace.as_deref(), Some("istio-system"));
        let rules = role.rules.clone().unwrap_or_default();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].resources, Some(vec!["daemonsets".to_string()]));
        assert_eq!(rules[0].resource_names, Some(vec!["istio-cni-node".to_string()]));
        assert_eq!(rules[0].verbs, ["get"]);
        assert_eq!(rules[1].resources, Some(vec!["pods".to_string()]));
        assert_eq!(rules[1].verbs, ["get"]);
        let binding = &p.role_bindings[0];
        assert_eq!(binding.role_ref.kind, "Role");
        let subjects = binding.subjects.clone().unwrap_or_default();
        assert_eq!(subjects[0].name, "istio-cni");
    }
    // The base role is unchanged: no write verb on nodes anywhere else.
    assert_eq!(
        p.verbs("istio-cni").get("nodes"),
        Some(&set(&[("get", ""), ("list", ""), ("watch", "")]))
    );

    // The agent, configured from this env, has the features on.
    let settings = agent_settings(&m.agent_env("node-1", "istio-cni-node-abcde"));
    assert_eq!(settings.node.not_ready_taint_enabled, taint);
    assert_eq!(settings.node.safe_upgrade_enabled, safe);
    assert_eq!(settings.node.node_name, "node-1");
    assert_eq!(settings.node.pod_name, "istio-cni-node-abcde");
    let expected_key = if name == "taint_safeUpgrade" {
        "example.com/wait"
    } else {
        "cni.istio.io/not-ready"
    };
    assert_eq!(settings.node.not_ready_taint_name, expected_key);
}

#[test]
fn features_off_by_default_add_nothing() {
    let m = manifest(None, Mode::RepairPods);
    let p = parse(&ok(m.to_yaml()));
    assert!(p.roles.is_empty() && p.role_bindings.is_empty());
    assert!(p.role("istio-cni-taint").is_none());
    let cfg = p.config();
    for key in [
        "NOT_READY_TAINT_ENABLED",
        "NOT_READY_TAINT_NAME",
        "SAFE_UPGRADE_ENABLED",
    ] {
        assert!(!cfg.contains_key(key), "{key} in {cfg:?}");
    }
    let err = resolve_err(Inputs {
        set: vec!["taint.enabled=true".into(), "taint.name=Not A Key".into()],
        ..Default::default()
    });
    assert!(
        err.contains("taint.name") && err.contains("is not a taint key"),
        "{err}"
    );
}

#[derive(Parser)]
struct AgentCli {
    #[command(flatten)]
    settings: Settings,
}

/// Names the DaemonSet sets that `Settings` does not read (none now: the
/// downward API's names are the opt-in features' settings).
const NOT_SETTINGS: [&str; 0] = [];

/// Parses `env` as the agent would: every name must be one of its settings.
fn agent_settings(env: &BTreeMap<String, String>) -> Settings {
    let cmd = AgentCli::command();
    let mut args = vec!["istio-cni-agent".to_string()];
    for (name, value) in env {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
        match arg.and_then(|a| a.get_long()) {
            Some(long) => args.push(format!("--{long}={value}")),
            None => assert!(NOT_SETTINGS.contains(&name.as_str()), "the agent reads no {name}"),
        }
    }
    ok(AgentCli::try_parse_from(args)).settings
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

#[test]
fn seed_istio_operator_is_accepted() {
    let args = ManifestArgs {
        files: vec![fixture("istio-operator.yaml")],
        ..Default::default()
    };
    let p = parse(&ok(render(&args)));
    // components.cni.namespace
    assert_eq!(p.daemon_set().metadata.namespace.as_deref(), Some("kube-system"));
    // values.cni: deletePods mode, exclusions, log level; global.logAsJson.
    assert_eq!(p.config()["EXCLUDE_NAMESPACES"], "istio-system,kube-system");
    assert!(p.verbs("istio-cni-repair-role")["pods"].contains("delete"));
    let c = p.container();
    assert_eq!(
        c.args.clone().unwrap_or_default(),
        ["run", "--log_output_level=debug", "--log_as_json=true"]
    );
    // spec.hub/tag are Istio's and do not pick our image.
    assert_eq!(c.image.as_deref(), Some("istio-cni-rs/agent:dev"));
    // components.cni.k8s
    let pod = p.pod();
    let selector = pod.node_selector.clone().unwrap_or_default();
    assert_eq!(
        selector.get("node-role.example.com/mesh").map(String::as_str),
        Some("true")
    );
    assert_eq!(selector.get("kubernetes.io/os").map(String::as_str), Some("linux"));
    let limits = c.resources.clone().and_then(|r| r.limits).unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("256Mi"));
    let env = c.env.clone().unwrap_or_default();
    let port = env.iter().find(|e| e.name == "MONITORING_PORT");
    assert_eq!(port.and_then(|e| e.value.as_deref()), Some("15020"));
    let annotations = p
        .daemon_set()
        .spec
        .clone()
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations);
    assert!(
        annotations
            .unwrap_or_default()
            .contains_key("cluster-autoscaler.kubernetes.io/safe-to-evict")
    );
    // metadata.name owns the objects.
    let labels = p.daemon_set().metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["install.operator.istio.io/owning-resource"], "control-plane");
    // deletePods needs no /proc.
    assert!(
        pod.volumes
            .clone()
            .unwrap_or_default()
            .iter()
            .all(|v| v.name != "cni-host-procfs")
    );
}

#[test]
fn istio_helm_values_file_is_accepted() {
    let args = ManifestArgs {
        values: vec![fixture("values-istio.yaml")],
        ..Default::default()
    };
    let m = ok(Manifest::resolve(&ok(Inputs::read(&args))));
    assert_eq!(m.platform, Some(Platform::K3s), "global.platform");
    assert_eq!(m.values.repair_mode(), Some(RepairMode::Label));
    let p = parse(&ok(m.to_yaml()));
    assert_eq!(m.host_conf_dir(), Layout::K3s.conf_dir());
    let cfg = p.config();
    assert_eq!(cfg["EXCLUDE_NAMESPACES"], "kube-system,monitoring");
    assert_eq!(cfg["NATIVE_NFTABLES"], "true");
    assert_eq!(cfg["CNI_CONF_GROUP_READ"], "true");
    let secrets = p.service_accounts[0].image_pull_secrets.clone().unwrap_or_default();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].name, "regcred");
    assert_eq!(p.quotas.len(), 1);
    let hard = p.quotas[0].spec.clone().and_then(|s| s.hard).unwrap_or_default();
    assert_eq!(hard["pods"].0, "1000");
    let labels = p.daemon_set().metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["example.com/tier"], "node");
    let strategy = p.daemon_set().spec.clone().and_then(|s| s.update_strategy);
    let max = strategy.and_then(|s| s.rolling_update).and_then(|r| r.max_unavailable);
    assert_eq!(
        max,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
            "10%".into()
        ))
    );
    let settings = agent_settings(&m.agent_env("n", "p"));
    assert!(settings.install.native_nftables);
    assert!(settings.install.cni_conf_group_read);
}

#[test]
fn typo_in_values_file_names_every_key() {
    let args = ManifestArgs {
        values: vec![fixture("values-typo.yaml")],
        ..Default::default()
    };
    let err = match render(&args) {
        Ok(_) => panic!("a typo was accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("values-typo.yaml"), "{msg}");
    assert!(
        msg.contains("unknown key `cni.cniConfDirr` (did you mean `cni.cniConfDir`?)"),
        "{msg}"
    );
    assert!(
        msg.contains("unknown key `cni.repair.deletePod` (did you mean `cni.repair.deletePods`?)"),
        "{msg}"
    );
    assert!(matches!(err, ManifestError::Invalid { .. }));
}

fn resolve_err(inputs: Inputs) -> String {
    match Manifest::resolve(&inputs) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_refused_with_the_key() {
    let set = |s: &str| Inputs {
        set: vec![s.to_string()],
        ..Default::default()
    };
    assert!(resolve_err(set("repair.enabled=yes")).contains("`repair.enabled` must be true or false"));
    assert!(resolve_err(set("global.hubb=x")).contains("unknown key `global.hubb` (did you mean `global.hub`?)"));
    assert!(resolve_err(set("cni.logLevel=debug")).contains("use logging.level"));
    assert!(resolve_err(set("platform=eks")).contains("unknown platform \"eks\""));
    assert!(resolve_err(set("ambient.enabled=true")).contains("sidecar mode only"));
    assert!(resolve_err(set("profile=ambient")).contains("ambient"));
    assert!(resolve_err(set("global.resourceScope=node")).contains("resourceScope"));
    assert!(resolve_err(set("tolerations=oops")).contains("`tolerations` must be a list of tolerations"));
    assert!(resolve_err(set("novalue")).contains("is not key=value"));
    let values = |text: &str| Inputs {
        values: vec![Source::new("values file v.yaml", text)],
        ..Default::default()
    };
    assert!(resolve_err(values("defaults:\n  hub: x\n")).contains("`defaults`"));
    assert!(resolve_err(values("a: [\n")).contains("values file v.yaml: not valid YAML"));
    let op = |text: &str| Inputs {
        operators: vec![Source::new("IstioOperator file o.yaml", text)],
        ..Default::default()
    };
    let head = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n";
    assert!(
        resolve_err(op(&format!(
            "{head}  components:\n    cni:\n      k8s:\n        replicaCount: 2\n"
        )))
        .contains("`spec.components.cni.k8s.replicaCount` does not apply to a DaemonSet")
    );
    assert!(
        resolve_err(op(&format!("{head}  values:\n    cni:\n      chaned: false\n")))
            .contains("unknown key `spec.values.cni.chaned` (did you mean `spec.values.cni.chained`?)")
    );
    assert!(
        resolve_err(op(&format!("{head}  components:\n    cni:\n      enabled: false\n")))
            .contains("nothing to render")
    );
    assert!(resolve_err(op("apiVersion: v1\nkind: ConfigMap\n")).contains("not an IstioOperator"));
    let bad_ns = resolve_err(Inputs {
        namespace: Some("Bad_NS!".into()),
        ..Default::default()
    });
    assert!(
        bad_ns.starts_with("--namespace: \"Bad_NS!\" is not a namespace name: 'B' is not allowed"),
        "{bad_ns}"
    );
    let long = "n".repeat(64);
    assert!(
        resolve_err(op(&format!("{head}  components:\n    cni:\n      namespace: {long}\n"))).contains("64 characters")
    );
    let missing = ManifestArgs {
        values: vec![fixture("missing.yaml")],
        ..Default::default()
    };
    assert!(matches!(render(&missing), Err(ManifestError::Read { .. })));
}

#[test]
fn set_syntax_nested_booleans_lists() {
    let m = ok(Manifest::resolve(&Inputs {
        set: vec![
            "cni.repair.repairPods=false,cni.repair.labelPods=true".into(),
            "excludeNamespaces={kube-system,istio-system,ops}".into(),
            r"podAnnotations.example\.com/owner=mesh-team".into(),
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists".into(),
            "terminationGracePeriodSeconds=45".into(),
            "tag=1.0.1".into(),
            "resources.limits.memory=300Mi".into(),
        ],
        ..Default::default()
    }));
    let v = &m.values;
    assert_eq!(v.repair_mode(), Some(RepairMode::Label));
    assert_eq!(v.exclude_namespaces, ["kube-system", "istio-system", "ops"]);
    assert_eq!(v.pod_annotations["example.com/owner"], "mesh-team");
    assert_eq!(v.tolerations.len(), 1);
    assert_eq!(v.tolerations[0].key.as_deref(), Some("dedicated"));
    assert_eq!(v.termination_grace_period_seconds, Some(45));
    assert_eq!(v.image_ref(), "istio-cni-rs/agent:1.0.1");
    // Maps merge with the defaults.
    assert_eq!(v.resources["requests"]["cpu"], "100m");
    assert_eq!(v.resources["limits"]["memory"], "300Mi");
    // null removes a default.
    let m = ok(Manifest::resolve(&Inputs {
        set: vec!["excludeNamespaces=null".into()],
        ..Default::default()
    }));
    assert_eq!(m.values.exclude_namespaces, Vec::<String>::new());
}

#[test]
fn precedence_platform_values_operator_set() {
    let values = Source::new(
        "values file v.yaml",
        "cniConfDir: /from/values\ncniBinDir: /from/values\ntag: v\n",
    );
    let op = Source::new(
        "IstioOperator file o.yaml",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  values:\n    cni:\n      cniConfDir: /from/operator\n      tag: o\n",
    );
    let inputs = Inputs {
        platform: Some(Platform::K3s),
        values: vec![values],
        operators: vec![op],
        set: vec!["tag=s".into()],
        namespace: Some("cni".into()),
    };
    let m = ok(Manifest::resolve(&inputs));
    assert_eq!(m.values.cni_conf_dir, "/from/operator");
    assert_eq!(m.values.cni_bin_dir, "/from/values");
    assert_eq!(m.values.tag, "s");
    assert_eq!(m.namespace, "cni");
    // The platform still sets what nobody else did… and --platform beats global.platform.
    let m = ok(Manifest::resolve(&Inputs {
        platform: Some(Platform::Microk8s),
        set: vec!["global.platform=k3s".into()],
        ..Default::default()
    }));
    assert_eq!(m.host_conf_dir(), Layout::Microk8s.conf_dir());
    // Within one document `cni.x` beats `x`, across layers the later wins.
    let m = ok(Manifest::resolve(&Inputs {
        values: vec![Source::new(
            "values file v.yaml",
            "chained: true\ncni:\n  chained: false\n",
        )],
        ..Default::default()
    }));
    assert!(!m.values.chained);
    let m = ok(Manifest::resolve(&Inputs {
        values: vec![Source::new("values file v.yaml", "cni:\n  chained: false\n")],
        set: vec!["chained=true".into()],
        ..Default::default()
    }));
    assert!(m.values.chained);
}

#[test]
fn resource_scope_and_network_policy() {
    let resolve = |s: &str| {
        ok(Manifest::resolve(&Inputs {
            set: vec![s.to_string()],
            ..Default::default()
        }))
    };
    let ns = parse(&ok(resolve("global.resourceScope=namespace").to_yaml()));
    assert!(ns.cluster_roles.is_empty() && ns.bindings.is_empty());
    assert_eq!(ns.daemon_sets.len(), 1);
    let cluster = parse(&ok(resolve("global.resourceScope=cluster").to_yaml()));
    assert!(cluster.daemon_sets.is_empty() && cluster.config_maps.is_empty());
    assert_eq!(cluster.cluster_roles.len(), 2);
    let np = parse(&ok(resolve("global.networkPolicy.enabled=true").to_yaml()));
    assert_eq!(np.policies.len(), 1);
    let ports: Vec<_> = np.policies[0]
        .spec
        .clone()
        .and_then(|s| s.ingress)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.ports.unwrap_or_default())
        .filter_map(|p| p.port)
        .collect();
    assert_eq!(ports.len(), 2);
    let apparmor = resolve("useAppArmorAnnotation=false");
    let ds = apparmor
        .objects()
        .daemon_set
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec);
    let sc = ds
        .and_then(|p| p.containers[0].security_context.clone())
        .unwrap_or_default();
    assert_eq!(sc.app_armor_profile.map(|a| a.type_).as_deref(), Some("Unconfined"));
}

#[test]
fn clap_args_parse_like_the_cli() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ManifestArgs,
    }
    let cli = ok(Cli::try_parse_from([
        "manifest",
        "--values",
        "a.yaml",
        "-f",
        "iop.yaml",
        "--set",
        "repair.deletePods=true",
        "--platform",
        "openshift",
        "--namespace",
        "kube-system",
    ]));
    assert_eq!(cli.args.values, [PathBuf::from("a.yaml")]);
    assert_eq!(cli.args.files, [PathBuf::from("iop.yaml")]);
    assert_eq!(cli.args.platform, Some(Platform::Openshift));
    assert!(Cli::try_parse_from(["manifest", "--platform", "eks"]).is_err());
}

/// The Dockerfile, read as text (there is no Docker here): its stages, what
/// it installs, and that its paths are the ones the manifest and the agent use.
#[test]
fn dockerfile_builds_what_the_manifest_runs() {
    let text = ok(std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/Dockerfile"
    )));
    // Instructions with their continuation lines joined, comments dropped.
    let mut instructions: Vec<String> = Vec::new();
    let mut cur = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        if let Some(body) = line.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(line);
            if !cur.trim().is_empty() {
                instructions.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            cur.clear();
        }
    }
    let froms: Vec<&String> = instructions.iter().filter(|i| i.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "build and runtime stages: {froms:?}");
    assert!(
        froms[0].contains("rust:") && froms[0].ends_with(" AS build"),
        "{}",
        froms[0]
    );
    assert!(froms[1].contains("debian:bookworm-slim"), "{}", froms[1]);
    let (build, runtime) = instructions.split_at(
        instructions
            .iter()
            .rposition(|i| i.starts_with("FROM "))
            .unwrap_or_default(),
    );

    let cargo = build
        .iter()
        .find(|i| i.contains("cargo build"))
        .cloned()
        .unwrap_or_default();
    for needle in [
        "--release",
        "--locked",
        "-p istio-cni ",
        "-p istio-cni-agent",
        "--bin istio-cni ",
        "--bin istio-cni-agent",
    ] {
        assert!(cargo.contains(needle), "cargo build lacks {needle}: {cargo}");
    }
    let apt = runtime
        .iter()
        .find(|i| i.contains("apt-get install"))
        .cloned()
        .unwrap_or_default();
    let packages: BTreeSet<&str> = apt.split_whitespace().collect();
    for pkg in ["iptables", "nftables", "iproute2"] {
        assert!(packages.contains(pkg), "{pkg} not installed: {apt}");
    }
    let copies: Vec<(String, String)> = runtime
        .iter()
        .filter_map(|i| i.strip_prefix("COPY --from=build "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect();
    let dest = |bin: &str| {
        copies
            .iter()
            .find(|(src, _)| Path::new(src).file_name().is_some_and(|n| n == bin))
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    };

    // The plugin goes where the agent copies from (CNI_BIN_SOURCE_DIR's default).
    let source_default = AgentCli::command()
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == "CNI_BIN_SOURCE_DIR"))
        .and_then(|a| a.get_default_values().first().cloned())
        .and_then(|d| d.to_str().map(String::from))
        .unwrap_or_default();
    assert_eq!(source_default, "/opt/cni/bin");
    assert_eq!(dest("istio-cni"), format!("{source_default}/istio-cni"));
    assert_eq!(dest("istio-cni-agent"), "/usr/local/bin/istio-cni-agent");

    // The manifest runs this image's ENTRYPOINT with the `run` subcommand.
    let entrypoint = runtime
        .iter()
        .find(|i| i.starts_with("ENTRYPOINT "))
        .cloned()
        .unwrap_or_default();
    let entrypoint: Vec<String> = ok(serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")));
    assert_eq!(entrypoint, [dest("istio-cni-agent")]);
    let m = ok(Manifest::for_platform(None));
    let p = parse(&ok(m.to_yaml()));
    let c = p.container();
    assert_eq!(c.command, None, "the image's ENTRYPOINT runs");
    assert_eq!(c.args.clone().unwrap_or_default()[0], "run");
    assert_eq!(c.image.as_deref(), Some(istio_cni_kind::backend::images::AGENT_IMAGE));
}
