//! Network namespaces pinned to files, and running work inside them.
//!
//! A namespace is created on a throw-away thread that calls
//! `unshare(CLONE_NEWNET)` and bind-mounts its `/proc/self/task/<tid>/ns/net`
//! over an empty file: the mount keeps the namespace alive ("pins" it) until
//! it is unmounted. That is what `ip netns add` does, except that the file can
//! live anywhere — the harness keeps them under the cluster root, so nothing
//! is written to `/run/netns` and every namespace disappears with its tree.
//!
//! Work runs inside a namespace in one of two ways:
//! - [`Netns::command`]: a [`Command`] whose `pre_exec` hook calls `setns(2)`
//!   in the forked child, just before `exec`. Only the child moves; the
//!   calling thread never changes namespace. (`nsenter --net=<path>` would do
//!   the same from the outside.)
//! - [`Netns::run`]: a closure on a fresh OS thread that enters the namespace
//!   and is discarded afterwards, so no other code ever runs in it by accident.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Why a network namespace could not be created, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
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
        /// The pin file.
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
    /// `setns(CLONE_NEWNET)` failed (not a netns file, or no privilege).
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
    /// The helper thread could not be spawned, or panicked.
    #[error("helper thread for netns {}: {reason}", path.display())]
    Thread {
        /// The namespace path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A handle on a network namespace: its path and an open file descriptor.
///
/// Clones share the descriptor. A namespace made by [`Netns::create`] is
/// *owned*: it is unpinned (unmounted, file removed) by [`Netns::delete`], or
/// best-effort when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    owned: bool,
    deleted: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.owned && !self.deleted.swap(true, Ordering::SeqCst) {
            let _ = unpin(&self.path);
        }
    }
}

impl Netns {
    /// Creates a new, empty network namespace pinned at `path` (which must
    /// not exist; its parent must). Only `lo` exists in it, and it is down.
    pub fn create(path: &Path) -> Result<Self, NetnsError> {
        let path = path.to_path_buf();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| NetnsError::CreateFile {
                path: path.clone(),
                source,
            })?;
        let target = path.clone();
        let pinned = std::thread::Builder::new()
            .name("netns-create".to_owned())
            .spawn(move || -> Result<(), NetnsError> {
                // This thread is discarded right after: it is the only one
                // that ever lives in the new namespace.
                unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare {
                    path: target.clone(),
                    source,
                })?;
                let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                mount(
                    Some(own.as_str()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| NetnsError::Pin { path: target, source })
            })
            .map_err(|e| NetnsError::Thread {
                path: path.clone(),
                reason: format!("spawn: {e}"),
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(NetnsError::Thread {
                    path: path.clone(),
                    reason: "panicked".to_owned(),
                })
            });
        if let Err(e) = pinned {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        match open_fd(&path) {
            Ok(fd) => Ok(Self::from_parts(path, fd, true)),
            Err(e) => {
                let _ = unpin(&path);
                Err(e)
            }
        }
    }

    /// Opens an existing namespace file (`/run/netns/x`, `/proc/<pid>/ns/net`,
    /// a pin made by [`Netns::create`]). The handle does not own it.
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let fd = open_fd(path)?;
        Ok(Self::from_parts(path.to_path_buf(), fd, false))
    }

    /// The network namespace of the calling thread, not owned.
    pub fn current() -> Result<Self, NetnsError> {
        Self::open(Path::new(&format!("/proc/self/task/{}/ns/net", nix::unistd::gettid())))
    }

    fn from_parts(path: PathBuf, fd: OwnedFd, owned: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                fd: Arc::new(fd),
                owned,
                deleted: AtomicBool::new(false),
            }),
        }
    }

    /// The namespace's path (what to pass as `CNI_NETNS` or `nsenter --net=`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this handle pinned the namespace itself.
    pub fn is_owned(&self) -> bool {
        self.inner.owned
    }

    /// A [`Command`] for `program` that runs inside this namespace (the child
    /// calls `setns(2)` between `fork` and `exec`). Mount namespace, `/sys`
    /// and everything else stay the caller's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter_on_exec(&mut cmd);
        cmd
    }

    /// Makes an existing [`Command`] enter this namespace when spawned.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let fd = Arc::clone(&self.inner.fd);
        // SAFETY: the hook runs in the forked child before exec and only
        // performs the setns(2) system call on a descriptor kept open by the
        // captured Arc; it allocates nothing and takes no locks, so it is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and
    /// returns its result. The thread is discarded afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
        let fd = Arc::clone(&self.inner.fd);
        let path = self.inner.path.clone();
        let thread_path = path.clone();
        let handle = std::thread::Builder::new()
            .name("netns-run".to_owned())
            .spawn(move || -> Result<T, NetnsError> {
                setns(&*fd, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                    path: thread_path,
                    source,
                })?;
                Ok(f())
            })
            .map_err(|e| NetnsError::Thread {
                path: path.clone(),
                reason: format!("spawn: {e}"),
            })?;
        handle.join().unwrap_or_else(|_| {
            Err(NetnsError::Thread {
                path,
                reason: "work inside the namespace panicked".to_owned(),
            })
        })
    }

    /// Unpins an owned namespace: unmounts the pin and removes the file. The
    /// namespace itself lives on while processes or descriptors still refer
    /// to it. Idempotent; a no-op for handles that do not own the namespace.
    pub fn delete(&self) -> Result<(), NetnsError> {
        if !self.inner.owned || self.inner.deleted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        unpin(&self.inner.path)
    }
}

fn open_fd(path: &Path) -> Result<OwnedFd, NetnsError> {
    File::open(path).map(OwnedFd::from).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Unmounts a pin file (if mounted) and removes it (if present).
fn unpin(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point; ENOENT: already gone.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NetnsError::Unmount {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is currently a mount point in this process's mount
/// namespace (read from `/proc/self/mountinfo`). Used by leak checks.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| unescape_mountinfo(mount_point) == wanted)
    })
}

/// Mount points under `dir` (prefix match), for leak checks.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// three-digit octal (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\"), r"/end\");
    }

    #[test]
    fn opening_a_missing_netns_names_the_path() {
        let err = Netns::open(Path::new("/nonexistent/ns/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns/x"), "{err}");
    }
}
