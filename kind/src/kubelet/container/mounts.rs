//! A container's filesystem: its own mount namespace whose root is a
//! tmpfs mirroring the harness's `/` (each top-level entry bind-mounted,
//! recursively), with the image's files and the pod's volumes bind-mounted
//! at their paths, then `chroot`ed into.
//!
//! Nothing is ever written to the harness's files: a directory that must
//! gain an entry (a mount point that does not exist) is first "shadowed" —
//! a tmpfs laid over it that re-binds each of its entries — and the entry is
//! created in the tmpfs. Network-namespace pins copied by the recursive
//! binds are detached, so a container never keeps another sandbox's netns
//! alive. Everything lives in the container's mount namespace and is gone
//! with its last process.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

/// One bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// A harness path (file or directory).
    pub source: PathBuf,
    /// The absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Everything the container's filesystem is made of.
#[derive(Debug, Clone, Default)]
pub struct RootSpec {
    /// An empty harness directory for the tmpfs that holds the root (only
    /// the container's mount namespace ever sees its content).
    pub work: PathBuf,
    /// An image directory whose files appear at their paths.
    pub image: Option<PathBuf>,
    /// Volume mounts, applied after the image's files, shallowest first.
    pub mounts: Vec<Mount>,
    /// The working directory (`/` when none).
    pub workdir: Option<String>,
}

