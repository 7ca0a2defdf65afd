//! The `snapshot/<set>/<backend>/<family>` scenarios: the rules the plugin
//! really programs for an injected pod, per annotation set, read back from
//! the pod's netns and checked against `istio-cni render` for the same pod.
//!
//! - **set**: a YAML file in `fixtures/annotation-sets/` (see its README):
//!   annotations, labels, proxy env and uid/gid applied to Istio's injected pod.
//! - **backend**: `nft` is the agent's DaemonSet with `global.nativeNftables=true`
//!   (the plugin config's `native_nftables`). `iptables-nft` is a stock node:
//!   the plugin's detection (`iptables-legacy` only if the pod netns already
//!   has legacy rules, else `iptables-nft`) picks nft-based iptables.
//!   `iptables-legacy` is a node whose iptables is a legacy-only install (no
//!   `iptables-nft`, as CentOS 7 or Amazon Linux 2): the container runtime's
//!   `PATH`, which the plugin inherits, has `iptables*` and `ip6tables*` as
//!   `xtables-legacy-multi` and nothing nft-based, so the detection falls to
//!   plain `iptables`, the legacy one. Rules on a host netns do not steer it:
//!   the plugin detects inside the pod netns.
//! - **family**: `ipv4` pods, or IPv6 single-stack pods (the plugin emits
//!   IPv6 rules when the pod's first address is IPv6; on a dual-stack pod only
//!   with `ISTIO_DUAL_STACK`, which the `dual-stack-env` set covers).
//!
//! A [`Rig`] is one cluster with the agent for a backend × family; many pods
//! run on it in parallel ([`run_matrix`]), while each scenario alone builds a
//! rig for its one pod. Rules are normalized (no comments, counters, or
//! tables without rules), and the check restores `istio-cni render`'s output
//! into a scratch netns with the same tools and compares the dumps.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use istio_cni_kind::cluster::{Cluster, ClusterSpec, IpFamily};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::daemonset::{AgentPods, DaemonSetAgent};
use crate::env::Env;
use crate::error::Context;
use crate::scenario::{Outcome, Record, Scenario, Stop};
use crate::system::Install;
use testkit::Scratch;

/// The diagnostics block holding a passed scenario's normalized rules.
pub const SNAPSHOT_DIAG: &str = "snapshot";
const NAMESPACE: &str = "default";
const NODE: &str = "node-0";
const CLASSIC: &str = testkit::fixtures::INJECTED_CLASSIC;
const NATIVE: &str = testkit::fixtures::INJECTED_NATIVE;

/// Where the rules live and how they are read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleBackend {
    IptablesLegacy,
    IptablesNft,
    Nft,
}

impl RuleBackend {
    pub const ALL: [RuleBackend; 3] = [RuleBackend::IptablesLegacy, RuleBackend::IptablesNft, RuleBackend::Nft];

    pub fn name(self) -> &'static str {
        match self {
            RuleBackend::IptablesLegacy => "iptables-legacy",
            RuleBackend::IptablesNft => "iptables-nft",
            RuleBackend::Nft => "nft",
        }
    }

    /// `iptables-legacy`/`iptables-nft` for `iptables`, `ip6tables-…` for IPv6.
    fn xtables(self, v6: bool) -> Option<String> {
        let suffix = match self {
            RuleBackend::IptablesLegacy => "legacy",
            RuleBackend::IptablesNft => "nft",
            RuleBackend::Nft => return None,
        };
        Some(format!("{}-{suffix}", if v6 { "ip6tables" } else { "iptables" }))
    }
}

