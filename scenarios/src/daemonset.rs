//! The agent as its DaemonSet on a real cluster (kind, k3s, existing).
//!
//! The embedded cluster runs the agent as a node process ([`crate::deploy`]);
//! a real cluster gets the manifests themselves: every object of
//! [`Manifest::objects`] created (or replaced) in the manifests' order, the
//! DaemonSet's image pointed at the project's agent image as this cluster
//! pulls it, then a wait for the rollout. Uninstalling deletes the DaemonSet,
//! waits for its pods to finish their cleanup, and checks every node's CNI
//! files against what they were before (where the harness reaches nodes:
//! kind and k3s). Whatever it applied is deleted again, also when a scenario
//! fails half-way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use istio_cni_agent::manifest::Manifest;
use istio_cni_kind::backend::images::AGENT_IMAGE;
use istio_cni_kind::cluster::{Cluster, ClusterError};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, PostParams};
use serde_json::{Value, json};

use crate::error::Context;
use crate::scenario::{Record, Step, Stop};
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

/// One node's CNI files as a shell on the node sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFiles {
    pub node: String,
    /// Config file name → sha256 of its bytes.
    pub conf: BTreeMap<String, String>,
    /// Names in the CNI bin dir.
    pub bin: BTreeSet<String>,
    /// Every config file's text, for diagnostics.
    pub text: String,
}

/// Whether a config dump (`== <path>` then the file, per file) has a
/// `.conflist` naming the `istio-cni` plugin.
pub fn has_chained_entry(dump: &str) -> bool {
    dump.split("\n== ").any(|file| {
        let path = file.trim_start_matches("== ").lines().next().unwrap_or_default();
        path.ends_with(".conflist") && file.contains("\"istio-cni\"")
    })
}

/// `<sha256> <name>` lines (the listing script's output) as a map.
pub fn parse_listing(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect()
}

impl RemoteFiles {
    /// Reads `conf_dir` and `bin_dir` on `node` (kind/k3s `docker exec`).
    pub fn capture(cluster: &Cluster, node: &str, conf_dir: &str, bin_dir: &str) -> Result<RemoteFiles, ClusterError> {
        let sh = |script: &str, dir: &str| cluster.node_exec(node, &["sh", "-c", script, "sh", dir]);
        let listing = sh(
            r#"for f in "$1"/*; do [ -f "$f" ] || continue; printf '%s %s\n' "$(sha256sum < "$f" | cut -c1-64)" "${f##*/}"; done"#,
            conf_dir,
        )?;
        let text = sh(
            r#"for f in "$1"/*; do [ -f "$f" ] || continue; printf '== %s\n' "$f"; cat "$f"; echo; done"#,
            conf_dir,
        )?;
        let bin = sh(r#"ls -1A "$1" 2>/dev/null || true"#, bin_dir)?;
        Ok(RemoteFiles {
            node: node.to_string(),
            conf: parse_listing(&listing),
            bin: bin.lines().map(str::to_string).collect(),
            text,
        })
    }

    /// Every difference from `earlier`, one line each (empty: identical).
    pub fn diff(&self, earlier: &RemoteFiles) -> Vec<String> {
        let mut out = Vec::new();
        for (name, sum) in &earlier.conf {
            match self.conf.get(name) {
                None => out.push(format!("{name} is gone")),
                Some(s) if s != sum => out.push(format!("{name} changed")),
                Some(_) => {}
            }
        }
        let left = self.conf.keys().filter(|n| !earlier.conf.contains_key(*n));
        out.extend(left.map(|n| format!("{n} was left behind")));
        out.extend(
            self.bin
                .difference(&earlier.bin)
                .map(|n| format!("bin {n} was left behind")),
        );
        out.extend(earlier.bin.difference(&self.bin).map(|n| format!("bin {n} is gone")));
        out
    }
}

/// The agent's DaemonSet, applied; deleted again on drop unless uninstalled.
pub struct DaemonSetAgent<'a> {
    cluster: &'a Cluster,
    objects: Vec<Value>,
    namespace: String,
    name: String,
    selector: String,
    conf_dir: String,
    bin_dir: String,
    /// Every node's files before the install, or why they are not checked.
    before: Result<Vec<RemoteFiles>, String>,
    removed: bool,
}

impl<'a> DaemonSetAgent<'a> {
    /// Captures the nodes' CNI files, applies the manifests and waits until
    /// the DaemonSet has a ready pod on every node it schedules to.
    pub fn deploy(cluster: &'a Cluster, manifest: &Manifest, record: &mut Record) -> Result<Self, Stop> {
        let agent = DaemonSetAgent::apply(cluster, manifest, record)?;
        let took = agent.wait_rolled_out(ROLLOUT)?;
        record.mark(format!(
            "DaemonSet {} ready on every node ({} ms)",
            agent.name,
            took.as_millis()
        ));
        Ok(agent)
    }

