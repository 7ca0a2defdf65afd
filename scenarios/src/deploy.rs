//! The agent as a bare process on an embedded node: what the race
//! scenarios still start (every other scenario deploys the DaemonSet,
//! [`crate::daemonset`]); it goes when they do too.
//!
//! The agent runs as a process in a node's netns,
//! with exactly the environment the rendered DaemonSet gives its container
//! ([`Manifest::agent_env`]); container paths are mapped to the node's
//! directories (the DaemonSet's hostPath mounts), the service-account volume
//! is a directory holding a token minted for the manifest's ServiceAccount,
//! and the manifest's RBAC objects are applied to the API server first — so
//! the agent has exactly the rights the manifests grant.

use std::collections::BTreeMap;
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
use crate::scenario::Stop;

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
}