/// The pods' address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// `snapshot/<set>/<backend>/<family>`.
pub fn scenario_name(set: &str, backend: RuleBackend, family: Family) -> String {
    format!("snapshot/{set}/{}/{}", backend.name(), family.name())
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Base {
    /// istio-proxy in `containers` (Istio 1.26).
    #[default]
    Classic,
    /// istio-proxy a native sidecar in `initContainers` (Istio 1.28, k8s 1.33).
    Native,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RunAs {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
}

/// One annotation-set file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetFile {
    summary: String,
    #[serde(default)]
    base: Base,
    /// `null` removes an annotation the injector set.
    #[serde(default)]
    annotations: BTreeMap<String, Option<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    proxy_env: BTreeMap<String, String>,
    /// istio-proxy's uid/gid (what the plugin captures around).
    #[serde(default)]
    security_context: Option<RunAs>,
    /// istio-validation's (the injector gives it the proxy's uid, so its
    /// probe traffic is treated as the proxy's).
    #[serde(default)]
    validation_security_context: Option<RunAs>,
}

/// Why an annotation set cannot be used: its name or YAML, or the injected
/// base pod it applies to.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("set name {name:?} must be a DNS label of at most 58 characters")]
    Name { name: String },
    #[error("{0}")]
    Yaml(#[source] serde_yaml::Error),
    #[error("the base pod: {0}")]
    BasePod(#[source] serde_yaml::Error),
    #[error("the base pod has no {container} in {list}")]
    NoContainer {
        list: &'static str,
        container: &'static str,
    },
    #[error("expected an object in the base pod")]
    NotAnObject,
}

/// Why the annotation sets did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: SetError,
    },
}

/// An annotation set: what is applied to the injected pod.
#[derive(Debug, Clone)]
pub struct AnnotationSet {
    pub name: String,
    pub summary: String,
    file: SetFile,
}

/// `scenarios/fixtures/annotation-sets`.
pub fn sets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/annotation-sets")
}

/// Every `*.yaml` set in `dir`, by name.
pub fn load_sets(dir: &Path) -> Result<Vec<AnnotationSet>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| AnnotationSet::load(p)).collect()
}

impl AnnotationSet {
    pub fn load(path: &Path) -> Result<AnnotationSet, LoadError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AnnotationSet::parse(&name, &text).map_err(|source| LoadError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn parse(name: &str, yaml: &str) -> Result<AnnotationSet, SetError> {
        // The pod is `snap-<name>`: a DNS label of at most 63 characters.
        let label_ok = !name.is_empty()
            && name.len() <= 58
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label_ok {
            return Err(SetError::Name { name: name.into() });
        }
        let file: SetFile = serde_yaml::from_str(yaml).map_err(SetError::Yaml)?;
        Ok(AnnotationSet {
            name: name.into(),
            summary: file.summary.clone(),
            file,
        })
    }

    /// Why this set cannot run here: a uid or gid its containers run as is
    /// not mapped in this process's user namespace (a rootless run maps only
    /// the subordinate range, so OpenShift-style uids cannot be used).
    pub fn unmapped_ids(&self) -> Option<String> {
        let contexts = [&self.file.security_context, &self.file.validation_security_context];
        for ctx in contexts.into_iter().flatten() {
            for (what, id, map) in [
                ("uid", ctx.run_as_user, "/proc/self/uid_map"),
                ("gid", ctx.run_as_group, "/proc/self/gid_map"),
            ] {
                if let Some(id) = id
                    && !id_mapped(map, id)
                {
                    return Some(format!(
                        "{what} {id} is not mapped in this user namespace ({map}); run as root to cover this set"
                    ));
                }
            }
        }
        None
    }

    pub fn pod_name(&self) -> String {
        format!("snap-{}", self.name)
    }

    /// The injected pod with the set applied.
    pub fn pod(&self) -> Result<Value, SetError> {
        let (base, list) = match self.file.base {
            Base::Classic => (CLASSIC, "containers"),
            Base::Native => (NATIVE, "initContainers"),
        };
        let mut pod: Value = serde_yaml::from_str(base).map_err(SetError::BasePod)?;
        pod["metadata"]["name"] = json!(self.pod_name());
        pod["metadata"]["namespace"] = json!(NAMESPACE);
        let annotations = object(&mut pod["metadata"]["annotations"])?;
        for (k, v) in &self.file.annotations {
            match v {
                Some(v) => annotations.insert(k.clone(), json!(v)),
                None => annotations.remove(k),
            };
        }
        let labels = object(&mut pod["metadata"]["labels"])?;
        for (k, v) in &self.file.labels {
            labels.insert(k.clone(), json!(v));
        }
        if let Some(run_as) = &self.file.validation_security_context {
            let validation = container(&mut pod, "initContainers", "istio-validation")?;
            run_as.apply(validation)?;
        }
        let proxy = container(&mut pod, list, "istio-proxy")?;
        if !proxy["env"].is_array() {
            proxy["env"] = json!([]);
        }
        if let Some(env) = proxy["env"].as_array_mut() {
            env.extend(self.file.proxy_env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        }
        if let Some(run_as) = &self.file.security_context {
            run_as.apply(proxy)?;
        }
        Ok(pod)
    }
}

impl RunAs {
    fn apply(&self, container: &mut Value) -> Result<(), SetError> {
        let sc = object(&mut container["securityContext"])?;
        if let Some(uid) = self.run_as_user {
            sc.insert("runAsUser".into(), json!(uid));
            // The base pod says runAsNonRoot; a uid-0 set means it.
            if uid == 0 {
                sc.insert("runAsNonRoot".into(), json!(false));
            }
        }
        if let Some(gid) = self.run_as_group {
            sc.insert("runAsGroup".into(), json!(gid));
        }
        Ok(())
    }
}

fn container<'a>(pod: &'a mut Value, list: &'static str, name: &'static str) -> Result<&'a mut Value, SetError> {
    pod["spec"][list]
        .as_array_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c["name"] == name))
        .ok_or(SetError::NoContainer { list, container: name })
}

