//! The environment a suite runs in, and the ways cases act on it.
//!
//! One node of the harness's cluster network (a network namespace with its
//! own CNI bin dir holding Debian's plugins), inside a private harness
//! namespace so the host's network is never touched. The plugin under test
//! is installed into the node's bin dir under its file name. Every plugin
//! runs inside the node namespace, as a runtime runs plugins in the host's.
//!
//! - [`Sandbox`]: a pod network namespace with its runtime parameters
//!   (Kubernetes `CNI_ARGS`); deleted on drop.
//! - [`Attachment`]: a sandbox the primary plugin has ADDed, with the
//!   `prevResult` to hand to the plugin under test; on drop the plugin and
//!   the primary are DELed (best effort) and the sandbox deleted.
//! - [`Harness::invoke`]: one raw invocation of the plugin under test,
//!   recorded for the stdout-discipline case.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use istio_cni_kind::cni::version::{SUPPORTED, at_least};
use istio_cni_kind::cni::{CniError, NetworkConfigList, PluginConf, PodRef, Runner, RuntimeConf, VersionInfo, request};
use istio_cni_kind::node::{ClusterConfig, ClusterNetwork, Netns, NetnsError, Node, NodeError, NodeSpec, PodSandbox};
use serde_json::{Map, Value};
use testkit::Scratch;

use crate::compare::convert_result;
use crate::invoke::Invocation;
use crate::options::{OptionsError, SuiteOptions};
use crate::report::Finding;

/// The network name of every list the suite builds.
pub const NETWORK: &str = "conformance";

/// The interface every attachment uses.
pub const IFNAME: &str = "eth0";

/// Why the suite's environment could not be set up, or a primary's part of
/// it not made; each says what was being done, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(
        "the suite creates network namespaces and needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); \
         run it as root, or inside `unshare --map-root-user --net --mount`"
    )]
    NotRoot,
    #[error("plugin {}: {source}", path.display())]
    Plugin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {} is not an executable file", path.display())]
    NotExecutable { path: PathBuf },
    #[error("plugin path {} has no usable file name", path.display())]
    NoFileName { path: PathBuf },
    #[error(
        "primary plugin {} not found (install Debian's containernetworking-plugins or set CNI_PLUGINS_DIR)",
        path.display()
    )]
    NoPrimary { path: PathBuf },
    /// `reason` is the CNI config parser's.
    #[error("the plugin's configuration entry is invalid: {reason}")]
    PluginConf { reason: String },
    #[error("the scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
    #[error("creating the harness network namespace: {0}")]
    HarnessNetns(#[source] NetnsError),
    /// Creating the node network or the node, deleting a sandbox.
    #[error("{what}: {source}")]
    Node {
        what: String,
        #[source]
        source: NodeError,
    },
    #[error("the cluster network has no node")]
    NoNode,
    #[error("replacing {}: {source}", path.display())]
    Replace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("installing {} as {}: {source}", from.display(), to.display())]
    Install {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("asking the primary plugin for its versions: {0}")]
    PrimaryVersions(#[source] CniError),
    /// The primary's profile or the list it generated; `reason` is the CNI
    /// config layer's.
    #[error("the primary's {version} list: {reason}")]
    PrimaryList { version: String, reason: String },
    #[error("the primary profile has no plugin")]
    NoPrimaryEntry,
    #[error("the primary {primary} speaks no version with chaining")]
    NoChainingVersion { primary: &'static str },
}

impl HarnessError {
    fn node(what: impl Into<String>) -> impl FnOnce(NodeError) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Node { what, source }
    }
}

/// What setup created. Fields drop in order: the cluster network (nodes,
/// sandboxes, bridge), then the harness namespace, then the scratch dir.
#[derive(Debug)]
struct Env {
    net: ClusterNetwork,
    _harness_ns: Netns,
    scratch: Scratch,
}

/// A recorded invocation of the plugin under test.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The case that made it.
    pub case: String,
    /// What happened.
    pub invocation: Invocation,
}