    /// Captures the nodes' CNI files and applies the manifests (created, or
    /// replaced where they exist), without waiting for the rollout.
    pub fn apply(cluster: &'a Cluster, manifest: &Manifest, record: &mut Record) -> Result<Self, Stop> {
        let objects = objects_for_cluster(manifest, &cluster.image_ref(AGENT_IMAGE))?;
        let ds = objects
            .iter()
            .find(|o| o["kind"] == "DaemonSet")
            .ok_or_else(|| Stop::Fail("the manifest has no DaemonSet".into()))?;
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
            namespace: manifest.namespace.clone(),
            name: ds["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            selector,
            conf_dir: manifest.host_conf_dir().to_string(),
            bin_dir: manifest.host_bin_dir(),
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
            apply_object(cluster, &object)?;
        }
        record.mark(format!("manifests applied ({} objects)", agent.objects.len()));
        Ok(agent)
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
                has_chained_entry(&files.text),
                "{}: no .conflist in {} carries the istio-cni entry:\n{}",
                files.node,
                self.conf_dir,
                files.text
            );
        }
        record.mark(format!("istio-cni chained on {} node(s)", nodes.len()));
        Ok(())
    }

    fn capture_all(&self) -> Result<Vec<RemoteFiles>, String> {
        let nodes = self
            .cluster
            .block_on(Api::<k8s_openapi::api::core::v1::Node>::all(self.cluster.client()).list(&ListParams::default()))
            .map_err(|e| format!("listing nodes: {e}"))?;
        nodes
            .items
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .map(|node| {
                RemoteFiles::capture(self.cluster, node, &self.conf_dir, &self.bin_dir).map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Waits until the DaemonSet's current generation has a ready pod on
    /// every node it schedules to; how long that took.
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
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), &self.namespace);
        self.cluster
            .block_on(api.list(&ListParams::default().labels(&self.selector)))
            .map(|l| l.items)
            .unwrap_or_default()
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

    /// Every agent pod's log and the nodes' config files now, as diagnostics.
    pub fn diag(&self, record: &mut Record) {
        let api: Api<Pod> = Api::namespaced(self.cluster.client(), &self.namespace);
        for pod in self.pods() {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let log = self
                .cluster
                .block_on(api.logs(&name, &LogParams::default()))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
            record.diag(format!("agent log ({node})"), log);
        }
        if let Ok(before) = &self.before {
            for files in before {
                record.diag(format!("CNI config before ({})", files.node), files.text.clone());
            }
        }
        for files in self.capture_all().unwrap_or_default() {
            record.diag(format!("CNI config now ({})", files.node), files.text);
        }
    }

    /// Deletes the DaemonSet, waits until its pods are gone (each ran its
    /// SIGTERM cleanup), deletes the other objects, and checks that every
    /// node's CNI files are what they were before.
    pub fn uninstall(mut self, record: &mut Record) -> Result<(), Stop> {
        self.removed = true;
        let api: Api<DaemonSet> = Api::namespaced(self.cluster.client(), &self.namespace);
        self.cluster
            .block_on(api.delete(&self.name, &DeleteParams::foreground()))
            .map_err(|e| Stop::Fail(format!("deleting DaemonSet {}: {e}", self.name)))?;
        let start = Instant::now();
        while !self.pods().is_empty() {
            if start.elapsed() > TEARDOWN {
                return Err(Stop::Fail(format!(
                    "the agent's pods are still there {TEARDOWN:?} after deleting the DaemonSet: {}",
                    self.pod_states()
                )));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        record.mark(format!(
            "DaemonSet deleted, its pods gone ({} ms)",
            start.elapsed().as_millis()
        ));
        let problems = match &self.before {
            Ok(before) => {
                let mut problems = Vec::new();
                for files in before {
                    let now = RemoteFiles::capture(self.cluster, &files.node, &self.conf_dir, &self.bin_dir)?;
                    problems.extend(now.diff(files).into_iter().map(|d| format!("{}: {d}", files.node)));
                    if !problems.is_empty() {
                        record.diag(format!("CNI config before ({})", files.node), files.text.clone());
                        record.diag(format!("CNI config now ({})", files.node), now.text);
                    }
                }
                problems
            }
            Err(_) => Vec::new(),
        };
        self.delete_objects();
        if !problems.is_empty() {
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
    fn the_chained_entry_is_found_in_a_conflist_only() {
        let kindnet =
            "== /etc/cni/net.d/10-kindnet.conflist\n{\"plugins\": [{\"type\": \"ptp\"}, {\"type\": \"istio-cni\"}]}\n";
        let standalone = "== /etc/cni/net.d/10-kindnet.conflist\n{\"plugins\": [{\"type\": \"ptp\"}]}\n\
                          == /etc/cni/net.d/YYY-istio-cni.conf\n{\"type\": \"istio-cni\"}\n";
        assert!(has_chained_entry(kindnet));
        assert!(has_chained_entry(&format!(
            "== /etc/cni/net.d/05-a.conf\n{{}}\n{kindnet}"
        )));
        assert!(!has_chained_entry(standalone));
        assert!(!has_chained_entry(""));
    }

    #[test]
    fn node_files_differences_name_each_file() {
        let files = |listing: &str, bin: &[&str]| RemoteFiles {
            node: "kind-worker".into(),
            conf: parse_listing(listing),
            bin: bin.iter().map(|s| s.to_string()).collect(),
            text: String::new(),
        };
        let before = files("aaa 10-kindnet.conflist\nbbb 99-other.conf\n", &["ptp", "portmap"]);
        assert!(before.diff(&before).is_empty());
        let after = files(
            "abc 10-kindnet.conflist\nccc YYY-istio-cni.conf\n",
            &["ptp", "portmap", "istio-cni"],
        );
        assert_eq!(
            after.diff(&before),
            [
                "10-kindnet.conflist changed",
                "99-other.conf is gone",
                "YYY-istio-cni.conf was left behind",
                "bin istio-cni was left behind",
            ]
        );
    }
}