fn object(v: &mut Value) -> Result<&mut serde_json::Map<String, Value>, SetError> {
    if v.is_null() {
        *v = json!({});
    }
    v.as_object_mut().ok_or(SetError::NotAnObject)
}

/// Every `snapshot/...` scenario: each set × backend × family.
pub fn scenarios() -> Vec<Scenario> {
    let sets = match load_sets(&sets_dir()) {
        Ok(sets) => sets,
        Err(e) => {
            let why = e.to_string();
            return vec![Scenario::new(
                "snapshot/annotation-sets",
                "the annotation sets load",
                move |_, _| Err(Stop::Fail(why.clone())),
            )];
        }
    };
    let mut all = Vec::new();
    for set in sets {
        for backend in RuleBackend::ALL {
            for family in Family::ALL {
                let set = set.clone();
                all.push(Scenario::new(
                    scenario_name(&set.name, backend, family),
                    format!("{} ({}, {})", set.summary, backend.name(), family.name()),
                    move |env, record| {
                        if let Some(why) = set.unmapped_ids() {
                            return crate::scenario::skip(why);
                        }
                        let rig = Rig::start(env, backend, family, record)?;
                        rig.deploy(std::slice::from_ref(&set), record)?;
                        let text = rig.snapshot(env, &set, record)?;
                        record.diag(SNAPSHOT_DIAG, text);
                        Ok(())
                    },
                ));
            }
        }
    }
    all
}

/// The normalized rules a passed outcome recorded.
pub fn snapshot_of(outcome: &Outcome) -> Option<&str> {
    outcome
        .record
        .diagnostics
        .iter()
        .find(|(title, _)| title == SNAPSHOT_DIAG)
        .map(|(_, text)| text.as_str())
}

/// All `sets` on one rig (one cluster, pods in parallel): one outcome per
/// scenario name, as running each scenario alone would give.
pub fn run_matrix(env: &Env, backend: RuleBackend, family: Family, all_sets: &[AnnotationSet]) -> Vec<Outcome> {
    // Sets this process cannot run (unmapped uids) are skipped, in place.
    let skipped = |set: &AnnotationSet| {
        set.unmapped_ids().map(|why| {
            Scenario::new(scenario_name(&set.name, backend, family), "", move |_, _| {
                crate::scenario::skip(why.clone())
            })
            .run(env)
        })
    };
    let sets: Vec<AnnotationSet> = all_sets
        .iter()
        .filter(|s| s.unmapped_ids().is_none())
        .cloned()
        .collect();
    let mut ran = run_runnable(env, backend, family, &sets).into_iter();
    all_sets
        .iter()
        .filter_map(|set| skipped(set).or_else(|| ran.next()))
        .collect()
}

