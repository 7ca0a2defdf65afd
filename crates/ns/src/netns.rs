//! Network namespaces pinned to files, and running work inside them.
//!
//! [`Netns::create`] makes a namespace on a throw-away thread that calls
//! `unshare(CLONE_NEWNET)` and bind-mounts its `/proc/self/task/<tid>/ns/net`
//! over an empty file: the mount keeps the namespace alive ("pins" it) until
//! it is unmounted. That is what `ip netns add` does, except that the file can
//! live anywhere (a test's scratch dir, a cluster root), so nothing has to be
//! written to `/run/netns`.
//!
//! Work runs inside a namespace in one of two ways:
//! - [`Netns::run`] / [`run_in_netns`]: a closure on a fresh OS thread that
//!   enters the namespace and is discarded afterwards.
//! - [`Netns::command`]: a [`Command`] whose `pre_exec` hook calls `setns(2)`
//!   in the forked child, just before `exec`. Only the child moves; the
//!   calling thread never changes namespace.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::NsError;
use crate::thread::on_fresh_thread;

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
    /// On failure nothing is left behind.
    pub fn create(path: &Path) -> Result<Self, NsError> {
        let path = path.to_path_buf();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| NsError::CreateFile {
                path: path.clone(),
                source,
            })?;
        let target = path.clone();
        let pinned = on_fresh_thread("netns-create", &path, move || {
            // This thread is discarded right after: it is the only one that
            // ever lives in the new namespace.
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NsError::Unshare {
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
            .map_err(|source| NsError::Pin { path: target, source })
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
    pub fn open(path: &Path) -> Result<Self, NsError> {
        let fd = open_fd(path)?;
        Ok(Self::from_parts(path.to_path_buf(), fd, false))
    }

    /// A brand-new network namespace (only `lo`, down) kept alive by this
    /// handle's descriptor and whatever runs inside: nothing is pinned, so
    /// nothing is left to clean up. Its path, `/proc/<pid>/fd/<fd>`, is valid
    /// for this process and its children while a clone of the handle lives.
    pub fn unpinned() -> Result<Self, NsError> {
        let label = Path::new("<new netns>");
        let fd = on_fresh_thread("netns-new", label, move || {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| NsError::Unshare {
                path: label.to_path_buf(),
                source,
            })?;
            open_fd(Path::new("/proc/thread-self/ns/net"))
        })?;
        let path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()));
        Ok(Self::from_parts(path, fd, false))
    }

    /// A handle on an already open namespace descriptor (from a socket's
    /// `SIOCGSKNS`, a pidfd, ...), not owned. `label` stands in for the path
    /// in errors and [`Netns::path`].
    pub fn from_fd(fd: OwnedFd, label: impl Into<PathBuf>) -> Self {
        Self::from_parts(label.into(), fd, false)
    }

    /// The network namespace of the calling thread, not owned.
    pub fn current() -> Result<Self, NsError> {
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

    /// The open namespace descriptor (valid while `self` lives).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.fd.as_fd()
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
    /// returns its result. The thread is discarded afterwards. Blocking: the
    /// caller waits for `f`.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NsError> {
        let ns = self.clone();
        on_fresh_thread("netns-run", self.path(), move || {
            ns.enter_current_thread()?;
            Ok(f())
        })
    }

    /// Moves the *calling thread* into this namespace. Only for threads that
    /// are discarded afterwards (see [`Netns::run`]).
    pub(crate) fn enter_current_thread(&self) -> Result<(), NsError> {
        setns(&*self.inner.fd, CloneFlags::CLONE_NEWNET).map_err(|source| NsError::Enter {
            path: self.inner.path.clone(),
            source,
        })
    }

    /// Unpins an owned namespace: unmounts the pin and removes the file. The
    /// namespace itself lives on while processes or descriptors still refer
    /// to it. Idempotent; a no-op for handles that do not own the namespace.
    pub fn delete(&self) -> Result<(), NsError> {
        if !self.inner.owned || self.inner.deleted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        unpin(&self.inner.path)
    }
}

/// Runs `f` on a fresh OS thread that has entered the network namespace at
/// `netns_path`, and returns its result (see [`Netns::run`]).
pub fn run_in_netns<T: Send + 'static>(
    netns_path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NsError> {
    Netns::open(netns_path)?.run(f)
}

