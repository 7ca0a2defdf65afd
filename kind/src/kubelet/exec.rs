//! Runs a command inside a running container, as `kubectl exec` does: the
//! namespaces of the container's main process (`/proc/<pid>/ns/{ipc,uts,
//! net,mnt}`, joined only where they differ from ours, so containers with
//! their own mount namespace work as well as those without), its root and
//! working directory, its cgroup, its user and group, its capabilities
//! (bounding and inheritable sets: a command exec'd into a container holds
//! no more than the container does), and the environment it was started
//! with; with a pseudo-terminal when a tty is asked for.
//!
//! [`Entry`] is the one way into a container: exec sessions, exec probes
//! and preStop exec hooks all use it.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::apiserver::{Session, StreamError, StreamOptions, TerminalSize};

/// `/proc/<pid>/environ` and `status` are read up to this size.
const PROC_LIMIT: u64 = 1 << 20;
/// The PATH of a command whose container's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The namespaces an exec joins, with their `setns` flags.
const NAMESPACES: [(&str, libc::c_int); 4] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("mnt", libc::CLONE_NEWNS),
];

fn proc_path(pid: i32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

fn read_proc(pid: i32, rest: &str) -> Result<Vec<u8>, StreamError> {
    let path = proc_path(pid, rest);
    let mut out = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(PROC_LIMIT).read_to_end(&mut out))
        .map_err(StreamError::io(format!("reading {}", path.display())))?;
    Ok(out)
}

/// `NAME=value` entries of a NUL-separated environment block.
pub fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The effective uid and gid in a `/proc/<pid>/status` text.
pub fn parse_ids(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// A process's capability sets that a command entering its container
/// takes over (`/proc/<pid>/status`, hexadecimal masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub bounding: u64,
    pub inheritable: u64,
}