fn run_runnable(env: &Env, backend: RuleBackend, family: Family, sets: &[AnnotationSet]) -> Vec<Outcome> {
    if sets.is_empty() {
        return Vec::new();
    }
    let mut setup_record = Record::default();
    let rig = Rig::start(env, backend, family, &mut setup_record)
        .and_then(|rig| rig.deploy(sets, &mut setup_record).map(|()| Arc::new(rig)));
    let rig = match rig {
        Ok(rig) => rig,
        Err(stop) => {
            // Every scenario of the matrix shares the setup's fate.
            let mut out = Vec::new();
            for set in sets {
                let stop = stop.to_message();
                let diags = setup_record.diagnostics.clone();
                let s = Scenario::new(scenario_name(&set.name, backend, family), "", move |_, r| {
                    r.diagnostics = diags.clone();
                    Err(stop.to_message())
                });
                out.push(s.run(env));
            }
            return out;
        }
    };
    sets.iter()
        .map(|set| {
            let rig = rig.clone();
            let set = set.clone();
            Scenario::new(
                scenario_name(&set.name, backend, family),
                set.summary.clone(),
                move |env, r| {
                    let text = rig.snapshot(env, &set, r)?;
                    r.diag(SNAPSHOT_DIAG, text);
                    Ok(())
                },
            )
            .run(env)
        })
        .collect()
}

/// A legacy-only iptables install: `iptables*`/`ip6tables*` as
/// `xtables-legacy-multi`, in a directory of its own (removed on drop).
struct LegacyTools {
    dir: Scratch,
}

impl LegacyTools {
    fn create() -> Result<Option<LegacyTools>, Stop> {
        let Some(multi) = ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(|d| Path::new(d).join("xtables-legacy-multi"))
            .find(|p| p.is_file())
        else {
            return Ok(None);
        };
        let dir = Scratch::create("istio-cni-legacy-node").context("the legacy iptables tools")?;
        for family in ["iptables", "ip6tables"] {
            for tool in ["", "-save", "-restore"] {
                std::os::unix::fs::symlink(&multi, dir.path().join(format!("{family}{tool}")))
                    .context(format!("linking {family}{tool} in {}", dir.path().display()))?;
            }
        }
        Ok(Some(LegacyTools { dir }))
    }

    /// The runtime's `PATH`: the legacy tools, then directories without iptables.
    fn path(&self) -> String {
        format!("{}:/usr/local/bin:/usr/bin:/bin", self.dir.path().display())
    }
}

/// One cluster (one node, the agent installed) for a backend × family.
pub struct Rig {
    pub backend: RuleBackend,
    pub family: Family,
    // Dropped in this order: the cluster (the agent's DaemonSet with it), then the tools.
    agent: AgentPods,
    cluster: Cluster,
    _tools: Option<LegacyTools>,
}

impl Rig {
    /// Creates the cluster and installs the agent.
    pub fn start(env: &Env, backend: RuleBackend, family: Family, record: &mut Record) -> Result<Rig, Stop> {
        if !env.is_local() {
            return Err(Stop::Skip(
                "rule snapshots steer the node's iptables and read the pod netns: embedded cluster only".into(),
            ));
        }
        let tools = match backend {
            RuleBackend::IptablesLegacy => match LegacyTools::create()? {
                Some(t) => Some(t),
                None => return Err(Stop::Skip("no xtables-legacy-multi on this machine".into())),
            },
            _ => None,
        };
        let runtime_env = tools.iter().map(|t| ("PATH".to_string(), t.path())).collect();
        let cluster = env.cluster(ClusterSpec {
            nodes: 1,
            ip_family: match family {
                Family::Ipv4 => IpFamily::Ipv4,
                Family::Ipv6 => IpFamily::Ipv6,
            },
            runtime_env,
            ..ClusterSpec::default()
        })?;
        record.mark("cluster up");
        let mut set = Vec::new();
        if backend == RuleBackend::Nft {
            set.push("global.nativeNftables=true");
        }
        let agent = DaemonSetAgent::deploy(env, &cluster, &Install::set(&set), record)?;
        // Rolled out means the agent reported ready, i.e. installed: the
        // node's conflist must show it before any pod is created.
        agent.check_chained(record)?;
        let agent = agent.leave();
        Ok(Rig {
            backend,
            family,
            agent,
            cluster,
            _tools: tools,
        })
    }

