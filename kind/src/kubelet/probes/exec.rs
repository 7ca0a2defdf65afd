//! exec probes: the command runs in the container's network and mount
//! namespaces, joined through its main process (`/proc/<pid>/ns/*`: the
//! container's own namespaces whatever made them), under its root and in
//! its working directory (`/proc/<pid>/root`, `/proc/<pid>/cwd`: the
//! container is `chroot`ed inside its mount namespace), as its user, with
//! its environment; killed (its whole process group) at the timeout.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::state::Outcome;

/// Output kept for the event message (kubelet keeps 10 KiB).
const MAX_OUTPUT: u64 = 10 * 1024;
/// Largest `/proc/<pid>/environ` read.
const MAX_ENVIRON: u64 = 1024 * 1024;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `command` in the namespaces of process `pid` within `timeout`.
pub async fn run(pid: i32, command: &[String], timeout: Duration) -> Outcome {
    let joined = command.join(" ");
    let prepared = match Prepared::of(pid) {
        Ok(p) => p,
        Err(e) => return Outcome::Error(format!("exec {joined:?}: container process {pid}: {e}")),
    };
    let (mut child, mut output) = match prepared.spawn(command) {
        Ok(spawned) => spawned,
        Err(e) => return Outcome::Error(format!("exec {joined:?}: {e}")),
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let finish = async {
        let mut buf = Vec::new();
        let _ = (&mut output).take(MAX_OUTPUT).read_to_end(&mut buf).await;
        drop(output);
        child.wait().await.map(|status| (status, buf))
    };
    match tokio::time::timeout(timeout, finish).await {
        Ok(Ok((status, _))) if status.success() => Outcome::Success,
        Ok(Ok((_, buf))) => Outcome::Failure(String::from_utf8_lossy(&buf).into_owned()),
        Ok(Err(e)) => Outcome::Error(format!("exec {joined:?}: waiting: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Outcome::Failure(format!("command {joined:?} timed out"))
        }
    }
}

/// What the command inherits from the container's process.
struct Prepared {
    net: OwnedFd,
    mnt: OwnedFd,
    root: OwnedFd,
    cwd: OwnedFd,
    uid: u32,
    gid: u32,
    env: Vec<(String, String)>,
}

impl Prepared {
    fn of(pid: i32) -> io::Result<Prepared> {
        let proc = format!("/proc/{pid}");
        let ns = |kind: &str| File::open(format!("{proc}/ns/{kind}")).map(OwnedFd::from);
        let (net, mnt) = (ns("net")?, ns("mnt")?);
        let dir = |link: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(format!("{proc}/{link}"))
                .map(OwnedFd::from)
        };
        let (root, cwd) = (dir("root")?, dir("cwd")?);
        let mut status = String::new();
        File::open(format!("{proc}/status"))?
            .take(64 * 1024)
            .read_to_string(&mut status)?;
        let id = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| io::Error::other(format!("no {key} line in {proc}/status")))
        };
        let (uid, gid) = (id("Uid:")?, id("Gid:")?);
        let mut environ = Vec::new();
        File::open(format!("{proc}/environ"))?
            .take(MAX_ENVIRON)
            .read_to_end(&mut environ)?;
        Ok(Prepared {
            net,
            mnt,
            root,
            cwd,
            uid,
            gid,
            env: parse_environ(&environ),
        })
    }

    /// Starts the command, stdout and stderr into one pipe (kubelet reports
    /// the combined output).
    fn spawn(self, command: &[String]) -> io::Result<(tokio::process::Child, tokio::net::unix::pipe::Receiver)> {
        let (program, args) = command.split_first().ok_or_else(|| io::Error::other("empty command"))?;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env_clear();
        if !self.env.iter().any(|(k, _)| k == "PATH") {
            cmd.env("PATH", DEFAULT_PATH);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write))
            .process_group(0)
            .kill_on_drop(true);
        let Prepared {
            net,
            mnt,
            root,
            cwd,
            uid,
            gid,
            ..
        } = self;
        // SAFETY: between fork and exec the hook only makes system calls
        // (setns, fchdir, chroot, setgroups, setgid, setuid) on values
        // captured before the fork; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                check(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
                check(libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET))?;
                // Entering a mount namespace resets root and cwd to its own:
                // back to the container's chroot and working directory.
                check(libc::fchdir(root.as_raw_fd()))?;
                check(libc::chroot(c".".as_ptr()))?;
                check(libc::fchdir(cwd.as_raw_fd()))?;
                if uid != 0 || gid != 0 {
                    check(libc::setgroups(0, std::ptr::null()))?;
                    check(libc::setgid(gid))?;
                    check(libc::setuid(uid))?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The parent's write ends close with `cmd`, so the reader sees EOF
        // once the command (and whatever it forked) is done.
        drop(cmd);
        Ok((child, tokio::net::unix::pipe::Receiver::from_owned_fd(read)?))
    }
}

/// `KEY=value` entries separated by NULs.
fn parse_environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (k, v) = text.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environ_entries() {
        assert_eq!(
            parse_environ(b"PATH=/bin\0A=b=c\0junk\0=x\0"),
            vec![("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert!(parse_environ(b"").is_empty());
    }

    /// Joining one's own namespaces is allowed as root (setns into the
    /// namespace one is in), so this runs without a container.
    #[tokio::test]
    async fn outcomes_of_commands() {
        if !testkit::gate("outcomes_of_commands", &[testkit::Need::Root]) {
            return;
        }
        let me = std::process::id() as i32;
        let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let t = Duration::from_secs(10);
        assert_eq!(run(me, &sh("exit 0"), t).await, Outcome::Success);
        assert_eq!(
            run(me, &sh("echo out; echo err >&2; exit 3"), t).await,
            Outcome::Failure("out\nerr\n".into())
        );
        // The timeout kills the whole process group: a background child too.
        let dir = std::env::temp_dir().join(format!("exec-probe-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        assert_eq!(
            run(me, &sh(&script), Duration::from_secs(2)).await,
            Outcome::Failure(format!("command \"sh -c {script}\" timed out"))
        );
        let sleeper = std::fs::read_to_string(&pidfile).unwrap();
        // SIGKILL is delivered asynchronously: the sleeper may still show
        // as running for a moment; it must be gone (or a zombie) soon after.
        let gone = |stat: &str| {
            let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
            matches!(state, None | Some("Z") | Some("X"))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut stat = String::new();
        while std::time::Instant::now() < deadline {
            stat = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.trim())).unwrap_or_default();
            if gone(&stat) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone(&stat), "the background sleep survived: {stat}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            run(me, &["/nonexistent/probe".to_string()], t).await,
            Outcome::Error(m) if m.contains("/nonexistent/probe")
        ));
        assert!(matches!(run(-5, &sh("true"), t).await, Outcome::Error(m) if m.contains("container process -5")));
    }
}