/// The bounding and inheritable sets in a `/proc/<pid>/status` text.
pub fn parse_caps(status: &str) -> Option<Caps> {
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| u64::from_str_radix(rest.trim(), 16).ok())
    };
    Some(Caps {
        bounding: mask("CapBnd:")?,
        inheritable: mask("CapInh:")?,
    })
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` text.
pub fn parse_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The container's namespaces that differ from this process's.
fn foreign_namespaces(pid: i32) -> Result<Vec<(OwnedFd, libc::c_int)>, StreamError> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = proc_path(pid, &format!("ns/{name}"));
        let meta = std::fs::metadata(&theirs).map_err(StreamError::io(format!("reading {}", theirs.display())))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).ok();
        if ours.is_some_and(|o| o.dev() == meta.dev() && o.ino() == meta.ino()) {
            continue;
        }
        let file = File::open(&theirs).map_err(StreamError::io(format!("opening {}", theirs.display())))?;
        out.push((OwnedFd::from(file), flag));
    }
    Ok(out)
}

fn open_dir(pid: i32, which: &str) -> Result<OwnedFd, StreamError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = proc_path(pid, which);
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(StreamError::io(format!("opening {}", path.display())))
}

fn cloexec(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `capset(2)`'s header and one of its two 32-bit halves.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Leaves this process (a child between fork and exec) with the
/// container's inheritable set and no bounding capability the container
/// lacks, and no ambient ones: what it execs as root holds the container's
/// capabilities, no more.
///
/// # Safety
/// Only system calls; callable between fork and exec.
unsafe fn restrict_caps(caps: Caps) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget/capset fill and read the two structs given.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        data[0].inheritable = caps.inheritable as u32;
        data[1].inheritable = (caps.inheritable >> 32) as u32;
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) < 0 {
            return Err(io::Error::last_os_error());
        }
        // Ambient capabilities are unknown to old kernels: nothing to clear.
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for cap in 0..64u64 {
            if caps.bounding & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                let e = io::Error::last_os_error();
                // Past the kernel's last capability.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Everything a command needs to enter a running container, taken from its
/// main process before the fork.
pub struct Entry {
    env: Vec<(String, String)>,
    cgroup_procs: Option<CString>,
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    root: OwnedFd,
    cwd: OwnedFd,
    ids: Option<(u32, u32)>,
    caps: Option<Caps>,
}

impl Entry {
    /// The entry into the container whose main process is `pid`.
    pub fn of(pid: i32) -> Result<Entry, StreamError> {
        let env = parse_environ(&read_proc(pid, "environ")?);
        let status = String::from_utf8_lossy(&read_proc(pid, "status")?).into_owned();
        let cgroup_procs = std::fs::read_to_string(proc_path(pid, "cgroup"))
            .ok()
            .and_then(|t| parse_cgroup(&t).map(|p| format!("/sys/fs/cgroup{}/cgroup.procs", p.trim_end_matches('/'))))
            .and_then(|p| CString::new(p).ok());
        Ok(Entry {
            env,
            cgroup_procs,
            namespaces: foreign_namespaces(pid)?,
            root: open_dir(pid, "root")?,
            cwd: open_dir(pid, "cwd")?,
            ids: parse_ids(&status).filter(|ids| *ids != (0, 0)),
            caps: parse_caps(&status),
        })
    }

    /// The environment the container was started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// `argv` as a command that enters the container when spawned: the
    /// container's environment (a default PATH when it has none), and with
    /// `tty` a session whose controlling terminal is its stdin. Stdio and
    /// process group are the caller's to set.
    pub fn command(self, argv: &[String], tty: bool) -> Result<tokio::process::Command, StreamError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(StreamError::Invalid("no command to run".into()));
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.kill_on_drop(true);
        // SAFETY: `Entry::enter` only makes system calls on values prepared
        // before the fork (see there); the closure owns the descriptors, so
        // they stay open until the command is dropped.
        unsafe {
            cmd.pre_exec(move || self.enter(tty));
        }
        Ok(cmd)
    }

    /// Runs in the forked child: only system calls on memory prepared
    /// before the fork (async-signal-safe).
    fn enter(&self, tty: bool) -> io::Result<()> {
        let check = |r: libc::c_int| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
        // SAFETY: plain system calls on descriptors and strings that the
        // closure owning `self` keeps alive until the child has exec'd.
        unsafe {
            // The container's cgroup first, while /sys/fs/cgroup is ours.
            if let Some(procs) = &self.cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            for (fd, flag) in &self.namespaces {
                check(libc::setns(fd.as_raw_fd(), *flag))?;
            }
            // Entering a mount namespace resets root and cwd to its own:
            // back to the container's root and working directory.
            check(libc::fchdir(self.root.as_raw_fd()))?;
            check(libc::chroot(c".".as_ptr()))?;
            if libc::fchdir(self.cwd.as_raw_fd()) < 0 {
                check(libc::chdir(c"/".as_ptr()))?;
            }
            if tty {
                check(libc::setsid())?;
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            }
            // Capabilities while we still hold CAP_SETPCAP, before the ids.
            if let Some(caps) = self.caps {
                restrict_caps(caps)?;
            }
            if let Some((uid, gid)) = self.ids {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
        }
        Ok(())
    }
}

/// Reads a pty master; the EIO that follows the last slave's close is EOF.
struct PtyReader(tokio::fs::File);

impl AsyncRead for PtyReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// Sets the size of the terminal whose master is `master`.
pub(crate) fn set_size(master: &OwnedFd, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `options.command` in the container whose main process is `pid`.
pub fn spawn(pid: i32, options: &StreamOptions) -> Result<Session, StreamError> {
    let program = options
        .command
        .first()
        .cloned()
        .ok_or_else(|| StreamError::Invalid("no command to run".into()))?;
    let entry = Entry::of(pid)?;
    let has_term = entry.env().iter().any(|(k, _)| k == "TERM");
    let mut cmd = entry.command(&options.command, options.tty)?;
    let mut master = None;
    if options.tty {
        if !has_term {
            cmd.env("TERM", "xterm");
        }
        let pty = nix::pty::openpty(None, None).map_err(|e| StreamError::Io {
            what: "allocating a pseudo-terminal".into(),
            source: e.into(),
        })?;
        for fd in [&pty.master, &pty.slave] {
            cloexec(fd).map_err(StreamError::io("preparing the pseudo-terminal"))?;
        }
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(StreamError::io("duplicating the pseudo-terminal"))
        };
        cmd.stdin(Stdio::from(dup(&pty.slave)?))
            .stdout(Stdio::from(dup(&pty.slave)?))
            .stderr(Stdio::from(pty.slave));
        master = Some(pty.master);
    } else {
        let pipe = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(options.stdin))
            .stdout(pipe(options.stdout))
            .stderr(pipe(options.stderr));
    }
    let spawned = cmd.spawn();
    drop(cmd); // the parent's copies of the pty slave and the entry's descriptors
    let mut child = spawned.map_err(StreamError::io(format!("starting {program:?} in the container")))?;

    let mut session = Session {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        exit: Box::pin(async { Ok(0) }),
    };
    if let Some(master) = master {
        let master = Arc::new(master);
        let file = |fd: &OwnedFd| -> Result<tokio::fs::File, StreamError> {
            let fd = fd
                .try_clone()
                .map_err(StreamError::io("duplicating the pseudo-terminal"))?;
            Ok(tokio::fs::File::from_std(File::from(fd)))
        };
        if options.stdin {
            session.stdin = Some(Box::pin(file(&master)?));
        }
        if options.stdout {
            session.stdout = Some(Box::pin(PtyReader(file(&master)?)));
        }
        let resize_fd = master.clone();
        session.resize = Some(Box::new(move |size| set_size(&resize_fd, size)));
    } else {
        session.stdin = child.stdin.take().map(|w| Box::pin(w) as _);
        session.stdout = child.stdout.take().map(|r| Box::pin(r) as _);
        session.stderr = child.stderr.take().map(|r| Box::pin(r) as _);
    }
    session.exit = Box::pin(async move {
        let status = child.wait().await.map_err(StreamError::io("waiting for the command"))?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)))
    });
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(
            parse_environ(b"PATH=/bin\0EMPTY=\0A=b=c\0junk\0=x\0"),
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("EMPTY".into(), String::new()),
                ("A".into(), "b=c".into())
            ]
        );
        let status = "Name:\tsleep\nUid:\t1000\t1001\t1001\t1001\nGid:\t20\t21\t21\t21\n";
        assert_eq!(parse_ids(status), Some((1001, 21)));
        assert_eq!(parse_ids("Name: x\n"), None);
        assert_eq!(parse_cgroup("0::/kubepods/pod1\n"), Some("/kubepods/pod1"));
        assert_eq!(parse_cgroup("1:name=systemd:/\n"), None);
        let status = "Name:\tsh\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapBnd:\t00000000a80425fb\n";
        assert_eq!(
            parse_caps(status),
            Some(Caps {
                bounding: 0xa80425fb,
                inheritable: 0
            })
        );
        assert_eq!(parse_caps("Name:\tsh\n"), None);
    }
}

#[cfg(test)]
mod namespace_tests {
    use std::process::Command;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Runs `command` in the container of `pid`: its stdout and exit code.
    fn exec_in(pid: u32, command: &[&str]) -> (String, i32) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = StreamOptions {
            command: command.iter().map(|a| a.to_string()).collect(),
            stdout: true,
            ..StreamOptions::default()
        };
        runtime.block_on(async {
            let mut session = spawn(pid as i32, &options).expect("exec");
            let mut out = String::new();
            session.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
            (out, session.exit.await.unwrap())
        })
    }

    /// Waits (up to 10 s) until `/proc/<pid>/status` satisfies `done`.
    fn wait_for_status(pid: u32, done: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if done(&status) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut container: std::process::Child) {
        let _ = container.kill();
        let _ = container.wait();
    }

    /// A container with its own mount namespace: exec sees its mounts, which
    /// this process does not.
    #[test]
    fn exec_sees_the_containers_mounts() {
        let test = testkit::test_name!();
        testkit::gate_or_return!(&[testkit::Need::Root, testkit::Need::Tool("unshare")]);
        let dir = testkit::Scratch::new(test);
        let script = format!(
            "mount -t tmpfs exec-test {d} && echo inside > {d}/marker && touch {d}/../ready && exec sleep 30",
            d = dir.join("mnt").display()
        );
        std::fs::create_dir(dir.join("mnt")).unwrap();
        let container = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .spawn()
            .expect("unshare");
        let ready = dir.join("ready");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ready.exists(), "the container did not start");
        let marker = dir.join("mnt/marker");
        assert!(!marker.exists(), "the tmpfs leaked into this mount namespace");

        let (out, code) = exec_in(container.id(), &["cat", &marker.display().to_string()]);
        stop(container);
        assert_eq!((out.as_str(), code), ("inside\n", 0));
    }

    /// The container's user: exec runs as the uid/gid its main process has.
    #[test]
    fn exec_runs_as_the_containers_user() {
        testkit::gate_or_return!(&[testkit::Need::Root, testkit::Need::Tool("setpriv")]);
        let container = Command::new("setpriv")
            .args(["--reuid=4321", "--regid=4322", "--clear-groups", "sleep", "30"])
            .spawn()
            .expect("setpriv");
        // Wait until setpriv has become the sleeping user.
        wait_for_status(container.id(), |status| parse_ids(status) == Some((4321, 4322)));
        let (out, _) = exec_in(container.id(), &["id"]);
        stop(container);
        assert!(out.starts_with("uid=4321 gid=4322 "), "{out}");
    }

    /// The container's capabilities: a command exec'd into a container
    /// whose bounding set is only CAP_KILL holds only CAP_KILL, though the
    /// harness runs with all of them.
    #[test]
    fn exec_holds_the_containers_capabilities() {
        testkit::gate_or_return!(&[testkit::Need::Root, testkit::Need::Tool("setpriv")]);
        let container = Command::new("setpriv")
            .args(["--bounding-set=-all,+kill", "--inh-caps=-all,+kill", "sleep", "30"])
            .spawn()
            .expect("setpriv");
        wait_for_status(container.id(), |status| {
            parse_caps(status).is_some_and(|c| c.bounding == 1 << 5)
        });
        let (out, _) = exec_in(container.id(), &["grep", "^Cap", "/proc/self/status"]);
        stop(container);
        for set in ["CapBnd", "CapPrm", "CapEff"] {
            assert!(out.contains(&format!("{set}:\t0000000000000020")), "{set}: {out}");
        }
    }
}
