//! [`ClusterError`]: why a [`Cluster`](super::Cluster) operation failed,
//! one variant per kind of failure, each keeping its cause as its source.

use std::fmt;
use std::time::Duration;

use crate::backend::StartError;
use crate::kubelet::images::RemotePodError;

/// Any cause: the layers below report their own typed errors (netns, nodes,
/// the API server, plan steps), kept here as they are.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A step of bringing the cluster up failed.
    #[error("creating the cluster: {step}: {source}")]
    Create {
        /// What was being set up (`harness netns`, `API server`, ...).
        step: &'static str,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The spec asks a remote target for something only the local one does.
    #[error(
        "creating the cluster: {setting} applies to the local backend only; the {target} cluster's CNI and paths are its own"
    )]
    LocalOnly {
        /// The setting and its value (`profile Bridge`).
        setting: String,
        /// The target refusing it.
        target: &'static str,
    },
    /// A real-cluster backend refused or failed (missing tools name what to install).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The target cannot do this.
    #[error("{what} is not supported on {target} clusters: {why}")]
    Unsupported {
        /// The target.
        target: &'static str,
        /// What was asked.
        what: &'static str,
        /// Why not, and what to do instead.
        why: &'static str,
    },
    /// A pod did not reach the awaited state in time.
    #[error("pod {pod} not ready after {timeout:?}; last seen: {last_seen}")]
    PodNotReady {
        /// `namespace/name`.
        pod: String,
        /// How long it was given.
        timeout: Duration,
        /// The last answer of the API server (the pod, none, or the error).
        last_seen: String,
    },
    /// A pod has no node or UID yet.
    #[error("pod {pod} is not scheduled yet")]
    PodNotScheduled {
        /// `namespace/name`.
        pod: String,
    },
    /// A pod has no sandbox (netns) on its node.
    #[error("pod {pod} has no sandbox")]
    NoSandbox {
        /// `namespace/name`.
        pod: String,
    },
    /// A container has not written a log (or does not exist).
    #[error("no log for {pod} container {container}")]
    NoLog {
        /// `namespace/name`.
        pod: String,
        /// The container.
        container: String,
    },
    /// A pod cannot be run by the target's test image.
    #[error(transparent)]
    PodSpec(#[from] RemotePodError),
    /// No node of that name.
    #[error("no node {0:?} in this cluster")]
    NoSuchNode(String),
    /// A node could not join or leave.
    #[error("node {node}: {action}: {source}")]
    Node {
        /// The node.
        node: String,
        /// What was being done (`joining the cluster network`, ...).
        action: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// An empty argv was given.
    #[error("empty command line")]
    EmptyCommand,
    /// A command on a node or in a pod could not run or failed.
    #[error("{argv:?} {place}: {source}")]
    Exec {
        /// The command line.
        argv: Vec<String>,
        /// `on node <n>`, `in pod <ns>/<name>`.
        place: String,
        /// Why: it could not start, failed ([`CommandFailed`]) or timed out.
        #[source]
        source: BoxError,
    },
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Api {
        /// The call (`logs of ns/pod container c`).
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Tearing down left something behind.
    #[error("tearing the cluster down: {0}")]
    Teardown(Leftovers),
}

impl ClusterError {
    /// A failed creation step, as a `map_err` argument.
    pub(crate) fn create<E: Into<BoxError>>(step: &'static str) -> impl FnOnce(E) -> ClusterError {
        move |e| ClusterError::Create { step, source: e.into() }
    }

    /// A failed command, as a `map_err` argument.
    pub(crate) fn exec<E: Into<BoxError>>(argv: &[&str], place: impl Into<String>) -> impl FnOnce(E) -> ClusterError {
        let argv = argv.iter().map(|a| a.to_string()).collect();
        let place = place.into();
        move |e| ClusterError::Exec {
            argv,
            place,
            source: e.into(),
        }
    }
}

/// A command that ran and exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {stderr}")]
pub struct CommandFailed {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// Its stderr, trimmed.
    pub stderr: String,
}

/// Something a teardown could not remove.
#[derive(Debug, thiserror::Error)]
pub enum Leftover {
    /// Removing it failed.
    #[error("{what}: {source}")]
    NotRemoved {
        /// What (`harness netns`, a directory, a cgroup).
        what: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Something still holds the cluster network, so it was not torn down
    /// (its pause processes were stopped).
    #[error("the cluster network is still in use")]
    NetworkInUse,
}

/// Everything a teardown could not remove, each with its own cause.
#[derive(Debug, Default)]
pub struct Leftovers(pub Vec<BoxError>);

impl Leftovers {
    /// Records a failure.
    pub fn push(&mut self, e: impl Into<BoxError>) {
        self.0.push(e.into());
    }

    /// `Ok` when nothing failed.
    pub fn into_result(self) -> Result<(), ClusterError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Teardown(self))
        }
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_failed_command_names_itself_and_keeps_its_cause() {
        let failed = CommandFailed {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stderr: "Cannot find device \"eth9\"".into(),
        };
        let e = ClusterError::exec(&["ip", "link", "show", "eth9"], "on node node-0")(failed);
        assert_eq!(
            e.to_string(),
            r#"["ip", "link", "show", "eth9"] on node node-0: exit status: 1: Cannot find device "eth9""#
        );
        let cause = e.source().and_then(|s| s.downcast_ref::<CommandFailed>());
        assert_eq!(cause.map(|c| c.status.code()), Some(Some(1)), "{e:?}");
    }

    #[test]
    fn creation_steps_keep_their_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no CAP_SYS_ADMIN");
        let e = ClusterError::create("harness netns")(io);
        assert_eq!(e.to_string(), "creating the cluster: harness netns: no CAP_SYS_ADMIN");
        let cause = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(cause.map(|c| c.kind()), Some(std::io::ErrorKind::PermissionDenied));
    }

    #[test]
    fn teardown_lists_every_leftover() {
        assert!(Leftovers::default().into_result().is_ok());
        let mut left = Leftovers::default();
        left.push(Leftover::NetworkInUse);
        left.push(Leftover::NotRemoved {
            what: "harness netns".into(),
            source: "busy".into(),
        });
        let e = left.into_result().unwrap_err();
        assert_eq!(
            e.to_string(),
            "tearing the cluster down: the cluster network is still in use; harness netns: busy"
        );
        let ClusterError::Teardown(Leftovers(all)) = e else {
            panic!("{e:?}")
        };
        assert!(matches!(
            all[0].downcast_ref::<Leftover>(),
            Some(Leftover::NetworkInUse)
        ));
    }
}
