//! What a suite run checks and how: the plugin under test, the primary
//! plugin in front of it, the spec versions, the pod identity and the extra
//! configuration merged into the plugin's entry.

use std::path::PathBuf;
use std::time::Duration;

use istio_cni_kind::cni::Profile;
use istio_cni_kind::cni::version::{SUPPORTED, at_least};
use serde_json::{Map, Value};

/// The spec versions checked by default: every version that has chaining.
pub const DEFAULT_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Keys of the plugin's entry the suite sets itself, refused in
/// [`SuiteOptions::config_extra`].
pub const RESERVED_KEYS: [&str; 5] = ["type", "name", "cniVersion", "prevResult", "runtimeConfig"];

/// Default number of parallel ADDs in the concurrency case.
pub const DEFAULT_PARALLEL: usize = 8;

/// Default per-invocation timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why suite options are unusable (a usage error: the runner exits 2).
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("no spec versions to check")]
    NoVersions,
    #[error("unknown spec version {version:?}; known: {}", SUPPORTED.join(", "))]
    UnknownVersion { version: String },
    #[error(
        "spec version {version} has no chaining (prevResult came in 0.3.0); a chained plugin cannot be checked at it"
    )]
    NoChaining { version: String },
    #[error("--config-extra must not set {key:?}: the suite sets it for every invocation")]
    ReservedKey { key: &'static str },
    #[error("--config-extra must be a JSON object")]
    ConfigExtraNotObject,
    #[error("--config-extra is not JSON: {0}")]
    ConfigExtraJson(#[source] serde_json::Error),
    #[error("--parallel must be at least 1")]
    Parallel,
    #[error("the pod namespace and name must not be empty")]
    EmptyPod,
}

/// The suite of [`SuiteOptions`]: the CNI plugin contract (the runner's
/// other suites are in [`crate::suites`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Suite {
    /// The CNI 1.1 plugin contract (SPEC.md, CONVENTIONS.md, libcni's skel).
    #[default]
    Cni,
}

/// The real plugin that runs first in the chain and produces the
/// `prevResult` the plugin under test must pass through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Primary {
    /// `bridge` with `host-local` IPAM (`cni0`, gateway on the bridge).
    #[default]
    Bridge,
    /// `ptp` with `host-local` IPAM (kindnet's shape, without its portmap).
    Ptp,
}

impl Primary {
    /// The harness profile that writes this primary's configuration.
    pub fn profile(self) -> Profile {
        match self {
            Primary::Bridge => Profile::Bridge,
            Primary::Ptp => Profile::Ptp,
        }
    }

    /// The plugin's `type`.
    pub fn plugin_type(self) -> &'static str {
        self.profile().plugin_type()
    }
}

/// Everything a suite run needs. Build it with [`SuiteOptions::new`] and
/// adjust the public fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteOptions {
    /// The suite.
    pub suite: Suite,
    /// The plugin binary under test; it is installed into the node's bin dir
    /// under its file name, which becomes its `type`.
    pub plugin: PathBuf,
    /// The primary plugin.
    pub primary: Primary,
    /// Spec versions for the version-driven cases, oldest first.
    pub versions: Vec<String>,
    /// Merged into the plugin's entry of the configuration list.
    pub config_extra: Map<String, Value>,
    /// `K8S_POD_NAMESPACE` of every sandbox.
    pub pod_namespace: String,
    /// Base of `K8S_POD_NAME`; each sandbox appends `-<n>`.
    pub pod_name: String,
    /// How many ADDs the concurrency case runs at once.
    pub parallel: usize,
    /// Per-invocation timeout.
    pub timeout: Duration,
    /// Run only the cases whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Where the primary plugins come from (Debian: `/usr/lib/cni`).
    pub plugins_dir: PathBuf,
    /// When set, only the cases with exactly these names (the runner's
    /// `--filter` selection).
    pub exact: Option<Vec<String>>,
}

