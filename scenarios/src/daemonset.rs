//! The agent as its DaemonSet, on every backend (embedded, kind, k3s,
//! existing): the one way scenarios deploy the system under test.
//!
//! The manifests of [`System::render`](crate::system::System::render) (by
//! default the project's [`Manifest::objects`], the DaemonSet's image pointed
//! at the project's agent image as this cluster names it) are created (or
//! replaced) in order through the API, then the rollout is awaited as
//! `kubectl rollout status` does. Uninstalling deletes the DaemonSet, waits
//! for its pods to finish their SIGTERM cleanup, and checks every node's CNI
//! files ([`NodeFiles`]) against what they were before (where the harness
//! reaches nodes: embedded, kind, k3s). Whatever it applied is deleted
//! again, also when a scenario fails half-way.

use std::time::{Duration, Instant};

use istio_cni_agent::manifest::Manifest;
use istio_cni_kind::backend::images::AGENT_IMAGE;
use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

use crate::env::Env;
use crate::error::Context;
use crate::nodefiles::{NodeDirs, NodeFiles};
use crate::scenario::{Record, Step, Stop};
use crate::system::Install;
/// Image pulls on a fresh node can take a while.
const ROLLOUT: Duration = Duration::from_secs(300);
/// The agent's SIGTERM cleanup plus the grace period.
const TEARDOWN: Duration = Duration::from_secs(120);

/// The manifest's objects as applied to a cluster: in apply order, with the
/// agent container's image (the manifests name [`AGENT_IMAGE`]) replaced by
/// `agent_image`, the name this cluster pulls it by.
pub fn objects_for_cluster(manifest: &Manifest, agent_image: &str) -> Result<Vec<Value>, Stop> {
    let mut objects = manifest
        .objects()
        .to_values()
        .context("the manifest's objects as JSON")?;
    for object in &mut objects {
        if object["kind"] != "DaemonSet" {
            continue;
        }
        let containers = object["spec"]["template"]["spec"]["containers"].as_array_mut();
        for container in containers.into_iter().flatten() {
            if container["image"] == AGENT_IMAGE {
                container["image"] = json!(agent_image);
            }
        }
    }
    Ok(objects)
}

/// The agent's DaemonSet, applied; deleted again on drop unless uninstalled.
pub struct DaemonSetAgent<'a> {
    cluster: &'a Cluster,
    objects: Vec<Value>,
    namespace: String,
    name: String,
    selector: String,
    /// The DaemonSet's host dirs: what is read on nodes that are not the
    /// embedded cluster's (whose own layout says where its dirs are).
    mounted: NodeDirs,
    /// Every node's files before the install, or why they are not checked.
    before: Result<Vec<NodeFiles>, String>,
    removed: bool,
}

impl<'a> DaemonSetAgent<'a> {
    /// Captures the nodes' CNI files, applies the system under test's
    /// manifests for `install` and waits until the DaemonSet has a ready pod
    /// on every node it schedules to.
    pub fn deploy(env: &Env, cluster: &'a Cluster, install: &Install, record: &mut Record) -> Result<Self, Stop> {
        let agent = DaemonSetAgent::apply(env, cluster, install, record)?;
        record.waiting_for(format!("DaemonSet {} to roll out", agent.name));
        let took = match agent.wait_rolled_out(ROLLOUT) {
            Ok(took) => took,
            Err(e) => {
                agent.diag(record);
                return Err(e);
            }
        };
        record.mark(format!(
            "DaemonSet {} ready on every node ({} ms)",
            agent.name,
            took.as_millis()
        ));
        Ok(agent)
    }

    /// Captures the nodes' CNI files and applies the system under test's
    /// manifests for `install` (created, or replaced where they exist),
    /// without waiting for the rollout.
    pub fn apply(env: &Env, cluster: &'a Cluster, install: &Install, record: &mut Record) -> Result<Self, Stop> {
        let objects = env.system.render(install, cluster)?;
        DaemonSetAgent::apply_objects(cluster, objects, record)
    }

