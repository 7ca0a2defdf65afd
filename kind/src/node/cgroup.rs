//! Pod cgroups (cgroup v2), when this process may create them.
//!
//! Tools that find a pod's processes through `/proc` (Istio's repair
//! controller among them) match the pod UID in `/proc/<pid>/cgroup`, as
//! kubelet's cgroupfs driver lays it out: `.../kubepods/pod<uid>`. The
//! harness reproduces that under a cgroup of its own, below the one this
//! process is in. Where cgroup v2 is not mounted or not writable (rootless
//! runs, read-only `/sys/fs/cgroup`, no delegation) it is skipped: pods then
//! simply stay in the harness's cgroup.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster's cgroup (`<own cgroup>/<name>`) with its `kubepods` child.
#[derive(Debug, Clone)]
pub struct ClusterCgroup {
    dir: PathBuf,
}

impl ClusterCgroup {
    /// Creates `<own cgroup>/<name>/kubepods` and checks that a child process
    /// can join it; `None` (after removing what was made) when any of that is
    /// not possible here.
    pub fn create(name: &str) -> Option<ClusterCgroup> {
        let parent = own_cgroup_dir()?;
        let dir = parent.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            tracing::debug!("pod cgroups disabled: creating {}: {e}", dir.display());
            return None;
        }
        let cgroup = ClusterCgroup { dir };
        match cgroup.probe() {
            Ok(()) => Some(cgroup),
            Err(e) => {
                tracing::debug!("pod cgroups disabled: {e}");
                let _ = cgroup.remove();
                None
            }
        }
    }

    /// Creating a cgroup can succeed where moving a process into it does not
    /// (no write access to the common ancestor): try it once with `true`.
    fn probe(&self) -> io::Result<()> {
        let kubepods = self.kubepods();
        std::fs::create_dir(&kubepods)?;
        let probe = kubepods.join("probe");
        std::fs::create_dir(&probe)?;
        let mut cmd = Command::new("true");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        join_on_exec(&mut cmd, &probe)?;
        let status = cmd.spawn().and_then(|mut child| child.wait());
        let removed = remove_pod_cgroup(&probe);
        status?;
        removed
    }

    /// The cluster's cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<cluster>/kubepods`: pod cgroups go below it.
    pub fn kubepods(&self) -> PathBuf {
        self.dir.join("kubepods")
    }

    /// The cgroup of the pod with this UID (`kubepods/pod<uid>`, not created).
    pub fn pod(&self, uid: &str) -> PathBuf {
        self.kubepods().join(format!("pod{uid}"))
    }

    /// Removes the pod cgroups left, `kubepods` and the cluster's cgroup.
    pub fn remove(&self) -> io::Result<()> {
        let kubepods = self.kubepods();
        if let Ok(entries) = std::fs::read_dir(&kubepods) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_pod_cgroup(&entry.path())?;
                }
            }
        }
        for dir in [kubepods.as_path(), self.dir.as_path()] {
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The directory of this process's cgroup v2 (`0::<path>` in
/// `/proc/self/cgroup`) under the cgroup2 mount, when there is one.
fn own_cgroup_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?.trim();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id parent major:minor root mountpoint options... - fstype source superoptions
    let mount = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
    })?;
    let (root, mountpoint) = mount;
    // The mount shows the hierarchy from `root`; our cgroup must be inside it.
    let relative = Path::new(path).strip_prefix(&root).ok()?;
    Some(Path::new(&mountpoint).join(relative))
}

/// Makes the child join the cgroup `dir` before it execs (so that whatever it
/// forks is in it too). Fails the spawn when the move fails.
pub fn join_on_exec(cmd: &mut Command, dir: &Path) -> io::Result<()> {
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: only async-signal-safe calls (open, write, close) on memory
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Kills whatever is left in a pod cgroup and removes it. A missing cgroup
/// is not an error.
pub fn remove_pod_cgroup(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (Linux 5.14) kills every process at once; older kernels
    // get each listed pid killed.
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err()
        && let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs"))
    {
        for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    // Killed processes leave the cgroup asynchronously: retry while busy.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
    }
}