/// Why the container's filesystem could not be set up; names the path.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct MountError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl MountError {
    /// The setup task died (a panic): reported, never propagated.
    pub fn panicked(e: impl std::fmt::Display) -> MountError {
        MountError {
            what: "setting up the container filesystem failed in",
            path: PathBuf::from("<kubelet task>"),
            source: io::Error::other(e.to_string()),
        }
    }
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sys<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MountError + 'a {
    move |e| MountError {
        what,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Builds the filesystem on a fresh thread (namespaces are per thread),
/// spawns `cmd` from it (the child inherits the namespace and the root) and
/// returns the child. The thread is discarded.
pub fn spawn(spec: RootSpec, mut cmd: Command) -> Result<Child, MountError> {
    let work = spec.work.clone();
    let thread = std::thread::Builder::new()
        .name("container-fs".into())
        .spawn(move || -> Result<Child, MountError> {
            let root = build(&spec)?;
            nix::unistd::chroot(&root).map_err(sys("chroot into", &root))?;
            let dir = spec.workdir.clone().unwrap_or_else(|| "/".into());
            std::env::set_current_dir(&dir).map_err(err("entering the working directory", Path::new(&dir)))?;
            cmd.spawn().map_err(err("starting the container process in", &root))
        })
        .map_err(err("starting a thread for", &work))?;
    thread.join().unwrap_or_else(|_| {
        Err(MountError {
            what: "the container-fs thread panicked for",
            path: work,
            source: io::Error::other("panic"),
        })
    })
}

/// The mount work of [`spawn`], on the calling (throw-away) thread; returns
/// the root to `chroot` into.
fn build(spec: &RootSpec) -> Result<PathBuf, MountError> {
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS) for", &spec.work))?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .or_else(|_| mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none))
        .map_err(sys("making mounts private under", Path::new("/")))?;
    mount(
        Some("tmpfs"),
        &spec.work,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(sys("mounting a tmpfs on", &spec.work))?;
    let mut fs = Fs {
        work: spec.work.clone(),
        root: spec.work.join("root"),
        owned: HashSet::new(),
        stashes: 0,
    };
    std::fs::create_dir(&fs.root).map_err(err("creating", &fs.root))?;
    fs.owned.insert(fs.root.clone());
    mirror(Path::new("/"), &fs.root)?;
    detach_netns_pins(&fs.root);
    if let Some(image) = &spec.image {
        fs.overlay(image, "/")?;
    }
    let mut mounts = spec.mounts.clone();
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    for m in &mounts {
        let is_dir = std::fs::metadata(&m.source)
            .map_err(err("volume source", &m.source))?
            .is_dir();
        let target = fs.ensure(&m.target, if is_dir { Kind::Dir } else { Kind::File })?;
        bind(&m.source, &target, is_dir)?;
        if m.read_only {
            read_only(&target)?;
        }
    }
    Ok(fs.root)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

struct Fs {
    work: PathBuf,
    root: PathBuf,
    /// Directories whose content is a tmpfs of ours (writable without
    /// touching the harness's files).
    owned: HashSet<PathBuf>,
    stashes: u32,
}

impl Fs {
    /// The harness path of container path `path` (symlinks resolved inside
    /// the root), created as `kind` when missing, parents as directories.
    fn ensure(&mut self, path: &str, kind: Kind) -> Result<PathBuf, MountError> {
        let mut pending: Vec<OsString> = components(Path::new(path))?;
        pending.reverse();
        let mut cur = self.root.clone();
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                if cur != self.root {
                    cur.pop();
                }
                continue;
            }
            let next = cur.join(&name);
            match std::fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(err("too many symlinks in", Path::new(path))(io::Error::other("loop")));
                    }
                    let link = std::fs::read_link(&next).map_err(err("reading link", &next))?;
                    let mut more = components(&link)?;
                    more.reverse();
                    pending.extend(more);
                    if link.is_absolute() {
                        cur = self.root.clone();
                    }
                }
                Ok(_) => cur = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let last = pending.is_empty();
                    let want = if last { kind } else { Kind::Dir };
                    self.create(&cur, &name, want)?;
                    cur = next;
                }
                Err(e) => return Err(err("looking up", &next)(e)),
            }
        }
        Ok(cur)
    }

    /// Creates `parent/name` in a directory of ours, shadowing `parent`
    /// first when its content is the harness's.
    fn create(&mut self, parent: &Path, name: &OsString, kind: Kind) -> Result<(), MountError> {
        if !self.owned.contains(parent) {
            self.shadow(parent)?;
        }
        let path = parent.join(name);
        match kind {
            Kind::Dir => {
                std::fs::create_dir(&path).map_err(err("creating mount point", &path))?;
                self.owned.insert(path);
            }
            Kind::File => {
                std::fs::File::create(&path).map_err(err("creating mount point", &path))?;
            }
        }
        Ok(())
    }

    /// Lays a tmpfs over `dir` holding binds of its entries, so entries can
    /// be added without writing to the harness's directory.
    fn shadow(&mut self, dir: &Path) -> Result<(), MountError> {
        let none: Option<&str> = None;
        self.stashes += 1;
        let stash = self.work.join(format!("stash-{}", self.stashes));
        std::fs::create_dir(&stash).map_err(err("creating", &stash))?;
        mount(Some(dir), &stash, none, MsFlags::MS_BIND | MsFlags::MS_REC, none).map_err(sys("stashing", dir))?;
        let mode = std::fs::metadata(dir).map(|m| m.mode() & 0o7777).unwrap_or(0o755);
        let opts = format!("mode={mode:o}");
        mount(Some("tmpfs"), dir, Some("tmpfs"), MsFlags::empty(), Some(opts.as_str()))
            .map_err(sys("shadowing", dir))?;
        mirror(&stash, dir)?;
        detach_netns_pins(dir);
        let _ = umount2(&stash, MntFlags::MNT_DETACH);
        self.owned.insert(dir.to_path_buf());
        Ok(())
    }

    /// The image's tree over the root: an entry missing in the root is
    /// bound whole; directories present in both are merged.
    fn overlay(&mut self, image_dir: &Path, at: &str) -> Result<(), MountError> {
        let entries = std::fs::read_dir(image_dir).map_err(err("reading image directory", image_dir))?;
        for entry in entries {
            let entry = entry.map_err(err("reading image directory", image_dir))?;
            let source = entry.path();
            let target = format!("{}/{}", at.trim_end_matches('/'), entry.file_name().to_string_lossy());
            let meta = std::fs::symlink_metadata(&source).map_err(err("reading", &source))?;
            if meta.file_type().is_symlink() {
                // Links of the image (e.g. `bin -> usr/bin`) are kept only
                // where the root has nothing at that path.
                let parent = self.ensure(at, Kind::Dir)?;
                let path = parent.join(entry.file_name());
                if std::fs::symlink_metadata(&path).is_err() {
                    if !self.owned.contains(&parent) {
                        self.shadow(&parent)?;
                    }
                    let link = std::fs::read_link(&source).map_err(err("reading link", &source))?;
                    std::os::unix::fs::symlink(&link, &path).map_err(err("linking", &path))?;
                }
                continue;
            }
            let is_dir = meta.is_dir();
            let parent = self.ensure(at, Kind::Dir)?;
            let existing = std::fs::metadata(parent.join(entry.file_name())).ok();
            match existing {
                Some(m) if m.is_dir() && is_dir => self.overlay(&source, &target)?,
                Some(m) if m.is_dir() != is_dir => {
                    return Err(err("image entry conflicts with the root at", Path::new(&target))(
                        io::Error::other(if is_dir {
                            "a directory over a file"
                        } else {
                            "a file over a directory"
                        }),
                    ));
                }
                _ => {
                    let path = self.ensure(&target, if is_dir { Kind::Dir } else { Kind::File })?;
                    bind(&source, &path, is_dir)?;
                }
            }
        }
        Ok(())
    }
}

