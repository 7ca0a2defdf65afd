//! Graceful termination of a pod marked for deletion, as kubelet does it:
//! a `Killing` event per running container, its `preStop` exec hook (in the
//! container's namespaces, bounded by the grace period), then SIGTERM to
//! its main process (as a runtime signals the container's init); after the
//! grace period whatever is left is SIGKILLed (every process group), the
//! sandbox is torn down (CNI DEL) and the pod deleted with grace 0 and its
//! uid as precondition, which removes it from the API.
//!
//! A force delete (the pod removed from the API) or the end of the worker's
//! channel (cluster teardown) cuts every wait short.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::pin::pin;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{API_TIMEOUT, Msg, Worker};
use crate::kubelet::lifecycle::{Input, PodLifecycle};

/// The final delete is tried this often, this many times, while the API
/// server cannot be reached.
const DELETE_RETRY: Duration = Duration::from_secs(1);
const DELETE_RETRIES: u32 = 30;
/// /proc files read for a hook are small; never read more than this.
const PROC_LIMIT: u64 = 256 * 1024;

/// How a container is stopped.
struct Stop {
    container: String,
    pid: i32,
    pre_stop: Option<Vec<String>>,
}

/// How the wait for the containers ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Every container exited (or the grace period ran out).
    Graceful,
    /// The pod is already gone from the API (force delete, teardown).
    Removed,
}

impl Worker {
    /// Terminates the pod within `grace` (shortened by later deletes), then
    /// removes it from the API.
    pub(super) async fn terminate(
        &mut self,
        lifecycle: &PodLifecycle,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        grace: Duration,
    ) {
        let mut deadline = Instant::now() + grace;
        // A sandbox being created is torn down only once its ADD returned.
        let mut adding = lifecycle.sandbox_in_flight();
        let stops = self.live_containers();
        for s in &stops {
            let message = format!("Stopping container {}", s.container);
            self.record(false, "Killing", &message).await;
        }
        let ended = self.stop_all(stops, rx, &mut deadline, &mut adding).await;
        while adding && ended == Ended::Graceful {
            match rx.recv().await {
                Some(Msg::Lifecycle(Input::SandboxReady { .. } | Input::SandboxFailed { .. })) => adding = false,
                Some(Msg::Lifecycle(Input::Delete)) | None => break,
                Some(_) => {}
            }
        }
        self.teardown().await;
        if ended == Ended::Graceful {
            self.delete_finally().await;
        }
    }

    /// The containers whose process still runs, with their hooks.
    fn live_containers(&self) -> Vec<Stop> {
        let live = self.ctx.processes.lock().map(|all| all.clone()).unwrap_or_default();
        let mut stops: Vec<Stop> = self
            .processes
            .iter()
            .filter(|(_, pid)| live.contains(pid))
            .map(|(name, pid)| Stop {
                container: name.clone(),
                pid: *pid,
                pre_stop: self.container(name).and_then(|c| {
                    let exec = c.lifecycle?.pre_stop?.exec?;
                    exec.command.filter(|argv| !argv.is_empty())
                }),
            })
            .collect();
        stops.sort_by(|a, b| a.container.cmp(&b.container));
        stops
    }

    fn any_alive(&self) -> bool {
        let Ok(live) = self.ctx.processes.lock() else {
            return false;
        };
        self.processes.values().any(|pid| live.contains(pid))
    }

    /// Runs the hooks and SIGTERMs, then waits for the processes to end,
    /// for the deadline, or for the pod to be removed.
    async fn stop_all(
        &mut self,
        stops: Vec<Stop>,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        deadline: &mut Instant,
        adding: &mut bool,
    ) -> Ended {
        let hooks_deadline = *deadline;
        let signals = futures::future::join_all(stops.into_iter().map(|s| {
            let (ctx, pod) = (self.ctx.clone(), self.name.clone());
            async move {
                if let Some(argv) = &s.pre_stop
                    && let Err(message) = pre_stop(&ctx.processes, s.pid, argv, hooks_deadline).await
                {
                    tracing::warn!(%pod, container = %s.container, "preStop hook: {message}");
                    return Some((s.container, message));
                }
                let _ = kill(Pid::from_raw(s.pid), Signal::SIGTERM);
                None
            }
        }));
        let mut signals = pin!(signals);
        let mut signalled = false;
        loop {
            if signalled && !self.any_alive() {
                return Ended::Graceful;
            }
            tokio::select! {
                failed = &mut signals, if !signalled => {
                    signalled = true;
                    for (container, message) in failed.into_iter().flatten() {
                        let message = format!("PreStopHook failed for container {container}: {message}");
                        self.record(true, "FailedPreStopHook", &message).await;
                    }
                }
                msg = rx.recv() => match msg {
                    Some(Msg::Terminate { grace }) => *deadline = (*deadline).min(Instant::now() + grace),
                    Some(Msg::Lifecycle(Input::Delete)) | None => return Ended::Removed,
                    Some(Msg::Lifecycle(Input::SandboxReady { .. } | Input::SandboxFailed { .. })) => *adding = false,
                    // Exits show in the process table; nothing restarts now.
                    Some(Msg::Lifecycle(_)) => {}
                    // Probe results no longer matter to a terminating pod.
                    Some(Msg::Probe(_)) => {}
                },
                _ = tokio::time::sleep_until(*deadline) => return Ended::Graceful,
            }
        }
    }

