//! Rootless start: an ordinary user's process enters a user namespace of its
//! own, mapping its uid and gid to root (plus the user's subordinate ranges
//! from `/etc/subuid` and `/etc/subgid` where `newuidmap`/`newgidmap` can
//! map them, as `unshare --map-auto --map-root-user` does; else only its own
//! ids), then a network and a mount namespace owned by it, with loopback up.
//!
//! The kernel only lets a single-threaded process enter a user namespace, so
//! [`enter`] runs before any runtime or thread starts. Sockets bound before
//! stay in the namespace they were bound in: that is how `istio-cni-cluster
//! up` keeps its API server reachable from the user's other shells.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, User, fork, getgid, getuid};

/// `/etc/subuid` and `/etc/subgid` larger than this are not read.
const MAX_SUBID_FILE: u64 = 1 << 20;

/// A range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// How the ids of the new user namespace map to the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// root is the user; ids 1.. are the user's subordinate ranges.
    Subordinate { uids: IdRange, gids: IdRange },
    /// root is the user; no other id exists. `why` says why no ranges.
    Single { why: String },
}

/// Why the namespaces could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("the process runs {0} threads; only a single-threaded process can enter a user namespace")]
    Threads(usize),
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("bringing loopback up in the new network namespace: {0}")]
    Loopback(#[source] io::Error),
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> UsernsError {
    move |source| UsernsError::Sys { step, source }
}

/// The first range that `text` (the format of `/etc/subuid`: `owner:start:count`
/// lines, the owner a user name or a numeric uid) gives the user `name` or `id`.
pub fn subordinate_range(text: &str, name: Option<&str>, id: u32) -> Option<IdRange> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = Some(owner) == name || owner.parse::<u32>().is_ok_and(|o| o == id);
        let range = IdRange {
            start: start.trim().parse().ok()?,
            count: count.trim().parse().ok()?,
        };
        (ours && fields.next().is_none() && range.count > 0 && range.start.checked_add(range.count).is_some())
            .then_some(range)
    })
}

