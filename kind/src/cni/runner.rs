//! The runner: executes network configuration lists the way libcni does.
//!
//! - ADD runs the plugins in order; each plugin's result is the next one's
//!   `prevResult`; the final result is cached.
//! - DEL runs them in reverse, each with the cached result as `prevResult`
//!   (for lists ≥ 0.4.0), stops at the first error, then drops the cache.
//! - CHECK (≥ 0.4.0; a no-op with `disableCheck`) runs them in order with the
//!   cached result.
//! - STATUS and GC (≥ 1.1.0) go to every plugin; GC first DELs cached
//!   attachments that are not in the valid set.
//!
//! Calls are blocking (one process at a time); from async code use
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::added::AddResult;
use super::cache::{self, CacheEntry};
use super::config::{NetworkConfigList, PluginConf};
use super::error::{BadOutput, CniError, PluginError, PluginFailure};
use super::exec::{self, ExecFailure, RawOutput};
use super::request::{self, GcAttachment};
use super::runtime::{self, RuntimeConf, cni_env};
use super::version::{self, VersionInfo};
use crate::node::netns::Netns;

/// Default per-plugin-call timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// ADD.
    Add,
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// STATUS.
    Status,
    /// GC.
    Gc,
    /// VERSION.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// A cached attachment (libcni `NetworkAttachment`).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    /// Container id.
    pub container_id: String,
    /// Network name.
    pub network: String,
    /// Interface name.
    pub ifname: String,
    /// The list bytes it was made with.
    pub config: Vec<u8>,
    /// Netns path (empty when none).
    pub netns: String,
    /// `CNI_ARGS` pairs.
    pub cni_args: Vec<(String, String)>,
    /// Capability arguments.
    pub capability_args: serde_json::Map<String, Value>,
}

impl CachedAttachment {
    /// The attachment as GC names it (container id and interface).
    pub fn key(&self) -> GcAttachment {
        GcAttachment::new(&self.container_id, &self.ifname)
    }
}

/// Runs CNI plugins found in a set of bin dirs, caching results in a cache
/// dir, optionally inside a network namespace (a node's).
#[derive(Debug, Clone)]
pub struct Runner {
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    netns: Option<Netns>,
    /// The node's `/run`, seen by plugins at `/run` (embedded nodes).
    node_run: Option<PathBuf>,
    timeout: Duration,
    env: Vec<(String, String)>,
}