impl SuiteOptions {
    /// Defaults for `plugin`: the bridge primary, every version from 0.3.0,
    /// pods `default/conformance-<n>`, 8 parallel ADDs, 30 s per call.
    pub fn new(plugin: impl Into<PathBuf>) -> Self {
        Self {
            suite: Suite::Cni,
            plugin: plugin.into(),
            primary: Primary::Bridge,
            versions: DEFAULT_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            config_extra: Map::new(),
            pod_namespace: "default".to_owned(),
            pod_name: "conformance".to_owned(),
            parallel: DEFAULT_PARALLEL,
            timeout: DEFAULT_TIMEOUT,
            only: Vec::new(),
            plugins_dir: istio_cni_kind::node::plugins::default_plugins_dir(),
            exact: None,
        }
    }

    /// Checks what cannot be checked by types: known versions that have
    /// chaining (≥ 0.3.0), no reserved keys in the extra config, a
    /// parallelism of at least 1.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.versions.is_empty() {
            return Err(OptionsError::NoVersions);
        }
        for v in &self.versions {
            if !SUPPORTED.contains(&v.as_str()) {
                return Err(OptionsError::UnknownVersion { version: v.clone() });
            }
            if !at_least(v, "0.3.0").unwrap_or(false) {
                return Err(OptionsError::NoChaining { version: v.clone() });
            }
        }
        if let Some(key) = RESERVED_KEYS.iter().find(|k| self.config_extra.contains_key(**k)) {
            return Err(OptionsError::ReservedKey { key });
        }
        if self.parallel == 0 {
            return Err(OptionsError::Parallel);
        }
        if self.pod_namespace.is_empty() || self.pod_name.is_empty() {
            return Err(OptionsError::EmptyPod);
        }
        Ok(())
    }

    /// Whether the case `name` is selected by [`SuiteOptions::only`] and
    /// [`SuiteOptions::exact`].
    pub fn selects(&self, name: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|pattern| name.contains(pattern.as_str())))
            && self.exact.as_ref().is_none_or(|names| names.iter().any(|n| n == name))
    }
}

/// Parses `--versions`: comma-separated, deduplicated, sorted oldest first.
pub fn parse_versions(text: &str) -> Result<Vec<String>, OptionsError> {
    let mut versions: Vec<String> = Vec::new();
    for v in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if !SUPPORTED.contains(&v) {
            return Err(OptionsError::UnknownVersion { version: v.to_owned() });
        }
        if !versions.iter().any(|known| known == v) {
            versions.push(v.to_owned());
        }
    }
    versions.sort_by_key(|v| SUPPORTED.iter().position(|known| known == v));
    Ok(versions)
}

/// Parses `--config-extra`: a JSON object.
pub fn parse_config_extra(text: &str) -> Result<Map<String, Value>, OptionsError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(OptionsError::ConfigExtraNotObject),
        Err(e) => Err(OptionsError::ConfigExtraJson(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_deduplicated_and_sorted() {
        assert_eq!(
            parse_versions("1.1.0, 0.3.0,0.3.0,0.4.0").unwrap(),
            ["0.3.0", "0.4.0", "1.1.0"]
        );
        assert!(
            parse_versions("0.5.0")
                .unwrap_err()
                .to_string()
                .contains("unknown spec version")
        );
    }

    #[test]
    fn validation_refuses_unchained_versions_and_reserved_keys() {
        let mut opts = SuiteOptions::new("/bin/true");
        opts.validate().unwrap();
        opts.versions = vec!["0.2.0".into()];
        assert!(opts.validate().unwrap_err().to_string().contains("no chaining"));
        opts.versions = vec!["1.0.0".into()];
        opts.config_extra = parse_config_extra(r#"{"type":"x"}"#).unwrap();
        assert!(opts.validate().unwrap_err().to_string().contains("\"type\""));
        assert!(parse_config_extra("[1]").unwrap_err().to_string().contains("object"));
        assert!(parse_config_extra("{").unwrap_err().to_string().contains("not JSON"));
    }

    #[test]
    fn only_selects_by_substring() {
        let mut opts = SuiteOptions::new("/bin/true");
        assert!(opts.selects("anything"));
        opts.only = vec!["del/".into(), "version".into()];
        assert!(opts.selects("del/twice[1.0.0]"));
        assert!(opts.selects("version/report"));
        assert!(!opts.selects("add/prev-result[1.0.0]"));
        opts.exact = Some(vec!["del/twice[1.0.0]".into()]);
        assert!(opts.selects("del/twice[1.0.0]"));
        assert!(!opts.selects("del/twice[0.4.0]"));
    }
}
