//! Running work inside a network namespace.
//!
//! Linux network namespaces are per *thread*: `setns(2)` only moves the
//! calling thread. So every piece of work that must see the pod's network
//! stack runs on a fresh, dedicated OS thread that enters the namespace, does
//! the work and then exits. Such a thread is never returned to a pool (and
//! never is an async worker), so no other code can accidentally run in the
//! pod's namespace afterwards.
//!
//! * [`run_in_netns`]: run a closure inside a netns on a throw-away thread.
//! * [`exec`]: spawn external commands (`iptables*`, `nft`) inside the netns,
//!   in a private mount namespace with the lock file and NSS mask of §4.6.
//! * [`netlink`]: interface addresses, the `::6` passthrough address and the
//!   TPROXY policy routing of §4.7, via rtnetlink.
//! * [`family`]: the pure IPv6-detection decision of §3.2.

pub mod exec;
pub mod family;
pub mod netlink;

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why work could not be run inside a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("failed to open netns {}: {source}", path.display())]
    Open {
        /// The namespace path that was given.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `setns(CLONE_NEWNET)` was refused (wrong file type, missing privilege).
    #[error("failed to enter netns {}: setns: {source}", path.display())]
    Enter {
        /// The namespace path that was given.
        path: PathBuf,
        /// The errno from `setns(2)`.
        #[source]
        source: nix::Error,
    },
    /// The dedicated thread could not be created.
    #[error("failed to spawn a thread for netns {}: {source}", path.display())]
    Spawn {
        /// The namespace path that was given.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The work panicked inside the namespace thread.
    #[error("work inside netns {} panicked: {message}", path.display())]
    Panicked {
        /// The namespace path that was given.
        path: PathBuf,
        /// The panic payload, when it was a string.
        message: String,
    },
}

/// Runs `f` on a fresh OS thread that has entered the network namespace at
/// `netns_path`, and returns its result.
///
/// The thread exits when `f` returns; it is never reused, so its changed
/// namespace cannot leak into unrelated work. Do not call this from inside an
/// async task's worker expecting the *caller* to move: only the new thread
/// enters the namespace. Blocking: the caller waits for `f` to finish.
pub fn run_in_netns<T: Send + 'static>(
    netns_path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let path = netns_path.to_path_buf();
    let ns = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    let thread_path = path.clone();
    let handle = std::thread::Builder::new()
        .name("netns".to_owned())
        .spawn(move || -> Result<T, NetnsError> {
            enter(&ns, &thread_path)?;
            Ok(f())
        })
        .map_err(|source| NetnsError::Spawn {
            path: path.clone(),
            source,
        })?;
    match handle.join() {
        Ok(result) => result,
        Err(payload) => Err(NetnsError::Panicked {
            path,
            message: panic_message(payload.as_ref()),
        }),
    }
}

/// Moves the *calling thread* into the network namespace behind `ns`.
///
/// Only for threads that are discarded afterwards (see [`run_in_netns`]).
pub(crate) fn enter(ns: &File, path: &Path) -> Result<(), NetnsError> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        path: path.to_path_buf(),
        source,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_path_is_named_in_the_error() {
        let err = run_in_netns(Path::new("/nonexistent/netns/xyz"), || 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/netns/xyz"), "{text}");
        assert!(matches!(err, NetnsError::Open { .. }));
    }

    #[test]
    fn a_file_that_is_not_a_netns_is_refused() {
        // /proc/self/status opens fine but is not a namespace: setns fails.
        let err = run_in_netns(Path::new("/proc/self/status"), || 1).unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
        assert!(err.to_string().contains("/proc/self/status"));
    }

    #[test]
    fn own_netns_runs_the_closure_and_returns_its_value() {
        // Entering our own namespace needs CAP_SYS_ADMIN; tolerate its absence.
        match run_in_netns(Path::new("/proc/self/ns/net"), || 42) {
            Ok(v) => assert_eq!(v, 42),
            Err(NetnsError::Enter { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn panics_inside_are_reported_not_propagated() {
        let res = run_in_netns(Path::new("/proc/self/ns/net"), || -> u8 { panic!("boom") });
        match res {
            Err(NetnsError::Panicked { message, .. }) => assert_eq!(message, "boom"),
            Err(NetnsError::Enter { .. }) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }
}