    /// Creates the sets' pods (the kubelet brings them up in parallel).
    pub fn deploy(&self, sets: &[AnnotationSet], record: &mut Record) -> Result<(), Stop> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), NAMESPACE);
        for set in sets {
            let pod: Pod = serde_json::from_value(set.pod()?).context(format!("set {}'s pod as a Pod", set.name))?;
            self.cluster
                .block_on(api.create(&PostParams::default(), &pod))
                .map_err(|e| Stop::Fail(format!("creating pod {}: {e}", set.pod_name())))?;
        }
        record.mark(format!("{} pod(s) created", sets.len()));
        Ok(())
    }

    /// Waits for the set's pod sandbox, reads its rules, checks them against
    /// `istio-cni render` and that no other backend holds rules; returns the
    /// normalized rules.
    pub fn snapshot(&self, env: &Env, set: &AnnotationSet, record: &mut Record) -> Result<String, Stop> {
        let name = set.pod_name();
        // An address means the CNI chain's ADD, ours included, succeeded.
        let has_ip = |p: &Pod| p.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
        let wait = crate::failure::wait_pod(
            &self.cluster,
            record,
            (NAMESPACE, &name),
            "given an IP",
            Duration::from_secs(90),
            has_ip,
        );
        let pod = match wait {
            Ok(pod) => pod,
            Err(e) => {
                record.diag("agent and plugin log", self.agent.logs(&self.cluster, NODE));
                return Err(e);
            }
        };
        let ip = pod.status.and_then(|s| s.pod_ip).unwrap_or_default();
        record.mark(format!("pod has address {ip}"));
        let restarts = self.agent.restarts(&self.cluster, NODE);
        if restarts > 0 {
            record.diag("agent log", self.agent.logs(&self.cluster, NODE));
            record.diag("agent pods", self.agent.states(&self.cluster));
            return Err(Stop::Fail(format!(
                "the agent restarted {restarts} time(s): each exit takes the istio-cni entry out of the chain \
                 until the next start, so this pod may have been set up without the plugin"
            )));
        }
        let want_v6 = self.family == Family::Ipv6;
        if ip.contains(':') != want_v6 {
            return Err(Stop::Fail(format!("pod address {ip} is not {}", self.family.name())));
        }

        let read = |argv: &[&str]| {
            self.cluster
                .in_pod(NAMESPACE, &name, argv)
                .map_err(|e| Stop::Fail(format!("reading the rules: {e}")))
        };
        let manifest = serde_json::to_string(&set.pod()?).context(format!("set {}'s pod as JSON", set.name))?;
        let rendered = render(env, &manifest, want_v6, self.backend)?;
        record.diag("istio-cni render", rendered.clone());
        let (want_v4, want_v6_text) = split_render(&rendered);

        let mut snapshot = String::new();
        let mut mismatches = Vec::new();
        match self.backend {
            RuleBackend::Nft => {
                let got = normalize_nft(&read(&["nft", "list", "ruleset"])?);
                let want = normalize_nft(&canonical_nft(&rendered)?);
                if got != want {
                    mismatches.push(("nft list ruleset", got.clone(), want));
                }
                push_section(&mut snapshot, "nft list ruleset", &got);
            }
            _ => {
                for (v6, payload) in [(false, want_v4), (true, want_v6_text)] {
                    let Some(bin) = self.backend.xtables(v6) else { continue };
                    let save = format!("{bin}-save");
                    let got = normalize_save(&read(&[&save])?);
                    let want = normalize_save(&canonical_xtables(&bin, payload)?);
                    if got != want {
                        mismatches.push((if v6 { "IPv6" } else { "IPv4" }, got.clone(), want));
                    }
                    // An IPv4 pod's (empty) IPv6 tables are checked, not recorded.
                    if !v6 || want_v6 {
                        push_section(&mut snapshot, &save, &got);
                    }
                }
            }
        }
        if !mismatches.is_empty() {
            for (what, got, want) in &mismatches {
                record.diag(format!("{what}: in the pod"), got.clone());
                record.diag(format!("{what}: istio-cni render, restored"), want.clone());
            }
            record.diag("agent log", self.agent.logs(&self.cluster, NODE));
            record.diag("agent pods", self.agent.states(&self.cluster));
            let what: Vec<&str> = mismatches.iter().map(|m| m.0).collect();
            return Err(Stop::Fail(format!(
                "the pod's rules differ from istio-cni render ({})",
                what.join(", ")
            )));
        }
        if let Err(e) = self.check_other_backends(&read) {
            record.diag("agent log", self.agent.logs(&self.cluster, NODE));
            return Err(e);
        }
        let routing = policy_routing(&read, want_v6)?;
        if !routing.is_empty() {
            snapshot.push_str(&format!("# policy routing\n{routing}"));
        }
        // The agent re-programs pods whose istio-validation failed, with its
        // own tools: a note, since its rules would not be the plugin's.
        let repaired = self
            .agent
            .logs(&self.cluster, NODE)
            .lines()
            .any(|l| l.contains("Repairing pod") && l.contains(&format!("pod={NAMESPACE}/{name} ")));
        if repaired {
            record.note("the agent repaired this pod");
        }
        record.mark("rules read and verified");
        Ok(snapshot)
    }

    /// The rules are where the backend says, and nowhere else.
    fn check_other_backends(&self, read: &dyn Fn(&[&str]) -> Result<String, Stop>) -> Result<(), Stop> {
        let mut elsewhere = Vec::new();
        for other in [RuleBackend::IptablesLegacy, RuleBackend::IptablesNft] {
            if other == self.backend {
                continue;
            }
            for v6 in [false, true] {
                if let Some(bin) = other.xtables(v6) {
                    let save = format!("{bin}-save");
                    if read(&[&save])?.contains("ISTIO") {
                        elsewhere.push(save);
                    }
                }
            }
        }
        if self.backend != RuleBackend::Nft && read(&["nft", "list", "ruleset"])?.contains("istio-proxy") {
            elsewhere.push("nft list ruleset".into());
        }
        if elsewhere.is_empty() {
            Ok(())
        } else {
            Err(Stop::Fail(format!(
                "{} rules expected only, but {} also show Istio rules",
                self.backend.name(),
                elsewhere.join(", ")
            )))
        }
    }
}

