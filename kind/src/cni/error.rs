//! Errors of the CNI runner, each naming the network, plugin and command.

use std::path::PathBuf;
use std::time::Duration;

use super::config::SelectError;
use crate::node::netns::NetnsError;

/// The error document a failing plugin printed, as the runtime read it.
pub use cni_spec::CniError as PluginError;

/// Why a CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable network config in the conf dir.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The runtime parameters or the list are unusable (bad container id,
    /// interface name, network name, unparsable version).
    #[error("invalid {what} for network {network:?}: {reason}")]
    Invalid {
        /// The network.
        network: String,
        /// What was invalid (`container id`, `interface name`, ...).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The operation does not exist in the list's spec version (CHECK before
    /// 0.4.0).
    #[error("network {network:?}: configuration version {version:?} does not support the {command} command")]
    Unsupported {
        /// The network.
        network: String,
        /// The list's version.
        version: String,
        /// The command.
        command: &'static str,
    },
    /// The plugin binary is not in any bin dir.
    #[error("failed to find plugin {plugin:?} in path {}", join_paths(dirs))]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The dirs searched.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started.
    #[error("{command} plugin type={plugin:?} ({}) for network {network:?}: failed to start: {source}", path.display())]
    Spawn {
        /// The command.
        command: String,
        /// The plugin type.
        plugin: String,
        /// The binary.
        path: PathBuf,
        /// The network.
        network: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin exited non-zero (boxed: see [`PluginFailure`]).
    #[error(
        "plugin type={:?} name={:?} failed ({}): {}{}",
        .0.plugin,
        .0.network,
        .0.command.to_lowercase(),
        describe(&.0.error),
        stderr_note(&.0.stderr)
    )]
    Plugin(Box<PluginFailure>),
    /// The plugin ran past the per-call timeout and was killed.
    #[error(
        "plugin type={plugin:?} name={network:?} timed out ({}) after {timeout:?}{}",
        command.to_lowercase(),
        stderr_note(stderr)
    )]
    Timeout {
        /// The command.
        command: String,
        /// The plugin type.
        plugin: String,
        /// The network.
        network: String,
        /// The timeout.
        timeout: Duration,
        /// Stderr so far.
        stderr: String,
    },
    /// The plugin succeeded but its output is not what the command needs
    /// (boxed: see [`BadOutput`]).
    #[error(
        "plugin type={:?} name={:?} ({}) printed an unusable result: {}; stdout: {:?}{}",
        .0.plugin,
        .0.network,
        .0.command.to_lowercase(),
        .0.reason,
        .0.stdout,
        stderr_note(&.0.stderr)
    )]
    BadOutput(Box<BadOutput>),
    /// Reading or writing the result cache failed.
    #[error("network {network:?}: result cache: {reason}")]
    Cache {
        /// The network.
        network: String,
        /// What failed.
        reason: String,
    },
    /// The namespace the plugins should run in is unusable.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Several independent failures (GC continues past errors).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<CniError>),
}

/// A plugin whose successful output could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOutput {
    /// The command.
    pub command: String,
    /// The plugin type.
    pub plugin: String,
    /// The network.
    pub network: String,
    /// What is wrong.
    pub reason: String,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// A plugin that exited non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// The command (`ADD`, `DEL`, ...).
    pub command: String,
    /// The plugin type.
    pub plugin: String,
    /// The network.
    pub network: String,
    /// Its error object (libcni's interpretation of stdout/stderr).
    pub error: PluginError,
    /// The exit status, as text.
    pub status: String,
    /// The plugin's stderr.
    pub stderr: String,
}

impl CniError {
    /// The CNI error code when a plugin reported one.
    pub fn code(&self) -> Option<u32> {
        self.plugin_error().map(|e| e.code)
    }

    /// The plugin's error object, when a plugin failed.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            CniError::Plugin(failure) => Some(&failure.error),
            _ => None,
        }
    }

    /// The whole failure, when a plugin failed.
    pub fn plugin_failure(&self) -> Option<&PluginFailure> {
        match self {
            CniError::Plugin(failure) => Some(failure),
            _ => None,
        }
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// A plugin's error as runtimes log it: `msg; details (code N)`.
fn describe(e: &PluginError) -> String {
    if e.details.is_empty() {
        format!("{} (code {})", e.msg, e.code)
    } else {
        format!("{}; {} (code {})", e.msg, e.details, e.code)
    }
}

fn stderr_note(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; stderr: {trimmed}")
    }
}
