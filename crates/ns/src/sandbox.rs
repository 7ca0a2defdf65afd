//! A private mount namespace for the calling (throw-away) thread, with bind
//! mounts that mask files for the commands it spawns.
//!
//! On Linux a new process inherits the namespaces of the *thread* that
//! creates it, so a command spawned from a sandboxed thread sees the masks
//! while the rest of the process does not. Which files to mask is the
//! caller's policy (the plugin masks NSS configuration and scopes the
//! iptables lock); this module only applies it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// What to do when a bind target does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Leave it out: nothing to mask.
    Skip,
    /// Create an empty regular file and bind over it.
    CreateFile,
}

/// One bind mount: `source` appears at `target` inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    /// Remount the target read-only.
    pub read_only: bool,
    pub if_missing: IfMissing,
}

impl Bind {
    /// `source` over `target`, writable, skipped when `target` is missing.
    pub fn new(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            read_only: false,
            if_missing: IfMissing::Skip,
        }
    }

    /// Remounts the target read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Creates the target as an empty file when it is missing.
    pub fn create_target(mut self) -> Self {
        self.if_missing = IfMissing::CreateFile;
        self
    }
}

/// The mounts a sandbox applies, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSandbox {
    pub binds: Vec<Bind>,
}

/// Why the sandbox could not be set up; names the step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: nix::Error,
    },
    #[error("creating bind target {}: {source}", path.display())]
    CreateTarget {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn sys(step: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    move |source| SandboxError::Sys {
        step: step.into(),
        source,
    }
}

impl MountSandbox {
    /// A sandbox with these binds.
    pub fn new(binds: impl IntoIterator<Item = Bind>) -> Self {
        Self {
            binds: binds.into_iter().collect(),
        }
    }

    /// Moves the calling thread into a private copy of its mount namespace
    /// and applies the binds. Only for threads that are discarded afterwards:
    /// the thread cannot go back. On error the thread may be half set up
    /// (never the host: every mount lands in the private copy).
    pub fn enter_current_thread(&self) -> Result<(), SandboxError> {
        unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
        let none: Option<&str> = None;
        // Keep our mounts from propagating back to the host: rprivate, or
        // rslave where private is refused.
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .or_else(|_| mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none))
            .map_err(sys("remount / rprivate/rslave"))?;
        for bind in &self.binds {
            apply(bind)?;
        }
        Ok(())
    }
}

fn apply(bind: &Bind) -> Result<(), SandboxError> {
    let none: Option<&str> = None;
    let target = bind.target.as_path();
    if !target.exists() {
        match bind.if_missing {
            IfMissing::Skip => return Ok(()),
            IfMissing::CreateFile => create_file(target)?,
        }
    }
    let what = || format!("bind {} over {}", bind.source.display(), target.display());
    mount(Some(bind.source.as_path()), target, none, MsFlags::MS_BIND, none).map_err(sys(what()))?;
    if bind.read_only {
        mount(
            none,
            target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )
        .map_err(sys(format!("remount {} read-only", target.display())))?;
    }
    Ok(())
}

fn create_file(path: &Path) -> Result<(), SandboxError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(drop)
        .map_err(|source| SandboxError::CreateTarget {
            path: path.to_path_buf(),
            source,
        })
}
