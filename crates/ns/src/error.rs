//! The error of every namespace operation; each names the namespace file.

use std::io;
use std::path::PathBuf;

/// Why a namespace could not be created, entered or removed, or why work
/// inside it could not run.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// The file the namespace is pinned to could not be created.
    #[error("creating netns file {}: {source}", path.display())]
    CreateFile {
        /// The pin file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `unshare(CLONE_NEWNET)` failed (typically: no `CAP_SYS_ADMIN`).
    #[error("unshare(CLONE_NEWNET) for netns {}: {source}", path.display())]
    Unshare {
        /// The pin file (or a description when the namespace is not pinned).
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The bind mount that pins the namespace failed.
    #[error("bind-mounting the new netns onto {}: {source}", path.display())]
    Pin {
        /// The pin file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The namespace file could not be opened.
    #[error("opening netns {}: {source}", path.display())]
    Open {
        /// The namespace path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `setns(CLONE_NEWNET)` was refused (not a netns file, or no privilege).
    #[error("entering netns {}: setns: {source}", path.display())]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Unmounting the pin failed.
    #[error("unmounting netns {}: {source}", path.display())]
    Unmount {
        /// The pin file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Removing the pin file failed.
    #[error("removing netns file {}: {source}", path.display())]
    Remove {
        /// The pin file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The dedicated thread could not be created.
    #[error("spawning a thread for netns {}: {source}", path.display())]
    Spawn {
        /// The namespace path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The work panicked on the namespace thread.
    #[error("work inside netns {} panicked: {message}", path.display())]
    Panicked {
        /// The namespace path.
        path: PathBuf,
        /// The panic payload, when it was a string.
        message: String,
    },
}