/// Rules and routes beyond a fresh netns's (TPROXY's `fwmark 0x539 lookup
/// 133` and table 133's local route), per family the pod has.
fn policy_routing(read: &dyn Fn(&[&str]) -> Result<String, Stop>, v6: bool) -> Result<String, Stop> {
    const DEFAULT_RULES: [&str; 3] = [
        "from all lookup local",
        "from all lookup main",
        "from all lookup default",
    ];
    let mut out = String::new();
    let families: &[&str] = if v6 { &["-4", "-6"] } else { &["-4"] };
    for family in families {
        for line in read(&["ip", family, "rule", "list"])?.lines() {
            let rule = line.split_once(':').map_or(line, |(_, r)| r).trim();
            if !rule.is_empty() && !DEFAULT_RULES.contains(&rule) {
                out.push_str(&format!("ip {family} rule: {}\n", line.trim()));
            }
        }
        // `show table 133` fails when the table does not exist: filter all.
        for line in read(&["ip", family, "route", "show", "table", "all"])?.lines() {
            if line.contains(" table 133") {
                out.push_str(&format!("ip {family} route: {}\n", line.trim()));
            }
        }
    }
    Ok(out)
}

fn push_section(out: &mut String, title: &str, body: &str) {
    out.push_str(&format!("# {title}\n"));
    out.push_str(if body.is_empty() { "(no rules)\n" } else { body });
}