    /// The kubelet's last word: the pod deleted with grace 0, for this uid
    /// only (a pod of the same name created since is not touched).
    async fn delete_finally(&self) {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for _ in 0..DELETE_RETRIES {
            match tokio::time::timeout(API_TIMEOUT, api.delete(&self.name, &params)).await {
                Ok(Ok(_)) => return,
                // Gone already, or another pod of this name: nothing to do.
                Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => return,
                Ok(Err(kube::Error::Api(e))) => {
                    tracing::warn!(pod = %self.name, "deleting the terminated pod: {e}");
                    return;
                }
                Ok(Err(e)) => tracing::debug!(pod = %self.name, "deleting the terminated pod: {e}"),
                Err(_) => tracing::debug!(pod = %self.name, "deleting the terminated pod: timed out"),
            }
            tokio::time::sleep(DELETE_RETRY).await;
        }
        tracing::warn!(pod = %self.name, "deleting the terminated pod: the API server stayed unreachable");
    }
}

/// A container's `preStop` exec hook: `argv` in the namespaces of its main
/// process `pid` (network and mount), with its environment and user, killed
/// at `deadline`. `Err` says why it failed.
async fn pre_stop(
    processes: &std::sync::Mutex<std::collections::HashSet<i32>>,
    pid: i32,
    argv: &[String],
    deadline: Instant,
) -> Result<(), String> {
    let env = proc_file(pid, "environ")?;
    let status = proc_file(pid, "status")?;
    let mut cmd = std::process::Command::new(harness_tool("nsenter"));
    cmd.arg(format!("--target={pid}")).args(["--net", "--mount"]);
    if let Some((uid, gid)) = ids(&String::from_utf8_lossy(&status)).filter(|ids| *ids != (0, 0)) {
        cmd.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
    }
    cmd.arg("--").args(argv).env_clear();
    for var in env.split(|b| *b == 0).filter(|v| !v.is_empty()) {
        let var = String::from_utf8_lossy(var);
        if let Some((k, v)) = var.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting nsenter for {argv:?}: {e}"))?;
    let hook_pid = child.id().and_then(|p| i32::try_from(p).ok());
    // Registered like a container, so a cluster teardown kills it too.
    if let (Some(p), Ok(mut all)) = (hook_pid, processes.lock()) {
        all.insert(p);
    }
    let waited = tokio::time::timeout_at(deadline, child.wait()).await;
    if let Some(p) = hook_pid {
        if waited.is_err() {
            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
        }
        if let Ok(mut all) = processes.lock() {
            all.remove(&p);
        }
    }
    match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("command {argv:?} exited with {status}")),
        Ok(Err(e)) => Err(format!("waiting for {argv:?}: {e}")),
        Err(_) => Err(format!("command {argv:?} did not finish within the grace period")),
    }
}

/// `tool` on the harness's own PATH (the hook's environment is the
/// container's, which `Command` would search instead).
fn harness_tool(tool: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| tool.into())
}

/// `/proc/<pid>/<name>`, bounded.
fn proc_file(pid: i32, name: &str) -> Result<Vec<u8>, String> {
    let path = format!("/proc/{pid}/{name}");
    let mut out = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(PROC_LIMIT).read_to_end(&mut out))
        .map_err(|e| format!("the container's process is gone ({path}: {e})"))?;
    Ok(out)
}

/// The real uid and gid in a `/proc/<pid>/status`.
fn ids(status: &str) -> Option<(u32, u32)> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_proc_status() {
        let status = "Name:\tsh\nUid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n";
        assert_eq!(ids(status), Some((1000, 100)));
        assert_eq!(ids("Name:\tsh\n"), None);
    }

    #[tokio::test]
    async fn a_hook_runs_in_the_process_namespaces_and_is_bounded() {
        let me = i32::try_from(std::process::id()).unwrap();
        let registry = std::sync::Mutex::new(std::collections::HashSet::new());
        let soon = Instant::now() + Duration::from_secs(30);
        let ok = pre_stop(&registry, me, &["true".into()], soon).await;
        // nsenter into its own namespaces needs CAP_SYS_ADMIN; without it the
        // hook fails, and says so.
        if let Err(e) = &ok {
            assert!(e.contains("exited with"), "{e}");
            return;
        }
        let failed = pre_stop(&registry, me, &["false".into()], soon).await.unwrap_err();
        assert!(failed.contains("exited with"), "{failed}");
        let started = Instant::now();
        let late = Instant::now() + Duration::from_millis(300);
        let slow = pre_stop(&registry, me, &["sleep".into(), "30".into()], late).await;
        assert!(slow.unwrap_err().contains("grace period"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the hook was killed at the deadline"
        );
        assert!(registry.lock().unwrap().is_empty());
        let gone = pre_stop(&registry, i32::MAX, &["true".into()], soon).await;
        assert!(gone.unwrap_err().contains("process is gone"));
    }
}