    /// [`DaemonSetAgent::apply`] of these objects (one of them the DaemonSet).
    pub fn apply_objects(cluster: &'a Cluster, objects: Vec<Value>, record: &mut Record) -> Result<Self, Stop> {
        let ds = objects
            .iter()
            .find(|o| o["kind"] == "DaemonSet")
            .ok_or_else(|| Stop::Fail("the manifests have no DaemonSet".into()))?;
        let labels = ds["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let mut agent = DaemonSetAgent {
            cluster,
            namespace: ds["metadata"]["namespace"]
                .as_str()
                .unwrap_or(crate::system::NAMESPACE)
                .to_string(),
            name: ds["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            selector,
            mounted: mounted_dirs(ds),
            objects: Vec::new(),
            before: Err(String::new()),
            removed: false,
        };
        agent.before = agent.capture_all();
        match &agent.before {
            Ok(files) => record.mark(format!("CNI files of {} node(s) captured", files.len())),
            Err(why) => record.note(format!("node files are not checked: {why}")),
        }
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": agent.namespace}})).context("the agent's Namespace")?;
        match cluster.block_on(Api::<Namespace>::all(cluster.client()).create(&PostParams::default(), &ns)) {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Stop::Fail(format!("creating namespace {}: {e}", agent.namespace))),
        }
        for object in objects {
            // Recorded first: a failed apply may still have created it.
            agent.objects.push(object.clone());
            match apply_object(cluster, &object) {
                Err(Stop::Fail(why)) if why.contains(NOT_SERVED) && !is_essential(&object) => {
                    record.note(format!(
                        "{} {} not applied: this cluster does not serve its kind",
                        object["kind"].as_str().unwrap_or_default(),
                        object["metadata"]["name"].as_str().unwrap_or_default()
                    ));
                }
                other => other?,
            }
        }
        record.mark(format!("manifests applied ({} objects)", agent.objects.len()));
        Ok(agent)
    }

    /// The DaemonSet's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Every node's files from before the install (or why they were not read).
    pub fn before(&self) -> Result<&[NodeFiles], Stop> {
        self.before
            .as_deref()
            .map_err(|why| Stop::Fail(format!("the nodes' files were not read: {why}")))
    }

    /// Every node's files now, the same dirs as before the install.
    pub fn files_now(&self) -> Result<Vec<NodeFiles>, Stop> {
        self.before()?.iter().map(|f| f.again(self.cluster)).collect()
    }

    /// Checks that every node's config dir has a `.conflist` carrying the
    /// `istio-cni` entry (where the harness reaches nodes; else a note).
    pub fn check_chained(&self, record: &mut Record) -> Step {
        let nodes = match self.capture_all() {
            Ok(nodes) => nodes,
            Err(why) => {
                record.note(format!("the chained entry is not checked on the nodes: {why}"));
                return Ok(());
            }
        };
        for files in &nodes {
            crate::ensure!(
                files.has_chained_entry(),
                "{}: no .conflist carries the istio-cni entry:\n{}",
                files.node,
                files.text()
            );
        }
        record.mark(format!("istio-cni chained on {} node(s)", nodes.len()));
        Ok(())
    }

    /// What to read on `node`: the embedded node's own layout (its config
    /// dir, the runtime's where different, its plugin dir, the agent's run
    /// dir), else the DaemonSet's host dirs.
    fn dirs_of(&self, node: &str) -> NodeDirs {
        let layout = self.cluster.local().ok().and_then(|l| l.node(node)).map(|n| n.layout());
        match layout {
            Some(layout) => NodeDirs {
                conf: vec![layout.conf_dir().into(), layout.runtime_conf_dir().into()],
                listed: vec![
                    layout.bin_dirs().first().copied().unwrap_or(DEFAULT_BIN_DIR).into(),
                    RUN_DIR.into(),
                ],
            },
            None => self.mounted.clone(),
        }
    }

    fn capture_all(&self) -> Result<Vec<NodeFiles>, String> {
        let nodes = self
            .cluster
            .block_on(Api::<k8s_openapi::api::core::v1::Node>::all(self.cluster.client()).list(&ListParams::default()))
            .map_err(|e| format!("listing nodes: {e}"))?;
        nodes
            .items
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .map(|node| NodeFiles::capture(self.cluster, node, &self.dirs_of(node)).map_err(|e| e.to_string()))
            .collect()
    }