/// The suite's environment: a node with the primary and the plugin under
/// test installed, a CNI runner for it, and what the plugins claim.
#[derive(Debug)]
pub struct Harness {
    opts: SuiteOptions,
    runner: Runner,
    plugin_type: String,
    plugin_path: PathBuf,
    plugin_conf: PluginConf,
    plugin_versions: Option<VersionInfo>,
    plugin_version_error: Option<String>,
    primary_versions: VersionInfo,
    counter: AtomicU32,
    current_case: Mutex<String>,
    log: Mutex<Vec<Recorded>>,
    env: Env,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Harness {
    /// Sets up the node, installs the plugin under test and asks both
    /// plugins for their versions. Needs root (network namespaces).
    pub fn new(opts: &SuiteOptions) -> Result<Self, HarnessError> {
        opts.validate()?;
        if !nix::unistd::geteuid().is_root() {
            return Err(HarnessError::NotRoot);
        }
        let plugin_src = std::fs::canonicalize(&opts.plugin).map_err(|source| HarnessError::Plugin {
            path: opts.plugin.clone(),
            source,
        })?;
        if !is_executable(&plugin_src) {
            return Err(HarnessError::NotExecutable { path: plugin_src });
        }
        let plugin_type = opts
            .plugin
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| HarnessError::NoFileName {
                path: opts.plugin.clone(),
            })?
            .to_owned();
        let primary_src = opts.plugins_dir.join(opts.primary.plugin_type());
        if !is_executable(&primary_src) {
            return Err(HarnessError::NoPrimary { path: primary_src });
        }
        let mut entry = Map::new();
        entry.insert("type".to_owned(), Value::String(plugin_type.clone()));
        entry.extend(opts.config_extra.clone());
        let plugin_conf =
            PluginConf::from_value(&Value::Object(entry)).map_err(|reason| HarnessError::PluginConf { reason })?;

        let env = create_env(opts)?;
        let node = first_node(&env.net)?;
        let bin_dir = node.bin_dir();
        let plugin_path = bin_dir.join(&plugin_type);
        if plugin_path.symlink_metadata().is_ok() {
            std::fs::remove_file(&plugin_path).map_err(|source| HarnessError::Replace {
                path: plugin_path.clone(),
                source,
            })?;
        }
        std::os::unix::fs::symlink(&plugin_src, &plugin_path).map_err(|source| HarnessError::Install {
            from: plugin_src.clone(),
            to: plugin_path.clone(),
            source,
        })?;
        let runner = node.runner().with_timeout(opts.timeout);
        let primary_versions = runner
            .version(opts.primary.plugin_type())
            .map_err(HarnessError::PrimaryVersions)?;

        let mut harness = Self {
            opts: opts.clone(),
            runner,
            plugin_type,
            plugin_path,
            plugin_conf,
            plugin_versions: None,
            plugin_version_error: None,
            primary_versions,
            counter: AtomicU32::new(0),
            current_case: Mutex::new("setup".to_owned()),
            log: Mutex::new(Vec::new()),
            env,
        };
        // A plugin whose VERSION fails is still checked at every version;
        // the version cases report the failure.
        let stdin = format!("{{\"cniVersion\":\"{}\"}}", istio_cni_kind::cni::version::CURRENT);
        match harness.invoke("VERSION", &RuntimeConf::default(), &[], stdin.as_bytes()) {
            Ok(inv) if inv.succeeded() => match VersionInfo::parse(&inv.stdout) {
                Ok(info) => harness.plugin_versions = Some(info),
                Err(e) => harness.plugin_version_error = Some(e),
            },
            Ok(inv) => harness.plugin_version_error = Some(format!("VERSION failed: {}", inv.failure_summary())),
            Err(e) => harness.plugin_version_error = Some(e),
        }
        Ok(harness)
    }

    /// The options of this run.
    pub fn opts(&self) -> &SuiteOptions {
        &self.opts
    }

    /// The node everything runs on.
    pub fn node(&self) -> &Node {
        // `create_env` only returns an environment with a node.
        &self.env.net.nodes()[0]
    }

