//! Deploying the agent the way its manifests say.
//!
//! On the embedded cluster the agent runs as a process in a node's netns,
//! with exactly the environment the rendered DaemonSet gives its container
//! ([`Manifest::agent_env`]); container paths are mapped to the node's
//! directories (the DaemonSet's hostPath mounts), the service-account volume
//! is a directory holding a token minted for the manifest's ServiceAccount,
//! and the manifest's RBAC objects are applied to the API server first — so
//! the agent has exactly the rights the manifests grant.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use istio_cni_agent::manifest::Manifest;
use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, PostParams};

use crate::env::Env;
use crate::error::Context;
use crate::scenario::{Record, Stop};

/// The agent running on one embedded node; SIGKILLed on drop if still running.
pub struct NodeAgent {
    child: Option<Child>,
    node: String,
    log: PathBuf,
    /// The node's CNI config dir (host path).
    pub conf_dir: PathBuf,
    /// The node's CNI bin dir (host path).
    pub bin_dir: PathBuf,
    /// The agent run dir (host path).
    pub run_dir: PathBuf,
}

/// Applies the manifest's namespace, ServiceAccount and RBAC (idempotent:
/// existing objects are kept) and returns a token for the ServiceAccount.
pub fn apply_identity(cluster: &Cluster, manifest: &Manifest) -> Result<String, Stop> {
    let local = cluster.local()?;
    let objects = manifest.objects();
    let client = cluster.client();
    let ns_name = manifest.namespace.clone();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns_name}})).context("the agent's Namespace")?;
    ignore_conflict(cluster.block_on(Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns)))?;
    let sa: ServiceAccount = objects
        .service_account
        .ok_or_else(|| Stop::Fail("the manifest has no ServiceAccount".into()))?;
    let sa_name = sa.metadata.name.clone().unwrap_or_default();
    ignore_conflict(
        cluster
            .block_on(Api::<ServiceAccount>::namespaced(client.clone(), &ns_name).create(&PostParams::default(), &sa)),
    )?;
    for role in &objects.cluster_roles {
        ignore_conflict(
            cluster.block_on(Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), role)),
        )?;
    }
    for binding in &objects.cluster_role_bindings {
        ignore_conflict(
            cluster.block_on(Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), binding)),
        )?;
    }
    Ok(local.api().mint_token(&ns_name, &sa_name))
}

fn ignore_conflict<T>(r: Result<T, kube::Error>) -> Result<(), Stop> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Stop::Fail(format!("applying the manifest: {e}"))),
    }
}