fn open_fd(path: &Path) -> Result<OwnedFd, NsError> {
    File::open(path).map(OwnedFd::from).map_err(|source| NsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Unmounts a pin file (if mounted) and removes it (if present).
fn unpin(path: &Path) -> Result<(), NsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point; ENOENT: already gone.
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NsError::Unmount {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::testing::{Scratch, privileged, privileged_scratch};

    /// Asserts `err` is of the kind `is_kind` accepts and names `path`.
    fn assert_names(err: &NsError, is_kind: fn(&NsError) -> bool, path: &str) {
        assert!(is_kind(err), "{err}");
        assert!(err.to_string().contains(path), "{err}");
    }

    /// A new namespace pinned at `<scratch>/ns`; `None` when `test` is
    /// skipped (not root).
    fn pinned(test: &str) -> Option<(Scratch, PathBuf, Netns)> {
        let dir = privileged_scratch(test)?;
        let pin = dir.join("ns");
        let ns = Netns::create(&pin).unwrap();
        Some((dir, pin, ns))
    }

    #[test]
    fn a_missing_netns_path_is_named_in_the_error() {
        let err = run_in_netns(Path::new("/nonexistent/netns/xyz"), || 1).unwrap_err();
        assert_names(&err, |e| matches!(e, NsError::Open { .. }), "/nonexistent/netns/xyz");
    }

    #[test]
    fn a_file_that_is_not_a_netns_is_refused() {
        // /proc/self/status opens fine but is not a namespace: setns fails.
        let err = run_in_netns(Path::new("/proc/self/status"), || 1).unwrap_err();
        assert_names(&err, |e| matches!(e, NsError::Enter { .. }), "/proc/self/status");
    }

    #[test]
    fn panics_inside_are_reported_not_propagated() {
        if !privileged("netns::panics_inside") {
            return;
        }
        let res = run_in_netns(Path::new("/proc/self/ns/net"), || -> u8 { panic!("boom") });
        match res {
            Err(NsError::Panicked { message, path }) => {
                assert_eq!(message, "boom");
                assert_eq!(path, Path::new("/proc/self/ns/net"));
            }
            other => panic!("unexpected: {other:?}"),
        }
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn create_pins_a_fresh_namespace_that_work_and_commands_enter() {
        let Some((_dir, pin, ns)) = pinned("netns::create_pins") else {
            return;
        };
        assert!(ns.is_owned());
        let host = inode(Path::new("/proc/self/ns/net"));
        let pinned = inode(&pin);
        assert_ne!(pinned, host, "the pin must be a new namespace");
        assert!(crate::mounts::is_mounted(&pin));
        // A closure runs inside it; the caller's thread stays where it was.
        let seen = ns.run(|| inode(Path::new("/proc/thread-self/ns/net"))).unwrap();
        assert_eq!(seen, pinned);
        assert_eq!(inode(Path::new("/proc/thread-self/ns/net")), host);
        // So does a command, via setns before exec.
        let out = ns.command("readlink").arg("/proc/self/ns/net").output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("net:[{pinned}]"));
        // A second pin at the same path is refused and leaves the first intact.
        let err = Netns::create(&pin).unwrap_err();
        assert!(matches!(err, NsError::CreateFile { .. }), "{err}");
        assert_eq!(inode(&pin), pinned);
        // delete unpins and is idempotent; a non-owning handle never deletes.
        Netns::open(&pin).unwrap().delete().unwrap();
        assert!(pin.exists());
        ns.delete().unwrap();
        ns.delete().unwrap();
        assert!(!pin.exists());
        assert!(!crate::mounts::is_mounted(&pin));
    }

    #[test]
    fn dropping_the_last_owner_unpins() {
        let Some((_dir, pin, ns)) = pinned("netns::dropping_unpins") else {
            return;
        };
        let clone = ns.clone();
        drop(ns);
        assert!(pin.exists(), "a clone still owns it");
        drop(clone);
        assert!(!pin.exists());
        assert!(!crate::mounts::is_mounted(&pin));
    }

    #[test]
    fn a_pin_in_a_missing_directory_leaves_nothing() {
        let err = Netns::create(Path::new("/nonexistent/dir/ns")).unwrap_err();
        assert_names(&err, |e| matches!(e, NsError::CreateFile { .. }), "/nonexistent/dir/ns");
    }

    #[test]
    fn an_unpinned_namespace_is_new_and_lives_with_its_handle() {
        if !privileged("netns::unpinned") {
            return;
        }
        let host = inode(Path::new("/proc/self/ns/net"));
        let ns = Netns::unpinned().unwrap();
        assert!(!ns.is_owned());
        let inside = ns.run(|| inode(Path::new("/proc/thread-self/ns/net"))).unwrap();
        assert_ne!(inside, host);
        assert_eq!(inode(ns.path()), inside);
        assert_eq!(inode(Path::new("/proc/thread-self/ns/net")), host);
        // Children reach it through the path too.
        let out = ns.command("readlink").arg(ns.path()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("net:[{inside}]"));
        // Nothing pinned, nothing to delete.
        ns.delete().unwrap();
        // A descriptor of it, wrapped, enters the same namespace.
        let fd = OwnedFd::from(File::open(ns.path()).unwrap());
        let wrapped = Netns::from_fd(fd, "<test fd>");
        assert_eq!(wrapped.path(), Path::new("<test fd>"));
        assert_eq!(
            wrapped.run(|| inode(Path::new("/proc/thread-self/ns/net"))).unwrap(),
            inside
        );
    }
}