fn read_small(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(MAX_SUBID_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// The number of threads of this process.
fn threads() -> usize {
    read_small(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// The subordinate ranges of the user, or why there are none to use.
fn ranges(uid: Uid) -> Result<(IdRange, IdRange), String> {
    let name = User::from_uid(uid).ok().flatten().map(|u| u.name);
    let tool = |t: &str| {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        linux_ns::exec::find_in_path(t, &path).ok_or_else(|| format!("{t} is not installed (Debian: uidmap)"))
    };
    tool("newuidmap")?;
    tool("newgidmap")?;
    let range = |file: &str| {
        let text = read_small(Path::new(file)).map_err(|e| format!("reading {file}: {e}"))?;
        subordinate_range(&text, name.as_deref(), uid.as_raw()).ok_or_else(|| {
            let who = name.clone().unwrap_or_else(|| uid.to_string());
            format!("{file} gives {who} no range")
        })
    };
    Ok((range("/etc/subuid")?, range("/etc/subgid")?))
}

/// `newuidmap`/`newgidmap` arguments mapping root to `id` and 1.. to `range`.
fn map_args(pid: Pid, id: u32, range: IdRange) -> Vec<String> {
    [pid.as_raw() as u32, 0, id, 1, 1, range.start, range.count]
        .iter()
        .map(u32::to_string)
        .collect()
}

/// Enters a new user namespace (this user as root), then new network and
/// mount namespaces (mounts private, loopback up). Call it before any
/// thread starts; an error leaves the process where it was only when it
/// comes before the user namespace is entered (`Threads`, the first `Sys`).
pub fn enter() -> Result<Mapping, UsernsError> {
    let n = threads();
    if n > 1 {
        return Err(UsernsError::Threads(n));
    }
    let (uid, gid) = (getuid(), getgid());
    let mapping = match ranges(uid) {
        Ok((uids, gids)) => match enter_mapped(uid, gid, uids, gids)? {
            Ok(()) => Mapping::Subordinate { uids, gids },
            Err(why) => Mapping::Single { why },
        },
        Err(why) => {
            unshare(CloneFlags::CLONE_NEWUSER).map_err(sys("unshare(CLONE_NEWUSER)"))?;
            Mapping::Single { why }
        }
    };
    // Whatever newuidmap/newgidmap did not map, map now: only our own ids.
    map_single(uid, gid)?;
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNET | CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making the mounts private"))?;
    loopback_up().map_err(UsernsError::Loopback)?;
    Ok(mapping)
}

/// Sets `lo` up in this thread's network namespace (as `ip link set lo up`).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls take a pointer to an ifreq naming the interface,
    // which lives across the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Enters the user namespace while a child left outside maps the ranges
/// with the setuid helpers. The inner result says whether they did.
fn enter_mapped(uid: Uid, gid: Gid, uids: IdRange, gids: IdRange) -> Result<Result<(), String>, UsernsError> {
    let (go_read, go_write): (OwnedFd, OwnedFd) = nix::unistd::pipe().map_err(sys("pipe"))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the process is single-threaded (checked by `enter`), so the
    // child may allocate and spawn; it only runs the two helpers and exits.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(go_write);
            let mut go = [0u8; 1];
            let code = match nix::unistd::read(&go_read, &mut go) {
                Ok(1) => {
                    let run = |tool: &str, args: Vec<String>| {
                        Command::new(tool)
                            .args(args)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    };
                    let ok = run("newuidmap", map_args(parent, uid.as_raw(), uids))
                        && run("newgidmap", map_args(parent, gid.as_raw(), gids));
                    i32::from(!ok)
                }
                // The parent could not enter: nothing to map.
                _ => 2,
            };
            // SAFETY: leaves the forked child without running the parent's
            // exit handlers or destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(go_read);
            let entered = unshare(CloneFlags::CLONE_NEWUSER).map_err(sys("unshare(CLONE_NEWUSER)"));
            if entered.is_ok() {
                let _ = nix::unistd::write(&go_write, &[1]);
            }
            drop(go_write);
            let status = waitpid(child, None).map_err(sys("waiting for newuidmap/newgidmap"));
            entered?;
            Ok(match status? {
                WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!(
                    "newuidmap/newgidmap could not map the subordinate ranges ({other:?})"
                )),
            })
        }
    }
}

/// Maps root to the user's own uid and gid where nothing is mapped yet
/// (the only mapping an unprivileged process may write itself).
fn map_single(uid: Uid, gid: Gid) -> Result<(), UsernsError> {
    let unmapped = |path: &str| read_small(Path::new(path)).is_ok_and(|m| m.trim().is_empty());
    let write = |path: &'static str, text: String| {
        std::fs::write(path, text).map_err(|source| UsernsError::Write { path, source })
    };
    if unmapped("/proc/self/uid_map") {
        write("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
    }
    if unmapped("/proc/self/gid_map") {
        write("/proc/self/setgroups", "deny\n".into())?;
        write("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_range_by_name_or_uid() {
        let text = "alice:100000:65536\nbob:165536:65536\n1001:231072:1000\n";
        let range = |start, count| Some(IdRange { start, count });
        assert_eq!(subordinate_range(text, Some("bob"), 1000), range(165536, 65536));
        assert_eq!(subordinate_range(text, Some("carol"), 1001), range(231072, 1000));
        assert_eq!(subordinate_range(text, None, 1001), range(231072, 1000));
        assert_eq!(subordinate_range(text, Some("dave"), 1002), None);
        assert_eq!(subordinate_range(text, None, 4), None);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "alice:x:65536\nalice:100000:0\nalice:4294967295:2\nalice:1:2:3\n\nalice:200000:10\n";
        assert_eq!(
            subordinate_range(text, Some("alice"), 1000),
            Some(IdRange {
                start: 200000,
                count: 10
            })
        );
    }

    #[test]
    fn helper_arguments_map_root_to_the_user_then_the_range() {
        let args = map_args(
            Pid::from_raw(42),
            1000,
            IdRange {
                start: 100000,
                count: 65536,
            },
        );
        assert_eq!(args, ["42", "0", "1000", "1", "1", "100000", "65536"]);
    }
}