    /// The runner (the node's bin dir and cache, plugins run in its netns).
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The scratch directory (removed at the end of the run).
    pub fn scratch(&self) -> &Path {
        self.env.scratch.path()
    }

    /// The plugin under test's `type` (its file name).
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }

    /// The plugin under test's entry: `type` plus `--config-extra`.
    pub fn plugin_conf(&self) -> &PluginConf {
        &self.plugin_conf
    }

    /// The primary plugin's `type`.
    pub fn primary_type(&self) -> &'static str {
        self.opts.primary.plugin_type()
    }

    /// The plugin's VERSION answer, or why there is none.
    pub fn plugin_versions(&self) -> Result<&VersionInfo, &str> {
        match (&self.plugin_versions, &self.plugin_version_error) {
            (Some(info), _) => Ok(info),
            (None, Some(e)) => Err(e),
            (None, None) => Err("VERSION was not asked"),
        }
    }

    /// Whether the plugin claims spec `version` (assumed when its VERSION
    /// answer is unusable, so the cases still run and show what happens).
    pub fn claims(&self, version: &str) -> bool {
        self.plugin_versions.as_ref().is_none_or(|info| info.supports(version))
    }

    /// A skip when the plugin does not claim `version`.
    pub fn skip_unless_claimed(&self, version: &str) -> Option<Finding> {
        if self.claims(version) {
            return None;
        }
        let listed = self
            .plugin_versions
            .as_ref()
            .map(|info| info.supported_versions.join(", "))
            .unwrap_or_default();
        Some(Finding::skip(format!(
            "{} does not claim {version} (supportedVersions: {listed})",
            self.plugin_type
        )))
    }

    /// Whether `version` was asked for with `--versions`.
    pub fn requested(&self, version: &str) -> bool {
        self.opts.versions.iter().any(|v| v == version)
    }

    /// Whether the primary plugin speaks `version`.
    pub fn primary_supports(&self, version: &str) -> bool {
        self.primary_versions.supports(version)
    }

    /// The version most single-version cases run at: the newest requested
    /// version both plugins speak, else the newest the plugin claims.
    pub fn base_version(&self) -> Option<String> {
        let claimed = || self.opts.versions.iter().rev().filter(|v| self.claims(v));
        claimed()
            .find(|v| self.primary_supports(v))
            .or_else(|| claimed().next())
            .cloned()
    }

    /// The newest requested version the plugin claims that has CHECK (≥ 0.4.0).
    pub fn check_version(&self) -> Option<String> {
        let base = self.base_version()?;
        if at_least(&base, "0.4.0").unwrap_or(false) {
            return Some(base);
        }
        self.opts
            .versions
            .iter()
            .rev()
            .find(|v| self.claims(v) && at_least(v, "0.4.0").unwrap_or(false))
            .cloned()
    }

    /// Names the case now running (for the invocation log).
    pub fn set_case(&self, name: &str) {
        *lock(&self.current_case) = name.to_owned();
    }

    /// Every invocation of the plugin under test so far.
    pub fn invocations(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }

    /// Runs the plugin under test with `command`, the `CNI_*` variables of
    /// `rt` (overridden or removed by `env`), and `stdin`; records it.
    pub fn invoke(
        &self,
        command: &str,
        rt: &RuntimeConf,
        env: &[(String, Option<String>)],
        stdin: &[u8],
    ) -> Result<Invocation, String> {
        let path = self.plugin_path.to_string_lossy();
        let out = self
            .runner
            .exec_raw(&path, command, rt, env, stdin)
            .map_err(|e| format!("running {} {command}: {e}", self.plugin_type))?;
        let inv = Invocation::new(command, out.status.code(), out.stdout, out.stderr);
        let case = lock(&self.current_case).clone();
        lock(&self.log).push(Recorded {
            case,
            invocation: inv.clone(),
        });
        Ok(inv)
    }

    /// The plugin's stdin for ADD/CHECK/DEL as libcni builds it: its entry
    /// with `name`, `cniVersion` and `prevResult` when given.
    pub fn request(&self, version: &str, prev: Option<&Value>) -> Vec<u8> {
        Self::request_for(&self.plugin_conf, version, prev)
    }

    /// Like [`Harness::request`] with another entry for the plugin.
    pub fn request_for(conf: &PluginConf, version: &str, prev: Option<&Value>) -> Vec<u8> {
        request::plugin_stdin(NETWORK, version, conf, prev, Some(&Map::new()))
    }

    /// The plugin's stdin for DEL: `prevResult` only from 0.4.0, as libcni.
    pub fn del_request(&self, version: &str, prev: &Value) -> Vec<u8> {
        let prev = at_least(version, "0.4.0").unwrap_or(true).then_some(prev);
        self.request(version, prev)
    }

    /// A fresh pod sandbox with Kubernetes runtime parameters.
    pub fn sandbox(&self) -> Result<Sandbox<'_>, String> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let id = format!("conformance-{n:04}");
        let pod = self
            .node()
            .create_pod_netns(&id)
            .map_err(|e| format!("creating sandbox {id}: {e}"))?;
        let pod_ref = PodRef {
            namespace: self.opts.pod_namespace.clone(),
            name: format!("{}-{n}", self.opts.pod_name),
            uid: format!("00000000-0000-4000-8000-{n:012}"),
        };
        let rt = RuntimeConf::for_pod(id, pod.path(), IFNAME, &pod_ref);
        Ok(Sandbox { h: self, pod, rt })
    }

    /// The primary's list at `version` (the primary alone).
    pub fn primary_list(&self, version: &str) -> Result<NetworkConfigList, HarnessError> {
        let invalid = |reason| HarnessError::PrimaryList {
            version: version.to_owned(),
            reason,
        };
        let generated = self
            .node()
            .profile(self.opts.primary.profile())
            .chain(Vec::new())
            .network_name(NETWORK)
            .cni_version(version)
            .generate()
            .map_err(invalid)?;
        NetworkConfigList::from_list_bytes(generated.text().as_bytes()).map_err(invalid)
    }

    /// The primary's configuration entry (for lists the cases build).
    pub fn primary_entry(&self) -> Result<Value, HarnessError> {
        let list = self.primary_list("1.0.0")?;
        list.plugins
            .first()
            .map(|p| Value::Object(p.raw.clone()))
            .ok_or(HarnessError::NoPrimaryEntry)
    }

    /// The version the primary runs at when the plugin is checked at
    /// `version`: the same, or the newest the primary speaks (its result
    /// is then re-labelled, see [`convert_result`]).
    fn primary_version_for(&self, version: &str) -> Result<String, HarnessError> {
        if self.primary_supports(version) {
            return Ok(version.to_owned());
        }
        SUPPORTED
            .iter()
            .rev()
            .find(|v| at_least(v, "0.3.0").unwrap_or(false) && self.primary_supports(v))
            .map(|v| (*v).to_owned())
            .ok_or_else(|| HarnessError::NoChainingVersion {
                primary: self.primary_type(),
            })
    }

    /// A new sandbox ADDed by the primary, ready for the plugin under test
    /// at `version`.
    pub fn attach(&self, version: &str) -> Result<Attachment<'_>, String> {
        self.attach_in(self.sandbox()?, version)
    }

    /// Has the primary ADD `sandbox`, ready for the plugin at `version`.
    pub fn attach_in<'h>(&'h self, sandbox: Sandbox<'h>, version: &str) -> Result<Attachment<'h>, String> {
        // What goes wrong here is a case's verdict reason (a message).
        let primary_version = self.primary_version_for(version).map_err(|e| e.to_string())?;
        let list = self.primary_list(&primary_version).map_err(|e| e.to_string())?;
        let result = match self.runner.add(&list, &sandbox.rt) {
            Ok(result) => result,
            Err(e) => {
                // The runtime DELs after a failed ADD.
                let _ = self.runner.del(&list, &sandbox.rt);
                return Err(format!(
                    "the primary {} could not ADD {} at {primary_version}: {e}",
                    self.primary_type(),
                    sandbox.rt.container_id
                ));
            }
        };
        let (prev, note) = if primary_version == version {
            (result.raw, None)
        } else {
            (
                convert_result(&result.raw, version),
                Some(format!(
                    "prevResult is {}'s {primary_version} result re-labelled {version} ({} speaks up to {primary_version}; the formats are the same)",
                    self.primary_type(),
                    self.primary_type()
                )),
            )
        };
        Ok(Attachment {
            sandbox,
            version: version.to_owned(),
            primary_list: list,
            prev,
            note,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn first_node(net: &ClusterNetwork) -> Result<&Node, HarnessError> {
    net.nodes().first().ok_or(HarnessError::NoNode)
}

fn create_env(opts: &SuiteOptions) -> Result<Env, HarnessError> {
    let scratch = Scratch::create("istio-cni-conformance").map_err(HarnessError::Scratch)?;
    let harness_ns = Netns::create(&scratch.path().join("harness-netns")).map_err(HarnessError::HarnessNetns)?;
    let config = ClusterConfig {
        root: Some(scratch.path().join("cluster")),
        harness_netns: Some(harness_ns.path().to_path_buf()),
        plugins_dir: opts.plugins_dir.clone(),
        ..ClusterConfig::default()
    };
    let mut net = ClusterNetwork::create(config).map_err(HarnessError::node("creating the node network"))?;
    net.add_node(NodeSpec::new("node0"))
        .map_err(HarnessError::node("creating the node"))?;
    Ok(Env {
        net,
        _harness_ns: harness_ns,
        scratch,
    })
}

/// A pod sandbox and its runtime parameters; the netns is deleted on drop.
#[derive(Debug)]
pub struct Sandbox<'h> {
    h: &'h Harness,
    /// The network namespace.
    pub pod: PodSandbox,
    /// `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`.
    pub rt: RuntimeConf,
}

impl Sandbox<'_> {
    /// Deletes the namespace now (the path stays in [`Sandbox::rt`]).
    pub fn delete_netns(&self) -> Result<(), HarnessError> {
        self.h
            .node()
            .delete_pod_netns(&self.pod.id)
            .map_err(HarnessError::node(format!("deleting sandbox {}", self.pod.id)))
    }
}

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
        let _ = self.delete_netns();
    }
}