    /// Waits until the DaemonSet's current generation has a ready pod on
    /// every node it schedules to (`kubectl rollout status`); how long that took.
    pub fn wait_rolled_out(&self, timeout: Duration) -> Result<Duration, Stop> {
        let api: Api<DaemonSet> = Api::namespaced(self.cluster.client(), &self.namespace);
        let start = Instant::now();
        loop {
            let ds = self
                .cluster
                .block_on(api.get_opt(&self.name))
                .context(format!("reading DaemonSet {}/{}", self.namespace, self.name))?;
            let status = ds.as_ref().and_then(|d| d.status.clone());
            let generation = ds.as_ref().and_then(|d| d.metadata.generation);
            if let Some(s) = &status
                && s.observed_generation >= generation
                && s.desired_number_scheduled > 0
                && s.number_ready == s.desired_number_scheduled
                && s.updated_number_scheduled == Some(s.desired_number_scheduled)
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(Stop::Fail(format!(
                    "DaemonSet {}/{} not ready after {timeout:?}: {status:?}; pods: [{}]",
                    self.namespace,
                    self.name,
                    self.pod_states()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn pods(&self) -> Vec<Pod> {
        self.pods_handle().pods(self.cluster)
    }

    /// Each agent pod's node, phase and waiting/terminated reasons.
    fn pod_states(&self) -> String {
        let states: Vec<String> = self
            .pods()
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let reasons: Vec<String> = status
                    .container_statuses
                    .iter()
                    .flatten()
                    .filter_map(|c| c.state.as_ref())
                    .filter_map(|s| {
                        s.waiting.as_ref().map(|w| {
                            format!(
                                "{} {}",
                                w.reason.clone().unwrap_or_default(),
                                w.message.clone().unwrap_or_default()
                            )
                        })
                    })
                    .collect();
                format!(
                    "{} on {}: {} {reasons:?}",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("-"),
                    status.phase.unwrap_or_default()
                )
            })
            .collect();
        states.join("; ")
    }

    /// The log of the agent pod on `node` (empty when there is none), through the API.
    pub fn logs(&self, node: &str) -> String {
        self.pods_handle().logs(self.cluster, node)
    }

    fn pods_handle(&self) -> AgentPods {
        AgentPods {
            namespace: self.namespace.clone(),
            selector: self.selector.clone(),
        }
    }

    /// Leaves everything applied in place, for a cluster that is torn down
    /// with it; the agent's pods stay reachable through the handle.
    pub fn leave(mut self) -> AgentPods {
        self.removed = true;
        self.pods_handle()
    }

    /// Every agent pod's log (the plugin logs through it, without terminal
    /// colour codes) and every node's config from before the agent to now,
    /// as a diff, as diagnostics.
    pub fn diag(&self, record: &mut Record) {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), &self.namespace);
        for pod in self.pods() {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let log = self
                .cluster
                .block_on(api.logs(&name, &LogParams::default()))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
            record.diag(
                format!("agent and plugin log ({node}, pod {name})"),
                crate::failure::strip_ansi(&log),
            );
        }
        self.diag_files(record);
    }

    /// Every node's CNI config from before the agent to now, as a diff.
    pub fn diag_files(&self, record: &mut Record) {
        for before in self.before.as_deref().unwrap_or_default() {
            let text = match before.again(self.cluster) {
                Ok(now) => now.diff_text(before),
                Err(e) => format!("(not read again: {e:?})\nbefore:\n{}", before.text()),
            };
            record.diag(
                format!("CNI config diff, before the agent vs now ({})", before.node),
                text,
            );
        }
    }

    /// Deletes the DaemonSet, waits until its pods are gone (each ran its
    /// SIGTERM cleanup), deletes the other objects, and checks that every
    /// node's CNI files are what they were before.
    pub fn uninstall(mut self, record: &mut Record) -> Result<(), Stop> {
        self.removed = true;
        let api: Api<DaemonSet> = Api::namespaced(self.cluster.client(), &self.namespace);
        // The logs go with the pods: keep them for a failed restore.
        let mut logs = Vec::new();
        for pod in self.pods() {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            logs.push((node.clone(), self.logs(&node)));
        }
        self.cluster
            .block_on(api.delete(&self.name, &DeleteParams::foreground()))
            .map_err(|e| Stop::Fail(format!("deleting DaemonSet {}: {e}", self.name)))?;
        record.waiting_for("the agent's pods to finish their cleanup");
        let start = Instant::now();
        while !self.pods().is_empty() {
            if start.elapsed() > TEARDOWN {
                return Err(Stop::Fail(format!(
                    "the agent's pods are still there {TEARDOWN:?} after deleting the DaemonSet: {}",
                    self.pod_states()
                )));
            }
            std::thread::sleep(POLL);
        }
        record.mark(format!(
            "DaemonSet deleted, its pods gone ({} ms)",
            start.elapsed().as_millis()
        ));
        let mut problems = Vec::new();
        if let Ok(before) = &self.before {
            for files in before {
                let now = files.again(self.cluster)?;
                // The run dir keeps the plugin's own state (its iptables
                // cache); only the kubeconfig the agent wrote must go.
                let run_prefix = format!("{RUN_DIR}: ");
                let mut diff: Vec<String> = now
                    .diff(files)
                    .into_iter()
                    .filter(|d| !d.starts_with(&run_prefix))
                    .collect();
                let run = now.listed.iter().find(|(d, _)| d == RUN_DIR);
                if run.is_some_and(|(_, names)| names.contains(KUBECONFIG)) {
                    diff.push(format!("{RUN_DIR}: {KUBECONFIG} was left behind"));
                }
                if !diff.is_empty() {
                    record.diag(
                        format!("CNI config diff, before the agent vs now ({})", files.node),
                        now.diff_text(files),
                    );
                }
                problems.extend(diff.into_iter().map(|d| format!("{}: {d}", files.node)));
            }
        }
        self.delete_objects();
        if !problems.is_empty() {
            for (node, log) in logs {
                record.diag(
                    format!("agent and plugin log ({node})"),
                    crate::failure::strip_ansi(&log),
                );
            }
            return Err(Stop::Fail(format!("uninstall: {}", problems.join("; "))));
        }
        if self.before.is_ok() {
            record.mark("every node's CNI files restored");
        }
        Ok(())
    }

    /// Deletes what was applied, last first; missing objects are fine.
    fn delete_objects(&mut self) {
        for object in std::mem::take(&mut self.objects).iter().rev() {
            if let Ok((api, name)) = dynamic_api(self.cluster, object) {
                let _ = self.cluster.block_on(api.delete(&name, &DeleteParams::background()));
            }
        }
    }
}

impl Drop for DaemonSetAgent<'_> {
    fn drop(&mut self) {
        if !self.removed {
            self.delete_objects();
        }
    }
}