impl NodeAgent {
    /// Starts the agent on `node` with the manifest's environment, plus
    /// `overrides` (applied last). Applies the identity objects first.
    pub fn start(
        env: &Env,
        cluster: &Cluster,
        node: &str,
        manifest: &Manifest,
        overrides: &[(&str, &str)],
    ) -> Result<NodeAgent, Stop> {
        let local = cluster.local()?;
        let n = local
            .node(node)
            .ok_or_else(|| Stop::Fail(format!("no node {node} in the cluster")))?;
        let token = apply_identity(cluster, manifest)?;
        let image = n.root().join("agent-image");
        let sa_dir = image.join("serviceaccount");
        let source = image.join("opt/cni/bin");
        std::fs::create_dir_all(&sa_dir).context(format!("creating {}", sa_dir.display()))?;
        std::fs::create_dir_all(&source).context(format!("creating {}", source.display()))?;
        // A hard link, not a copy: a debug istio-cni is ~140 MB, and every
        // scenario starts agents on several nodes. The old file goes first:
        // copying onto a link would write through into the workspace binary.
        let image_bin = source.join("istio-cni");
        let _ = std::fs::remove_file(&image_bin);
        if std::fs::hard_link(&env.bins.istio_cni, &image_bin).is_err() {
            std::fs::copy(&env.bins.istio_cni, &image_bin)
                .context(format!("copying istio-cni to {}", image_bin.display()))?;
        }
        std::fs::write(sa_dir.join("token"), token).context("writing the agent's token")?;
        std::fs::write(sa_dir.join("ca.crt"), local.api().ca_pem()).context("writing the agent's CA")?;
        let (host, port) = api_host_port(&local.node_kubeconfig("unused"))?;

        let conf_dir = n.host_path(manifest.host_conf_dir());
        let bin_dir = n.host_path(&manifest.host_bin_dir());
        let run_dir = n.istio_run_dir();
        let mut vars: BTreeMap<String, String> = manifest.agent_env(node, &format!("istio-cni-node-{node}"));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        for (k, v) in [
            ("MOUNTED_CNI_NET_DIR", s(&conf_dir)),
            ("CNI_BIN_DIR", s(&bin_dir)),
            ("CNI_BIN_SOURCE_DIR", s(&source)),
            ("CNI_AGENT_RUN_DIR", s(&run_dir)),
            ("SERVICE_ACCOUNT_DIR", s(&sa_dir)),
            ("KUBERNETES_SERVICE_HOST", host),
            ("KUBERNETES_SERVICE_PORT", port),
            // The node's processes share this machine's /proc.
            ("REPAIR_HOST_PROC", "/proc".into()),
            ("ALLOW_SWITCH_TO_HOST_NS", "false".into()),
            ("LISTEN_ADDRESS", "127.0.0.1".into()),
        ] {
            vars.insert(k.into(), v);
        }
        for (k, v) in overrides {
            vars.insert((*k).into(), (*v).into());
        }
        let log = image.join("agent.log");
        let log_file = std::fs::File::create(&log).context(format!("creating {}", log.display()))?;
        let child = n
            .command(&env.bins.agent)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&vars)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("the agent's log file")?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| Stop::Fail(format!("starting the agent on {node}: {e}")))?;
        Ok(NodeAgent {
            child: Some(child),
            node: node.into(),
            log,
            conf_dir,
            bin_dir,
            run_dir,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's log file (stdout and stderr); it outlives [`NodeAgent::stop`],
    /// so a scenario can still show what the agent said while cleaning up.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until the agent has installed: a config in the conf dir lists
    /// `istio-cni` (or our standalone file exists) and the kubeconfig is written.
    pub fn wait_installed(&mut self, timeout: Duration) -> Result<Duration, Stop> {
        let start = Instant::now();
        loop {
            if self.installed() {
                return Ok(start.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Stop::Fail(format!(
                    "the agent on {} exited ({status}) before installing:\n{}",
                    self.node,
                    self.logs()
                )));
            }
            if start.elapsed() > timeout {
                return Err(Stop::Fail(format!(
                    "the agent on {} did not install within {timeout:?}:\n{}",
                    self.node,
                    self.logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether our entry is in a config file and the kubeconfig exists.
    /// Only files libcni loads count: the agent's temp files
    /// (`<name>.tmp.<digits>`) hold the entry before they are renamed into place.
    pub fn installed(&self) -> bool {
        let kubeconfig = self.run_dir.join("istio-cni-kubeconfig").exists();
        let loaded = |p: &Path| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        };
        let entry = std::fs::read_dir(&self.conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| loaded(&e.path()))
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"istio-cni\"")));
        kubeconfig && entry
    }

    /// The agent's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait, and return the exit code (the agent cleans up first).
    pub fn stop(mut self) -> Result<Option<i32>, Stop> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("signalling the agent")?;
        Ok(child.wait().context("waiting for the agent")?.code())
    }

    /// SIGKILL (no cleanup), like a node losing the agent.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One node's CNI files as they were: what an uninstall must give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub node: String,
    /// Each config dir (the agent's and, where different, the runtime's)
    /// with every file's bytes.
    pub conf: Vec<(PathBuf, BTreeMap<String, Vec<u8>>)>,
    /// The CNI bin dir and the names in it (plugins are symlinks: names suffice).
    pub bin: (PathBuf, BTreeSet<String>),
}

impl NodeFiles {
    /// Reads `conf_dirs` (deduplicated) and the names in `bin_dir` now.
    pub fn capture(node: &str, conf_dirs: &[PathBuf], bin_dir: &Path) -> NodeFiles {
        let mut conf: Vec<(PathBuf, BTreeMap<String, Vec<u8>>)> = Vec::new();
        for dir in conf_dirs {
            if !conf.iter().any(|(d, _)| d == dir) {
                conf.push((dir.clone(), dir_bytes(dir)));
            }
        }
        NodeFiles {
            node: node.into(),
            conf,
            bin: (bin_dir.to_path_buf(), dir_bytes(bin_dir).into_keys().collect()),
        }
    }

    /// The same dirs read again.
    pub fn again(&self) -> NodeFiles {
        let dirs: Vec<PathBuf> = self.conf.iter().map(|(d, _)| d.clone()).collect();
        NodeFiles::capture(&self.node, &dirs, &self.bin.0)
    }

    /// Every difference from `earlier`, one line each (empty: identical).
    pub fn diff(&self, earlier: &NodeFiles) -> Vec<String> {
        let mut out = Vec::new();
        for ((dir, now), (_, then)) in self.conf.iter().zip(&earlier.conf) {
            for (name, bytes) in then {
                match now.get(name) {
                    None => out.push(format!("{}: {name} is gone", dir.display())),
                    Some(b) if b != bytes => out.push(format!("{}: {name} changed", dir.display())),
                    Some(_) => {}
                }
            }
            for name in now.keys().filter(|n| !then.contains_key(*n)) {
                out.push(format!("{}: {name} was left behind", dir.display()));
            }
        }
        let (dir, now) = &self.bin;
        for name in now.difference(&earlier.bin.1) {
            out.push(format!("{}: {name} was left behind", dir.display()));
        }
        for name in earlier.bin.1.difference(now) {
            out.push(format!("{}: {name} is gone", dir.display()));
        }
        out
    }

    /// A unified diff of every config file from `earlier` to now (a file
    /// that appeared or went is diffed against nothing); unchanged files are
    /// named, not shown.
    pub fn diff_text(&self, earlier: &NodeFiles) -> String {
        let mut out = String::new();
        let mut same = Vec::new();
        for ((dir, now), (_, then)) in self.conf.iter().zip(&earlier.conf) {
            let names: BTreeSet<&String> = now.keys().chain(then.keys()).collect();
            for name in names {
                let text = |files: &BTreeMap<String, Vec<u8>>| {
                    files
                        .get(name)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                };
                let path = dir.join(name);
                let (before, after) = (text(then), text(now));
                let label = |when: &str, present: bool| {
                    if present {
                        format!("{} ({when})", path.display())
                    } else {
                        format!("{} ({when}: absent)", path.display())
                    }
                };
                let diff = crate::failure::unified_diff(
                    &before,
                    &after,
                    (
                        &label("before", then.contains_key(name)),
                        &label("now", now.contains_key(name)),
                    ),
                );
                if diff.is_empty() {
                    same.push(path.display().to_string());
                } else {
                    out.push_str(&diff);
                    if !diff.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
        }
        if !same.is_empty() {
            out.push_str(&format!("unchanged: {}\n", same.join(", ")));
        }
        out
    }

    /// Every config file as text, for diagnostics.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (dir, files) in &self.conf {
            for (name, bytes) in files {
                out.push_str(&format!(
                    "== {}/{name}\n{}\n",
                    dir.display(),
                    String::from_utf8_lossy(bytes)
                ));
            }
            if files.is_empty() {
                out.push_str(&format!("== {} is empty\n", dir.display()));
            }
        }
        out
    }
}

/// Regular files (and symlinks) of `dir` with their bytes; a missing dir is empty.
fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.path().is_dir())
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// The agent on every node of an embedded cluster, as its DaemonSet would
/// put it there, with each node's CNI files from before it started.
pub struct Fleet {
    pub agents: Vec<NodeAgent>,
    pub before: Vec<NodeFiles>,
}

impl Fleet {
    /// Captures every node's files, starts the agent on each node with the
    /// manifest's environment plus `overrides`, and waits until each has installed.
    pub fn start(
        env: &Env,
        cluster: &Cluster,
        manifest: &Manifest,
        overrides: &[(&str, &str)],
        record: &mut Record,
    ) -> Result<Fleet, Stop> {
        let local = cluster.local()?;
        let mut fleet = Fleet {
            agents: Vec::new(),
            before: Vec::new(),
        };
        for node in local.nodes() {
            let conf_dir = node.host_path(manifest.host_conf_dir());
            fleet.before.push(NodeFiles::capture(
                node.name(),
                &[conf_dir, node.runtime_conf_dir()],
                &node.host_path(&manifest.host_bin_dir()),
            ));
            fleet
                .agents
                .push(NodeAgent::start(env, cluster, node.name(), manifest, overrides)?);
        }
        record.mark("agents started");
        for agent in &mut fleet.agents {
            record.waiting_for(format!("the agent on {} to install", agent.node()));
            let took = agent.wait_installed(Duration::from_secs(20))?;
            record.mark(format!("agent installed on {} ({} ms)", agent.node(), took.as_millis()));
        }
        Ok(fleet)
    }

    /// Every agent's log (the plugin logs through it), without terminal
    /// colour codes, as diagnostics.
    pub fn diag_logs(&self, record: &mut Record) {
        for agent in &self.agents {
            record.diag(
                format!("agent and plugin log ({})", agent.node()),
                crate::failure::strip_ansi(&agent.logs()),
            );
        }
    }

    /// Every node's CNI config from before the agent to now, as a diff.
    pub fn diag_files(&self, record: &mut Record) {
        for before in &self.before {
            record.diag(
                format!("CNI config diff, before the agent vs now ({})", before.node),
                before.again().diff_text(before),
            );
        }
    }

    /// SIGTERMs every agent (each cleans up) and checks that each exited 0,
    /// that every config dir holds the original bytes again, and that the
    /// binary and the plugin kubeconfig are gone.
    pub fn uninstall(mut self, record: &mut Record) -> Result<(), Stop> {
        let mut problems = Vec::new();
        let mut logs = Vec::new();
        for agent in std::mem::take(&mut self.agents) {
            let node = agent.node().to_string();
            let log = agent.log_path().to_path_buf();
            let kubeconfig = agent.run_dir.join("istio-cni-kubeconfig");
            let code = agent.stop()?;
            record.mark(format!("agent on {node} stopped ({code:?})"));
            if code != Some(0) {
                problems.push(format!("the agent on {node} exited with {code:?} on SIGTERM"));
            }
            if kubeconfig.exists() {
                problems.push(format!("{} was left behind", kubeconfig.display()));
            }
            logs.push((node, std::fs::read_to_string(log).unwrap_or_default()));
        }
        for before in &self.before {
            let diff = before.again().diff(before);
            problems.extend(diff.into_iter().map(|d| format!("{}: {d}", before.node)));
        }
        if problems.is_empty() {
            record.mark("every node's CNI files restored");
            return Ok(());
        }
        for (node, log) in logs {
            record.diag(
                format!("agent and plugin log ({node})"),
                crate::failure::strip_ansi(&log),
            );
        }
        self.diag_files(record);
        Err(Stop::Fail(format!("uninstall: {}", problems.join("; "))))
    }
}

/// `(host, port)` of the API server in a kubeconfig's `server:` line.
pub fn api_host_port(kubeconfig: &str) -> Result<(String, String), Stop> {
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .ok_or_else(|| Stop::Fail("the node kubeconfig has no server".into()))?;
    let hostport = server.trim().trim_start_matches("https://").trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| Stop::Fail(format!("server {server:?} has no port")))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_from_kubeconfig() {
        let k = "clusters:\n- cluster:\n    server: https://10.250.0.1:41234\n";
        assert_eq!(api_host_port(k).unwrap(), ("10.250.0.1".into(), "41234".into()));
        assert!(api_host_port("nothing").is_err());
    }

    #[test]
    fn node_files_diff_names_every_change() {
        let scratch = testkit::Scratch::new("node-files");
        let (conf, bin) = (scratch.join("net.d"), scratch.join("bin"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(conf.join("10-a.conflist"), "a").unwrap();
        std::fs::write(conf.join("20-b.conf"), "b").unwrap();
        std::fs::write(bin.join("ptp"), "").unwrap();
        let before = NodeFiles::capture("n", &[conf.clone(), conf.clone()], &bin);
        assert_eq!(before.conf.len(), 1, "a dir listed twice is captured once");
        assert!(before.again().diff(&before).is_empty());
        std::fs::write(conf.join("10-a.conflist"), "a2").unwrap();
        std::fs::remove_file(conf.join("20-b.conf")).unwrap();
        std::fs::write(conf.join("YYY-istio-cni.conf"), "{}").unwrap();
        std::fs::write(bin.join("istio-cni"), "").unwrap();
        let mut diff = before.again().diff(&before);
        diff.sort();
        let d = conf.display();
        assert_eq!(
            diff,
            [
                format!("{}: istio-cni was left behind", bin.display()),
                format!("{d}: 10-a.conflist changed"),
                format!("{d}: 20-b.conf is gone"),
                format!("{d}: YYY-istio-cni.conf was left behind"),
            ]
        );
        assert!(before.text().contains("10-a.conflist\na\n"));
        let text = before.again().diff_text(&before);
        assert!(
            text.contains(&format!(
                "--- {d}/10-a.conflist (before)\n+++ {d}/10-a.conflist (now)\n"
            )),
            "{text}"
        );
        assert!(text.contains("\n-a\n") && text.contains("\n+a2\n"), "{text}");
        assert!(text.contains(&format!("{d}/20-b.conf (now: absent)")), "{text}");
        assert!(text.contains(&format!("+++ {d}/YYY-istio-cni.conf (now)")), "{text}");
    }
}