/// A sandbox the primary has ADDed. On drop: DEL of the plugin under test
/// and of the primary (best effort, as a runtime's cleanup), then the
/// sandbox goes.
#[derive(Debug)]
pub struct Attachment<'h> {
    /// The sandbox.
    pub sandbox: Sandbox<'h>,
    /// The version the plugin under test is checked at.
    pub version: String,
    primary_list: NetworkConfigList,
    /// The primary's result in `version`'s format: the plugin's `prevResult`.
    pub prev: Value,
    /// Set when the primary ran at another version (see [`Harness::attach`]).
    pub note: Option<String>,
}

impl Attachment<'_> {
    /// The runtime parameters.
    pub fn rt(&self) -> &RuntimeConf {
        &self.sandbox.rt
    }

    /// ADD of the plugin under test with the primary's result as `prevResult`.
    pub fn plugin_add(&self) -> Result<Invocation, String> {
        let h = self.sandbox.h;
        h.invoke("ADD", self.rt(), &[], &h.request(&self.version, Some(&self.prev)))
    }

    /// DEL of the plugin under test with `prev` (from 0.4.0).
    pub fn plugin_del(&self, prev: &Value) -> Result<Invocation, String> {
        let h = self.sandbox.h;
        h.invoke("DEL", self.rt(), &[], &h.del_request(&self.version, prev))
    }
}

impl Drop for Attachment<'_> {
    fn drop(&mut self) {
        let _ = self.plugin_del(&self.prev);
        let _ = self.sandbox.h.runner.del(&self.primary_list, &self.sandbox.rt);
    }
}
