//! Why a scenario body stops: [`Stop`] — a failed check, a skip, or an
//! [`Error`] that keeps its cause. Errors from the harness and the agent
//! convert with `?`; an error from the standard library or a client needs to
//! say what it was doing first ([`Context::context`]), so a failure reads
//! "reading /x/10-ptp.conflist: No such file" rather than a bare cause.

use istio_cni_agent::manifest::ManifestError;
use istio_cni_kind::cluster::ClusterError;
use istio_cni_kind::cni::SelectError;

use crate::env::BinariesError;
use crate::snapshot::SetError;
use crate::system::SystemError;

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// A check failed; the message says which and what was seen.
    #[error("{0}")]
    Fail(String),
    /// The backend or kernel cannot run the scenario; the message says why.
    #[error("skipped: {0}")]
    Skip(String),
    /// Something the body did failed.
    #[error(transparent)]
    Error(#[from] Error),
}

impl Stop {
    /// The same stop as a message (its cause rendered): for scenarios that
    /// share one setup's fate, each reporting it.
    pub fn to_message(&self) -> Stop {
        match self {
            Stop::Skip(why) => Stop::Skip(why.clone()),
            other => Stop::Fail(other.to_string()),
        }
    }
}

/// What failed under a scenario, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, process or socket operation.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to the cluster's API server.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// JSON that did not read or write as the type it should be.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A YAML fixture that did not parse.
    #[error("{what}: {source}")]
    Yaml {
        what: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// A system call (signals).
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    /// The harness: creating the cluster, running pods, reading nodes.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The agent's manifests.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A node's CNI config choice.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// An annotation set's pod.
    #[error(transparent)]
    Set(#[from] SetError),
    /// Locating (or building) the workspace binaries.
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    /// The system under test's inputs.
    #[error(transparent)]
    System(#[from] SystemError),
    /// No rule dump ran in a pod's netns (an unreadable netns is not one
    /// without rules).
    #[error("reading the rules in pod {pod}'s netns: {source}")]
    Rules {
        pod: String,
        #[source]
        source: Several<ClusterError>,
    },
}

/// Several failures of one kind, none of which is more the cause than
/// another (every dump of a netns, every cluster a reap tore down): shown
/// joined by `; `, the first kept as the source.
#[derive(Debug)]
pub struct Several<E>(pub Vec<E>);

impl<E: std::fmt::Display> std::fmt::Display for Several<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Several<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.first().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

macro_rules! stop_from {
    ($($ty:ty),+) => {$(
        impl From<$ty> for Stop {
            fn from(e: $ty) -> Stop {
                Stop::Error(e.into())
            }
        }
    )+};
}
stop_from!(ClusterError, ManifestError, SelectError, SetError, SystemError);

/// Says what a fallible call was doing, turning its error into an [`Error`].
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, Error>;
}

macro_rules! context {
    ($($ty:ty => $variant:ident),+) => {$(
        impl<T> Context<T> for Result<T, $ty> {
            fn context(self, what: impl Into<String>) -> Result<T, Error> {
                self.map_err(|source| Error::$variant { what: what.into(), source })
            }
        }
    )+};
}
context!(
    std::io::Error => Io,
    kube::Error => Api,
    serde_json::Error => Json,
    serde_yaml::Error => Yaml,
    nix::Error => Sys
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_what_failed_and_keeps_its_cause() {
        let stop: Stop = std::fs::read("/nonexistent/istio-cni")
            .context("reading /nonexistent/istio-cni")
            .map_err(Stop::from)
            .unwrap_err();
        assert_eq!(
            stop.to_string(),
            "reading /nonexistent/istio-cni: No such file or directory (os error 2)"
        );
        let Stop::Error(Error::Io { source, .. }) = &stop else {
            panic!("not an I/O error: {stop:?}");
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert!(std::error::Error::source(&stop).is_some());
    }
}
