//! exec probes: the command enters the container the way `kubectl exec`
//! does ([`crate::kubelet::exec::Entry`]: its namespaces, root, working
//! directory, user, capabilities and environment, joined through its main
//! process); its combined output is kept for the event message; killed
//! (its whole process group) at the timeout.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::state::Outcome;
use crate::kubelet::exec::Entry;

/// Output kept for the event message (kubelet keeps 10 KiB).
const MAX_OUTPUT: u64 = 10 * 1024;

/// Runs `command` in the namespaces of process `pid` within `timeout`.
pub async fn run(pid: i32, command: &[String], timeout: Duration) -> Outcome {
    let joined = command.join(" ");
    let entry = match Entry::of(pid) {
        Ok(entry) => entry,
        Err(e) => return Outcome::Error(format!("exec {joined:?}: container process {pid}: {e}")),
    };
    let (mut child, mut output) = match spawn(entry, command) {
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

/// Starts the command in its own process group, stdout and stderr into one
/// pipe (kubelet reports the combined output).
fn spawn(entry: Entry, command: &[String]) -> io::Result<(tokio::process::Child, tokio::net::unix::pipe::Receiver)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let mut cmd = entry.command(command, false).map_err(io::Error::other)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(write.try_clone()?))
        .stderr(Stdio::from(write))
        .process_group(0);
    let child = cmd.spawn()?;
    // The parent's write ends close with `cmd`, so the reader sees EOF once
    // the command (and whatever it forked) is done.
    drop(cmd);
    Ok((child, tokio::net::unix::pipe::Receiver::from_owned_fd(read)?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