/// `istio-cni render -f -` for the pod, as a user would run it.
fn render(env: &Env, manifest: &str, ipv6: bool, backend: RuleBackend) -> Result<String, Stop> {
    let mut cmd = Command::new(&env.bins.istio_cni);
    cmd.args(["render", "-f", "-"]);
    if ipv6 {
        cmd.arg("--ipv6");
    }
    if backend == RuleBackend::Nft {
        cmd.args(["--backend", "nftables"]);
    }
    // The plugin runs with none of these set: neither does the render.
    for var in [
        "ISTIO_OUTBOUND_OWNER_GROUPS",
        "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
    ] {
        cmd.env_remove(var);
    }
    let out = pipe(&mut cmd, manifest)?;
    Ok(out)
}

/// Runs `cmd` with `stdin`; its stdout, or a failure with its stderr.
fn pipe(cmd: &mut Command, stdin: &str) -> Result<String, Stop> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Stop::Fail(format!("running {cmd:?}: {e}")))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .context(format!("writing to {cmd:?}"))?;
    }
    let out = child.wait_with_output().context(format!("running {cmd:?}"))?;
    if !out.status.success() {
        return Err(Stop::Fail(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The IPv4 and IPv6 `iptables-restore` payloads of a render (a skipped pod
/// renders a comment only: empty payloads).
fn split_render(text: &str) -> (&str, &str) {
    const V6: &str = "# ip6tables-restore (IPv6)\n";
    match text.split_once(V6) {
        Some((v4, v6)) => (v4, v6),
        None => (text, ""),
    }
}

/// What `<bin>-save` prints after `<bin>-restore` of `payload` in a fresh netns.
fn canonical_xtables(bin: &str, payload: &str) -> Result<String, Stop> {
    if payload.lines().all(|l| l.trim().is_empty() || l.starts_with('#')) {
        return Ok(String::new());
    }
    // Legacy restore takes the host-wide xtables lock: wait for it.
    let wait = if bin.ends_with("legacy") { " --wait=30" } else { "" };
    let script = format!("{bin}-restore --noflush{wait} && {bin}-save");
    pipe(
        Command::new("unshare").args(["--net", "--", "sh", "-c", &script]),
        payload,
    )
}

/// What `nft list ruleset` prints after `nft -f` of the transaction in a fresh netns.
fn canonical_nft(transaction: &str) -> Result<String, Stop> {
    if transaction.lines().all(|l| l.trim().is_empty() || l.starts_with('#')) {
        return Ok(String::new());
    }
    pipe(
        Command::new("unshare").args(["--net", "--", "sh", "-c", "nft -f - && nft list ruleset"]),
        transaction,
    )
}

/// `iptables-save` output without comments, counters, and tables that hold
/// neither rules nor chains of their own (which tables exist empty depends
/// on what touched the netns, not on the plugin), tables sorted by name
/// (legacy dumps them in the order the netns first used them).
pub fn normalize_save(text: &str) -> String {
    let mut tables: Vec<String> = crate::save::tables(text)
        .into_iter()
        .filter(|t| t.rules || t.own_chains)
        .map(|t| t.text)
        .collect();
    tables.sort();
    tables.concat()
}

/// `nft list ruleset` without counter values.
pub fn normalize_nft(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let mut kept = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            kept.push(tokens[i]);
            if tokens[i] == "counter" && tokens.get(i + 1) == Some(&"packets") && tokens.get(i + 3) == Some(&"bytes") {
                i += 5;
            } else {
                i += 1;
            }
        }
        out.push_str(indent);
        out.push_str(&kept.join(" "));
        out.push('\n');
    }
    out
}

/// Whether `id` falls in a range of a `/proc/self/{uid,gid}_map`
/// (`inside outside count` lines). An unreadable map means no user namespace.
fn id_mapped(map: &str, id: i64) -> bool {
    let Ok(text) = std::fs::read_to_string(map) else {
        return true;
    };
    text.lines().any(|line| {
        let n: Vec<i64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        n.len() == 3 && n[0] <= id && id < n[0] + n[2]
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_outside_the_user_namespace_map_are_unmapped() {
        let map = std::env::temp_dir().join(format!("uid-map-{}", std::process::id()));
        std::fs::write(&map, "         0     100000      65536\n").unwrap();
        let m = map.to_string_lossy().into_owned();
        assert!(id_mapped(&m, 0));
        assert!(id_mapped(&m, 1337));
        assert!(!id_mapped(&m, 65536));
        assert!(!id_mapped(&m, 1_000_670_000));
        assert!(id_mapped("/nonexistent/uid_map", 5));
        let _ = std::fs::remove_file(map);
    }

    use super::*;

    #[test]
    fn every_set_loads_and_builds_its_pod() {
        let sets = load_sets(&sets_dir()).unwrap();
        assert!(sets.len() >= 30, "{} sets", sets.len());
        for set in &sets {
            let pod = set.pod().unwrap();
            assert_eq!(pod["metadata"]["name"], json!(set.pod_name()), "{}", set.name);
        }
    }

    #[test]
    fn sets_apply_annotations_env_and_uid() {
        let set = AnnotationSet::parse(
            "t",
            "summary: s\nbase: native\nannotations: {a: '1', traffic.sidecar.istio.io/includeInboundPorts: null}\n\
             labels: {l: x}\nproxyEnv: {E: 'true'}\nsecurityContext: {runAsUser: 7, runAsGroup: 8}\n\
             validationSecurityContext: {runAsUser: 9}\n",
        )
        .unwrap();
        let pod = set.pod().unwrap();
        let ann = &pod["metadata"]["annotations"];
        assert_eq!(ann["a"], "1");
        assert!(ann.get("traffic.sidecar.istio.io/includeInboundPorts").is_none());
        assert_eq!(pod["metadata"]["labels"]["l"], "x");
        let proxy = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap();
        assert!(
            proxy["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "E", "value": "true"}))
        );
        assert_eq!(proxy["securityContext"]["runAsUser"], 7);
        assert_eq!(proxy["securityContext"]["runAsGroup"], 8);
        let validation = &pod["spec"]["initContainers"][0];
        assert_eq!(validation["name"], "istio-validation");
        assert_eq!(validation["securityContext"]["runAsUser"], 9);
        assert_eq!(validation["securityContext"]["runAsGroup"], 1337);
        assert!(AnnotationSet::parse("Bad_Name", "summary: s\n").is_err());
        assert!(AnnotationSet::parse("ok", "summary: s\nannotation: {}\n").is_err());
    }

    #[test]
    fn save_output_normalization() {
        let save = "# Generated by iptables-nft-save v1.8.9 on Mon\n*filter\n:INPUT ACCEPT [3:180]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
                    *nat\n:PREROUTING ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n-A PREROUTING -p tcp -j ISTIO_OUTPUT\nCOMMIT\n# Completed on Mon\n";
        assert_eq!(
            normalize_save(save),
            "*nat\n:PREROUTING ACCEPT\n:ISTIO_OUTPUT -\n-A PREROUTING -p tcp -j ISTIO_OUTPUT\nCOMMIT\n"
        );
        assert_eq!(normalize_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"), "");
        let two = "*raw\n-A OUTPUT -j CT --zone 1\nCOMMIT\n*mangle\n-A OUTPUT -j RETURN\nCOMMIT\n";
        assert_eq!(
            normalize_save(two),
            "*mangle\n-A OUTPUT -j RETURN\nCOMMIT\n*raw\n-A OUTPUT -j CT --zone 1\nCOMMIT\n"
        );
    }

    #[test]
    fn nft_counters_are_dropped() {
        let text = "table inet t {\n\tchain c {\n\t\ttcp dport 1 counter packets 3 bytes 180 return\n\t}\n}\n";
        assert_eq!(
            normalize_nft(text),
            "table inet t {\n\tchain c {\n\t\ttcp dport 1 counter return\n\t}\n}\n"
        );
    }

    #[test]
    fn names_cover_the_matrix() {
        let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"snapshot/default-classic/nft/ipv6".to_string()));
        assert!(names.contains(&"snapshot/tproxy/iptables-legacy/ipv4".to_string()));
        assert_eq!(names.len() % 6, 0);
    }
}