/// The agent's pods, found by the DaemonSet's labels.
#[derive(Debug, Clone)]
pub struct AgentPods {
    namespace: String,
    selector: String,
}

impl AgentPods {
    /// The agent's pods (none when they cannot be listed: diagnostics).
    fn pods(&self, cluster: &Cluster) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(cluster.client(), &self.namespace);
        cluster
            .block_on(api.list(&ListParams::default().labels(&self.selector)))
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Each agent pod's node, phase, readiness and restarts, one line each.
    pub fn states(&self, cluster: &Cluster) -> String {
        self.pods(cluster)
            .iter()
            .map(|p| {
                let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("-");
                format!(
                    "{} on {node}: {}\n",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    crate::failure::pod_state(p)
                )
            })
            .collect()
    }

    /// The agent pod on `node`, if any.
    fn pod_on(&self, cluster: &Cluster, node: &str) -> Option<Pod> {
        self.pods(cluster)
            .into_iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
    }

    /// How often the containers of the agent pod on `node` restarted (0
    /// without a pod). An agent that exits takes the plugin's config entry
    /// out until its next run puts it back: pods whose sandbox is set up
    /// meanwhile get no istio-cni call at all.
    pub fn restarts(&self, cluster: &Cluster, node: &str) -> i32 {
        let pod = self.pod_on(cluster, node);
        let statuses = pod.and_then(|p| p.status).and_then(|s| s.container_statuses);
        statuses.iter().flatten().map(|c| c.restart_count).sum()
    }

    /// The log of the agent pod on `node` (empty when there is none), through the API.
    pub fn logs(&self, cluster: &Cluster, node: &str) -> String {
        let api: Api<Pod> = Api::namespaced(cluster.client(), &self.namespace);
        let Some(name) = self.pod_on(cluster, node).and_then(|p| p.metadata.name) else {
            return String::new();
        };
        let log = cluster
            .block_on(api.logs(&name, &LogParams::default()))
            .unwrap_or_else(|e| format!("(no log of {name}: {e})"));
        crate::failure::strip_ansi(&log)
    }
}

/// Where Istio's chart mounts the node's CNI dirs: the `cni-net-dir` and
/// `cni-bin-dir` hostPath volumes (the defaults where a DaemonSet names
/// them otherwise).
fn mounted_dirs(ds: &Value) -> NodeDirs {
    let volumes = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let host = |name: &str, default: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .unwrap_or(default)
            .to_string()
    };
    NodeDirs {
        conf: vec![host("cni-net-dir", DEFAULT_CONF_DIR)],
        listed: vec![host("cni-bin-dir", DEFAULT_BIN_DIR)],
    }
}

const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// The agent's run dir on the node (the plugin's kubeconfig, the log socket).
pub const RUN_DIR: &str = "/var/run/istio-cni";
/// The plugin's kubeconfig in [`RUN_DIR`], written by the agent.
pub const KUBECONFIG: &str = "istio-cni-kubeconfig";
const POLL: Duration = Duration::from_millis(250);