/// Normal components of `path` (root and `.` dropped, `..` kept).
fn components(path: &Path) -> Result<Vec<OsString>, MountError> {
    Ok(path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect())
}

/// Re-creates each entry of `src` in `dst` (a fresh tmpfs): directories
/// and files bind-mounted (recursively), symlinks copied.
fn mirror(src: &Path, dst: &Path) -> Result<(), MountError> {
    let entries = std::fs::read_dir(src).map_err(err("reading", src))?;
    for entry in entries {
        let entry = entry.map_err(err("reading", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(err("reading", &from))?;
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&from).map_err(err("reading link", &from))?;
            std::os::unix::fs::symlink(&link, &to).map_err(err("linking", &to))?;
        } else if meta.is_dir() {
            std::fs::create_dir(&to).map_err(err("creating", &to))?;
            let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777));
            bind(&from, &to, true)?;
        } else {
            std::fs::File::create(&to).map_err(err("creating", &to))?;
            bind(&from, &to, false)?;
        }
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<(), MountError> {
    let none: Option<&str> = None;
    let flags = if recursive {
        MsFlags::MS_BIND | MsFlags::MS_REC
    } else {
        MsFlags::MS_BIND
    };
    mount(Some(source), target, none, flags, none).map_err(sys("bind-mounting onto", target))
}

/// Remounts a bind read-only, keeping the flags the kernel locks in a
/// user namespace (nosuid, nodev, noexec).
fn read_only(target: &Path) -> Result<(), MountError> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let none: Option<&str> = None;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Ok(st) = statvfs(target) {
        let f = st.flags();
        for (has, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(has) {
                flags |= ms;
            }
        }
    }
    mount(none, target, none, flags, none).map_err(sys("remounting read-only", target))
}

/// Detaches every `nsfs` mount (a namespace pin) under `dir` in this
/// thread's mount namespace: the copies made by recursive binds would
/// otherwise keep those namespaces alive for as long as the container.
fn detach_netns_pins(dir: &Path) {
    let Ok(info) = std::fs::read("/proc/thread-self/mountinfo") else {
        return;
    };
    let mut pins: Vec<PathBuf> = info
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let text = String::from_utf8_lossy(line);
            let (left, right) = text.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let point = left.split(' ').nth(4)?;
            (fstype == "nsfs").then(|| PathBuf::from(linux_ns::mounts::unescape_mountinfo(point)))
        })
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first, so a pin under another pin's directory goes first.
    pins.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().as_bytes().len()));
    for pin in pins {
        let _ = umount2(&pin, MntFlags::MNT_DETACH);
    }
}