impl Runner {
    /// A runner looking plugins up in `bin_dirs` (in order; they form
    /// `CNI_PATH`) and caching results under `cache_dir` (libcni's
    /// `/var/lib/cni`; entries go to `<cache_dir>/results`).
    pub fn new<P: Into<PathBuf>>(bin_dirs: impl IntoIterator<Item = P>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dirs: bin_dirs.into_iter().map(Into::into).collect(),
            cache_dir: cache_dir.into(),
            netns: None,
            node_run: None,
            timeout: DEFAULT_TIMEOUT,
            env: Vec::new(),
        }
    }

    /// Runs the plugins inside `netns` (the node's namespace).
    pub fn in_netns(mut self, netns: Netns) -> Self {
        self.netns = Some(netns);
        self
    }

    /// Runs the plugins with `dir` as their `/run` (see [`exec::execute_on_node`]).
    pub fn with_node_run(mut self, dir: impl Into<PathBuf>) -> Self {
        self.node_run = Some(dir.into());
        self
    }

    /// Runs the plugins inside the namespace at `path`.
    pub fn in_netns_path(self, path: &Path) -> Result<Self, CniError> {
        Ok(self.in_netns(Netns::open(path)?))
    }

    /// Sets the per-call timeout (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds an environment variable to every plugin call (besides the
    /// inherited environment and the `CNI_*` variables).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The bin dirs.
    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// The cache dir.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `CNI_PATH`: the bin dirs joined with `:`.
    pub fn cni_path(&self) -> String {
        self.bin_dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Finds a plugin binary: the first `<dir>/<type>` that is a file.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        let not_found = || CniError::PluginNotFound {
            plugin: plugin_type.to_owned(),
            dirs: self.bin_dirs.clone(),
        };
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(not_found());
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(not_found)
    }

    /// The cache file of an attachment.
    pub fn cache_file(&self, network: &str, rt: &RuntimeConf) -> Result<PathBuf, CniError> {
        cache::cache_file(&self.cache_dir, network, &rt.container_id, &rt.ifname).map_err(|reason| CniError::Cache {
            network: network.to_owned(),
            reason,
        })
    }

    /// ADD: runs the plugins in order, each with the previous result, caches
    /// and returns the final result.
    pub fn add(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<AddResult, CniError> {
        let mut prev: Option<AddResult> = None;
        for plugin in &list.plugins {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let invalid = |what, reason| CniError::Invalid {
                network: list.name.clone(),
                what,
                reason,
            };
            runtime::validate_container_id(&rt.container_id).map_err(|r| invalid("container id", r))?;
            runtime::validate_network_name(&list.name).map_err(|r| invalid("network name", r))?;
            runtime::validate_interface_name(&rt.ifname).map_err(|r| invalid("interface name", r))?;
            let prev_raw = prev.as_ref().map(|r| &r.raw);
            let out = self.run_plugin(Command::Add, list, plugin, &path, rt, prev_raw)?;
            let result = AddResult::parse(&out.stdout, &list.cni_version)
                .map_err(|reason| bad_output(Command::Add, &plugin.plugin_type, &list.name, reason, &out))?;
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| CniError::Invalid {
            network: list.name.clone(),
            what: "configuration list",
            reason: "no plugins".to_owned(),
        })?;
        let path = self.cache_file(&list.name, rt)?;
        let entry = CacheEntry {
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            ifname: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns_str(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: Some(result.raw.clone()),
        };
        cache::write(&path, &entry).map_err(|reason| CniError::Cache {
            network: list.name.clone(),
            reason: format!("failed to set cached result: {reason}"),
        })?;
        Ok(result)
    }

    /// DEL: runs the plugins in reverse order with the cached result (lists
    /// ≥ 0.4.0), stops at the first failure, then removes the cache entry.
    pub fn del(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        let mut cached = None;
        if self.version_at_least(list, "0.4.0")? {
            match self.cached_result(list, rt) {
                Ok(result) => cached = result,
                Err(_) => {
                    // libcni drops an unreadable cache entry and carries on.
                    if let Ok(path) = self.cache_file(&list.name, rt) {
                        let _ = cache::remove(&path);
                    }
                }
            }
        }
        for plugin in list.plugins.iter().rev() {
            let path = self.find_plugin(&plugin.plugin_type)?;
            self.run_plugin(Command::Del, list, plugin, &path, rt, cached.as_ref())?;
        }
        if let Ok(path) = self.cache_file(&list.name, rt) {
            cache::remove(&path).map_err(|reason| CniError::Cache {
                network: list.name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// CHECK: refused before 0.4.0, skipped with `disableCheck`, otherwise
    /// runs the plugins in order with the cached result.
    pub fn check(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<(), CniError> {
        if !self.version_at_least(list, "0.4.0")? {
            return Err(CniError::Unsupported {
                network: list.name.clone(),
                version: list.cni_version.clone(),
                command: "CHECK",
            });
        }
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cached_result(list, rt)?;
        for plugin in &list.plugins {
            let path = self.find_plugin(&plugin.plugin_type)?;
            self.run_plugin(Command::Check, list, plugin, &path, rt, cached.as_ref())?;
        }
        Ok(())
    }

    /// STATUS: asks every plugin in order, stopping at the first error; a
    /// no-op for lists older than 1.1.0 (as libcni).
    pub fn status(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        if !self.version_at_least(list, "1.1.0")? {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let stdin = request::status_stdin(&list.name, &list.cni_version, plugin);
            self.exec(Command::Status, &plugin.plugin_type, &path, &list.name, &rt, &stdin)?;
        }
        Ok(())
    }

    /// GC: DELs every cached attachment of this network that is not in
    /// `valid`, then (lists ≥ 1.1.0) sends GC with the valid set to every
    /// plugin. Continues past failures and reports them all.
    pub fn gc(&self, list: &NetworkConfigList, valid: &[GcAttachment]) -> Result<(), CniError> {
        let mut errors = Vec::new();
        for cached in self.cached_attachments(None) {
            if cached.network != list.name {
                continue;
            }
            if valid.contains(&cached.key()) {
                continue;
            }
            let rt = RuntimeConf {
                container_id: cached.container_id,
                netns: (!cached.netns.is_empty()).then(|| PathBuf::from(&cached.netns)),
                ifname: cached.ifname,
                args: cached.cni_args,
                capability_args: cached.capability_args,
            };
            if let Err(e) = self.del(list, &rt) {
                errors.push(e);
            }
        }
        if self.version_at_least(list, "1.1.0")? {
            let rt = RuntimeConf::default();
            for plugin in &list.plugins {
                let outcome = self.find_plugin(&plugin.plugin_type).and_then(|path| {
                    let stdin = request::gc_stdin(&list.name, &list.cni_version, plugin, valid);
                    self.exec(Command::Gc, &plugin.plugin_type, &path, &list.name, &rt, &stdin)
                });
                if let Err(e) = outcome {
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Multiple(errors)),
        }
    }

    /// VERSION: asks a plugin which spec versions it supports (stdin
    /// `{"cniVersion":"1.1.0"}`, as libcni sends).
    pub fn version(&self, plugin_type: &str) -> Result<VersionInfo, CniError> {
        let path = self.find_plugin(plugin_type)?;
        let stdin = format!("{{\"cniVersion\":{:?}}}", version::CURRENT);
        let rt = RuntimeConf::default();
        let out = self.exec(Command::Version, plugin_type, &path, "", &rt, stdin.as_bytes())?;
        VersionInfo::parse(&out.stdout).map_err(|reason| bad_output(Command::Version, plugin_type, "", reason, &out))
    }

    /// libcni `ValidateNetworkList`: every plugin binary exists and supports
    /// the list's version (empty = 0.1.0). Returns the enabled capabilities,
    /// sorted.
    pub fn validate(&self, list: &NetworkConfigList) -> Result<Vec<String>, CniError> {
        let wanted = if list.cni_version.is_empty() {
            "0.1.0"
        } else {
            list.cni_version.as_str()
        };
        let mut errors = Vec::new();
        let mut caps = std::collections::BTreeSet::new();
        for plugin in &list.plugins {
            match self.version(&plugin.plugin_type) {
                Ok(info) if info.supports(wanted) => {}
                Ok(_) => errors.push(CniError::Invalid {
                    network: list.name.clone(),
                    what: "plugin version",
                    reason: format!(
                        "plugin {} does not support config version {wanted:?}",
                        plugin.plugin_type
                    ),
                }),
                Err(e) => errors.push(e),
            }
            caps.extend(
                plugin
                    .capabilities
                    .iter()
                    .filter(|(_, on)| **on)
                    .map(|(c, _)| c.clone()),
            );
        }
        match errors.len() {
            0 => Ok(caps.into_iter().collect()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Multiple(errors)),
        }
    }

    /// The cached ADD result of an attachment, if any.
    pub fn cached_result(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Option<Value>, CniError> {
        let path = self.cache_file(&list.name, rt)?;
        let entry = cache::read(&path).map_err(|reason| CniError::Cache {
            network: list.name.clone(),
            reason,
        })?;
        Ok(entry.and_then(|e| e.result))
    }

    /// Cached attachments, optionally of one container only.
    pub fn cached_attachments(&self, container_id: Option<&str>) -> Vec<CachedAttachment> {
        cache::list(&self.cache_dir, container_id)
            .into_iter()
            .map(|e| CachedAttachment {
                container_id: e.container_id,
                network: e.network_name,
                ifname: e.ifname,
                config: e.config,
                netns: e.netns,
                cni_args: e.cni_args,
                capability_args: e.capability_args,
            })
            .collect()
    }

    /// Runs a plugin with arbitrary command, environment and stdin and
    /// returns what it did, without interpreting it — for conformance tests
    /// (missing variables, garbage stdin, ...). `env` entries override the
    /// `CNI_*` variables built from `rt`; a value of `None` removes the
    /// variable.
    pub fn exec_raw(
        &self,
        plugin: &str,
        command: &str,
        rt: &RuntimeConf,
        env: &[(String, Option<String>)],
        stdin: &[u8],
    ) -> Result<RawOutput, CniError> {
        let path = if plugin.contains('/') {
            PathBuf::from(plugin)
        } else {
            self.find_plugin(plugin)?
        };
        let mut vars = self.env.clone();
        vars.extend(cni_env(command, rt, &self.cni_path()));
        let mut removed = Vec::new();
        for (k, v) in env {
            vars.retain(|(key, _)| key != k);
            match v {
                Some(v) => vars.push((k.clone(), v.clone())),
                None => removed.push(k.clone()),
            }
        }
        let run = self.node_run.as_deref();
        exec::execute_on_node(&path, &vars, &removed, stdin, self.netns.as_ref(), run, self.timeout)
            .map_err(|failure| self.failure(command, plugin, &path, "", failure))
    }

    fn version_at_least(&self, list: &NetworkConfigList, min: &str) -> Result<bool, CniError> {
        version::at_least(&list.cni_version, min).map_err(|e| CniError::Invalid {
            network: list.name.clone(),
            what: "cniVersion",
            reason: e.to_string(),
        })
    }

    /// Runs one plugin of `list` for ADD, DEL or CHECK: its configuration
    /// with `prev` (the previous or cached result) and the capability args.
    fn run_plugin(
        &self,
        command: Command,
        list: &NetworkConfigList,
        plugin: &PluginConf,
        path: &Path,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Result<RawOutput, CniError> {
        let stdin = request::plugin_stdin(&list.name, &list.cni_version, plugin, prev, Some(&rt.capability_args));
        self.exec(command, &plugin.plugin_type, path, &list.name, rt, &stdin)
    }

    fn exec(
        &self,
        command: Command,
        plugin: &str,
        path: &Path,
        network: &str,
        rt: &RuntimeConf,
        stdin: &[u8],
    ) -> Result<RawOutput, CniError> {
        let mut vars = self.env.clone();
        vars.extend(cni_env(command.as_str(), rt, &self.cni_path()));
        let run = self.node_run.as_deref();
        let out = exec::execute_on_node(path, &vars, &[], stdin, self.netns.as_ref(), run, self.timeout)
            .map_err(|failure| self.failure(command.as_str(), plugin, path, network, failure))?;
        tracing::debug!(
            command = command.as_str(),
            plugin,
            network,
            status = %out.status,
            elapsed_ms = out.elapsed.as_millis() as u64,
            "CNI plugin ran"
        );
        if out.status.success() {
            return Ok(out);
        }
        let status = out.status.to_string();
        Err(CniError::Plugin(Box::new(PluginFailure {
            command: command.as_str().to_owned(),
            plugin: plugin.to_owned(),
            network: network.to_owned(),
            error: PluginError::from_output(&out.stdout, &out.stderr, &status),
            status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })))
    }

    fn failure(&self, command: &str, plugin: &str, path: &Path, network: &str, failure: ExecFailure) -> CniError {
        match failure {
            ExecFailure::Spawn(source) | ExecFailure::Wait(source) => CniError::Spawn {
                command: command.to_owned(),
                plugin: plugin.to_owned(),
                path: path.to_path_buf(),
                network: network.to_owned(),
                source,
            },
            ExecFailure::Timeout { stderr, .. } => CniError::Timeout {
                command: command.to_owned(),
                plugin: plugin.to_owned(),
                network: network.to_owned(),
                timeout: self.timeout,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            },
        }
    }
}

/// A plugin's output that is not the answer `command` expects.
fn bad_output(command: Command, plugin: &str, network: &str, reason: String, out: &RawOutput) -> CniError {
    CniError::BadOutput(Box::new(BadOutput {
        command: command.as_str().to_owned(),
        plugin: plugin.to_owned(),
        network: network.to_owned(),
        reason,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A bin dir with fake plugins `p1`, `p2` (one script) that log
    /// `<command> <name> <stdin>` to `$LOG` and answer ADD with a result
    /// naming themselves.
    struct Fixture {
        dir: PathBuf,
        log: PathBuf,
    }

    impl Fixture {
        fn new(label: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("ick-runner-{}-{label}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("bin")).unwrap();
            let script = dir.join("bin/p1");
            std::fs::write(
                &script,
                r#"#!/bin/sh
input=$(cat)
me=$(basename "$0")
printf '%s %s %s\n' "$CNI_COMMAND" "$me" "$input" >> "$LOG"
case "$CNI_COMMAND" in
  ADD) printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s"}],"ips":[{"address":"10.0.0.2/24"}]}' "$me" ;;
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
  ENV) env | grep '^CNI_' | sort ;;
esac
"#,
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::symlink(&script, dir.join("bin/p2")).unwrap();
            let log = dir.join("log");
            Self { dir, log }
        }

        fn runner(&self) -> Runner {
            Runner::new([self.dir.join("none"), self.dir.join("bin")], self.dir.join("cache"))
                .with_env("LOG", self.log.to_string_lossy())
        }

        fn log(&self) -> Vec<(String, String, Value)> {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let mut parts = l.splitn(3, ' ');
                    let cmd = parts.next().unwrap_or("").to_owned();
                    let me = parts.next().unwrap_or("").to_owned();
                    let stdin = serde_json::from_str(parts.next().unwrap_or("null")).unwrap_or(Value::Null);
                    (cmd, me, stdin)
                })
                .collect()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn list() -> NetworkConfigList {
        parse(
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"p1"},{"type":"p2","capabilities":{"portMappings":true}}]}"#,
        )
    }

    /// A list network named `name` of one `plugin`, at `version`.
    fn one_plugin(version: &str, name: &str, plugin: &str) -> NetworkConfigList {
        parse(&format!(
            r#"{{"cniVersion":"{version}","name":"{name}","plugins":[{{"type":"{plugin}"}}]}}"#
        ))
    }

    fn parse(list: &str) -> NetworkConfigList {
        NetworkConfigList::from_list_bytes(list.as_bytes()).unwrap()
    }

    #[test]
    fn add_chains_results_and_del_runs_in_reverse_with_the_cache() {
        let fx = Fixture::new("chain");
        let runner = fx.runner();
        let rt = RuntimeConf::new("c1", Some(Path::new("/proc/self/ns/net")), "eth0")
            .with_capability("portMappings", serde_json::json!([{"hostPort": 1}]))
            .with_capability("bandwidth", serde_json::json!({}));
        let result = runner.add(&list(), &rt).unwrap();
        assert_eq!(result.interfaces()[0].name, "p2");

        let log = fx.log();
        assert_eq!((log[0].0.as_str(), log[0].1.as_str()), ("ADD", "p1"));
        assert!(log[0].2.get("prevResult").is_none());
        assert!(log[0].2.get("runtimeConfig").is_none(), "p1 declared no capability");
        assert_eq!(log[1].2["prevResult"]["interfaces"][0]["name"], "p1");
        assert_eq!(
            log[1].2["runtimeConfig"],
            serde_json::json!({"portMappings": [{"hostPort": 1}]})
        );
        assert_eq!(log[1].2["name"], "net");

        let cache = runner.cache_file("net", &rt).unwrap();
        assert!(cache.ends_with("cache/results/net-c1-eth0"));
        assert_eq!(runner.cached_result(&list(), &rt).unwrap(), Some(result.raw.clone()));
        assert_eq!(runner.cached_attachments(Some("c1")).len(), 1);

        runner.check(&list(), &rt).unwrap();
        runner.del(&list(), &rt).unwrap();
        let log = fx.log();
        let order: Vec<String> = log[2..].iter().map(|(c, me, _)| format!("{c} {me}")).collect();
        assert_eq!(order, ["CHECK p1", "CHECK p2", "DEL p2", "DEL p1"]);
        for (_, _, stdin) in &log[2..] {
            assert_eq!(stdin["prevResult"], result.raw, "CHECK and DEL get the cached result");
        }
        assert!(!cache.exists());
    }

    #[test]
    fn versions_gate_check_del_cache_and_status() {
        let fx = Fixture::new("gates");
        let runner = fx.runner();
        let old = one_plugin("0.3.1", "old", "p1");
        let rt = RuntimeConf::new("c1", None, "eth0");
        runner.add(&old, &rt).unwrap();
        assert!(matches!(
            runner.check(&old, &rt),
            Err(CniError::Unsupported { command: "CHECK", .. })
        ));
        runner.del(&old, &rt).unwrap();
        // Before 0.4.0, DEL gets no prevResult.
        assert!(fx.log().last().unwrap().2.get("prevResult").is_none());
        // STATUS before 1.1.0 runs nothing.
        runner.status(&old).unwrap();
        assert!(fx.log().iter().all(|(c, _, _)| c != "STATUS"));
        let disabled = parse(r#"{"cniVersion":"1.0.0","name":"d","disableCheck":true,"plugins":[{"type":"p1"}]}"#);
        let before = fx.log().len();
        runner.check(&disabled, &rt).unwrap();
        assert_eq!(fx.log().len(), before, "disableCheck skips CHECK");
    }

    #[test]
    fn gc_dels_stale_attachments_and_sends_gc_at_1_1_0() {
        let fx = Fixture::new("gc");
        let runner = fx.runner();
        let list = one_plugin("1.1.0", "g", "p1");
        for id in ["keep", "stale"] {
            runner.add(&list, &RuntimeConf::new(id, None, "eth0")).unwrap();
        }
        runner.gc(&list, &[GcAttachment::new("keep", "eth0")]).unwrap();
        let log = fx.log();
        let tail: Vec<&str> = log[2..].iter().map(|(c, _, _)| c.as_str()).collect();
        assert_eq!(tail, ["DEL", "GC"]);
        assert_eq!(
            log[3].2["cni.dev/valid-attachments"],
            serde_json::json!([{"containerID": "keep", "ifname": "eth0"}])
        );
        let left = runner.cached_attachments(None);
        assert_eq!(
            left.iter().map(CachedAttachment::key).collect::<Vec<_>>(),
            [GcAttachment::new("keep", "eth0")]
        );
    }

    #[test]
    fn invalid_runtime_parameters_are_refused_before_running() {
        let fx = Fixture::new("invalid");
        let runner = fx.runner();
        for (rt, what) in [
            (RuntimeConf::new("", None, "eth0"), "container id"),
            (RuntimeConf::new("c 1", None, "eth0"), "container id"),
            (RuntimeConf::new("c1", None, "averyveryverylongname"), "interface name"),
        ] {
            let err = runner.add(&list(), &rt).unwrap_err();
            assert!(matches!(err, CniError::Invalid { what: w, .. } if w == what), "{err}");
        }
        assert!(fx.log().is_empty());
        let err = runner.find_plugin("../p1").unwrap_err();
        assert!(matches!(err, CniError::PluginNotFound { .. }));
    }

    #[test]
    fn version_validate_and_raw_exec() {
        let fx = Fixture::new("raw");
        let runner = fx.runner();
        assert!(runner.version("p2").unwrap().supports("1.0.0"));
        assert!(runner.validate(&list()).unwrap() == ["portMappings"]);
        let out = runner
            .exec_raw(
                "p1",
                "ENV",
                &RuntimeConf::new("c9", None, "eth1"),
                &[("CNI_NETNS".into(), None), ("CNI_ARGS".into(), Some("A=1".into()))],
                b"{}",
            )
            .unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        assert!(env.contains("CNI_COMMAND=ENV\n"), "{env}");
        assert!(env.contains("CNI_CONTAINERID=c9\n"), "{env}");
        assert!(env.contains("CNI_ARGS=A=1\n"), "{env}");
        assert!(!env.contains("CNI_NETNS"), "{env}");
        assert!(env.contains(&format!("CNI_PATH={}", runner.cni_path())), "{env}");
    }

    #[test]
    fn a_non_result_is_a_bad_output_error() {
        let fx = Fixture::new("bad");
        std::fs::write(fx.dir.join("bin/junk"), "#!/bin/sh\ncat >/dev/null\necho not-json\n").unwrap();
        std::fs::set_permissions(fx.dir.join("bin/junk"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let list = one_plugin("1.0.0", "b", "junk");
        let err = fx
            .runner()
            .add(&list, &RuntimeConf::new("c1", None, "eth0"))
            .unwrap_err();
        assert!(
            matches!(err, CniError::BadOutput(ref b) if b.stdout == "not-json\n"),
            "{err}"
        );
        assert!(err.to_string().contains("result is not JSON"), "{err}");
    }
}