/// What an API server answers a create of a kind it does not serve
/// (a ResourceQuota on the embedded cluster, Multus's
/// NetworkAttachmentDefinition where Multus is not installed).
const NOT_SERVED: &str = "could not find the requested resource";

/// The objects an agent cannot run without: its DaemonSet, identity, RBAC
/// and configuration. Any other kind the cluster does not serve is left out
/// with a note.
fn is_essential(object: &Value) -> bool {
    matches!(
        object["kind"].as_str(),
        Some(
            "DaemonSet"
                | "ServiceAccount"
                | "ConfigMap"
                | "Secret"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "Role"
                | "RoleBinding"
                | "Namespace"
        )
    )
}

/// Creates `object`, or replaces it (at its current resourceVersion) where
/// it exists: plain create/update, which every API server serves.
fn apply_object(cluster: &Cluster, object: &Value) -> Step {
    let (api, name) = dynamic_api(cluster, object)?;
    let desired: DynamicObject =
        serde_json::from_value(object.clone()).context(format!("{} {name} as an object", object["kind"]))?;
    let failed = |e: kube::Error| Stop::Fail(format!("applying {} {name}: {e}", object["kind"]));
    match cluster.block_on(api.create(&PostParams::default(), &desired)) {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A controller may write the object's status between our read and
            // our replace; a few fresh attempts settle that race.
            let mut attempts = 0;
            loop {
                let current = cluster.block_on(api.get(&name)).map_err(failed)?;
                let mut replacement = desired.clone();
                replacement.metadata.resource_version = current.metadata.resource_version;
                match cluster.block_on(api.replace(&name, &PostParams::default(), &replacement)) {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
                    Err(e) => return Err(failed(e)),
                }
            }
        }
        Err(e) => Err(failed(e)),
    }
}

/// The dynamic API of `object`'s kind (namespaced when it names a
/// namespace), and its name.
fn dynamic_api(cluster: &Cluster, object: &Value) -> Result<(Api<DynamicObject>, String), Stop> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = match kind {
        // A CRD whose plural kube cannot guess from the kind.
        "NetworkAttachmentDefinition" => ApiResource::from_gvk_with_plural(&gvk, "network-attachment-definitions"),
        _ => ApiResource::from_gvk(&gvk),
    };
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| Stop::Fail(format!("a {kind} of the manifest has no name")))?
        .to_string();
    let api = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(cluster.client(), ns, &resource),
        None => Api::all_with(cluster.client(), &resource),
    };
    Ok((api, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_runs_the_image_the_cluster_pulls() {
        let manifest = Manifest::for_platform(None).unwrap();
        let objects = objects_for_cluster(&manifest, "reg.example:5000/istio-cni-rs/agent:dev").unwrap();
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds.last(), Some(&"DaemonSet"), "{kinds:?}");
        assert!(
            kinds.contains(&"ServiceAccount") && kinds.contains(&"ClusterRoleBinding"),
            "{kinds:?}"
        );
        let ds = objects.last().unwrap();
        let images: Vec<&str> = ds["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["image"].as_str())
            .collect();
        assert_eq!(images, ["reg.example:5000/istio-cni-rs/agent:dev"]);
        // Namespaced objects name their namespace; RBAC is cluster-wide.
        for o in &objects {
            let namespaced = o["metadata"]["namespace"].is_string();
            let cluster_wide = matches!(o["kind"].as_str(), Some("ClusterRole" | "ClusterRoleBinding"));
            assert_eq!(namespaced, !cluster_wide, "{}", o["kind"]);
        }
    }

    #[test]
    fn node_dirs_are_the_mounted_host_paths() {
        let ds = json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "cni-bin-dir", "hostPath": {"path": "/var/lib/rancher/k3s/data/cni"}},
            {"name": "cni-net-dir", "hostPath": {"path": "/var/lib/rancher/k3s/agent/etc/cni/net.d"}},
        ]}}}});
        let dirs = mounted_dirs(&ds);
        assert_eq!(dirs.conf, ["/var/lib/rancher/k3s/agent/etc/cni/net.d"]);
        assert_eq!(dirs.listed, ["/var/lib/rancher/k3s/data/cni"]);
        let none = mounted_dirs(&json!({}));
        assert_eq!(
            (none.conf[0].as_str(), none.listed[0].as_str()),
            (DEFAULT_CONF_DIR, DEFAULT_BIN_DIR)
        );
    }
}
