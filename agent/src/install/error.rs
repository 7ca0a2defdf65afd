//! The installer's errors. Each names the file and the reason; the pass-level
//! wrappers carry Istio's prefixes ("copy binaries: …") so logs read the same.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong with one file.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A bounded read of a configured file failed: missing, not a regular
    /// file, too large or too slow (the message names the file).
    #[error("read {0}")]
    Read(#[from] istio_cni::bounded::ReadError),
    /// A file's content is unusable (not JSON, wrong shape, not UTF-8, …); the file was not touched.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A setting or the environment is unusable (no API server address, bad selector YAML, …).
    #[error("{0}")]
    Setting(String),
}

impl Cause {
    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Cause + 'a {
        move |source| Cause::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The file is missing (a plain or a bounded read said so).
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            Cause::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Cause::Read(e) => e.is_not_found(),
            _ => false,
        }
    }

    pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> Cause {
        Cause::BadFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Why an install pass, a validation or a cleanup failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("copy binaries: {0}")]
    CopyBinaries(Cause),
    #[error("write kubeconfig: {0}")]
    WriteKubeconfig(Cause),
    #[error("create CNI config file: {0}")]
    CreateCniConfig(Cause),
    /// No usable primary config yet (none valid, or CNI_CONF_NAME and its twin
    /// missing): wait for a conf-dir event and try again.
    #[error("create CNI config file: no primary CNI network config in {}: {reason}", dir.display())]
    NoPrimaryConfig { dir: PathBuf, reason: String },
    /// docs/agent.md#validity-check: our entry is not (or no longer) in place.
    #[error("CNI config {}: {reason}", path.display())]
    NotValid { path: PathBuf, reason: String },
    #[error("cleanup: {0}")]
    Cleanup(Cause),
    /// Cleanup ran to the end but files of ours are left; the report says
    /// what was removed and what could not be.
    #[error("cleanup: could not remove everything of ours:\n{0}")]
    Incomplete(Box<super::UninstallReport>),
}
