//! Stopping containers, the one way kubelet does it: the container's
//! `preStop` hook (exec in the container as `kubectl exec` enters it,
//! httpGet from the node to the pod IP, or sleep; bounded by the grace
//! period; a failure is a `FailedPreStopHook` event and the stop goes on),
//! then SIGTERM to its main process (as a runtime signals the container's
//! init), then SIGKILL to its process group once the grace period is over.
//!
//! Two callers: a pod marked for deletion ([`Worker::terminate`]: a
//! `Killing` event per running container, all stopped at once, then the
//! sandbox torn down (CNI DEL) and the pod deleted with grace 0 and its uid
//! as precondition, which removes it from the API; a force delete or the
//! end of the worker's channel cuts every wait short), and a container a
//! probe failed ([`Worker::kill`], which the lifecycle then restarts).

use std::collections::HashSet;
use std::pin::pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Preconditions};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{API_TIMEOUT, DEFAULT_GRACE, Msg, Worker};
use crate::kubelet::exec::Entry;
use crate::kubelet::lifecycle::{Input, PodLifecycle};
use crate::kubelet::probes::{self, Handler, Origin, Outcome, ProbeKind};

/// The final delete is tried this often, this many times, while the API
/// server cannot be reached.
const DELETE_RETRY: Duration = Duration::from_secs(1);
const DELETE_RETRIES: u32 = 30;
/// How often a probe-killed container is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(50);

/// The processes of every container on the node (see `NodeContext`).
type Processes = Arc<Mutex<HashSet<i32>>>;

/// A container's `preStop` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hook {
    Exec(Vec<String>),
    /// An httpGet action ([`Handler::Http`]).
    Http(Handler),
    Sleep(Duration),
}

impl Hook {
    /// The hook of `c`; `Err` says why it cannot run (a
    /// `FailedPreStopHook`, as kubelet reports it).
    fn of(c: &Container) -> Option<Result<Hook, String>> {
        let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
        if let Some(exec) = &h.exec {
            let argv = exec.command.clone().unwrap_or_default();
            return Some(if argv.is_empty() {
                Err("the exec hook has no command".into())
            } else {
                Ok(Hook::Exec(argv))
            });
        }
        if let Some(get) = &h.http_get {
            return Some(probes::spec::http_get(get, c).map(Hook::Http));
        }
        if let Some(sleep) = &h.sleep {
            return Some(
                u64::try_from(sleep.seconds)
                    .map(|s| Hook::Sleep(Duration::from_secs(s)))
                    .map_err(|_| format!("invalid sleep of {} seconds", sleep.seconds)),
            );
        }
        // tcpSocket is accepted by the API for compatibility, and does nothing.
        None
    }
}

/// How a container is stopped.
struct Stop {
    container: String,
    pid: i32,
    hook: Option<Result<Hook, String>>,
}

impl Stop {
    /// Its hook, then SIGTERM to its main process. `Err`: the hook's failure.
    async fn begin(&self, processes: &Processes, origin: &Origin, deadline: Instant) -> Result<(), String> {
        let hooked = match &self.hook {
            None => Ok(()),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(hook)) => run_hook(processes, self.pid, hook, origin, deadline).await,
        };
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        hooked
    }
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
                hook: self.container(name).and_then(|c| Hook::of(&c)),
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
        let origin = self.origin();
        let signals = futures::future::join_all(stops.into_iter().map(|s| {
            let (ctx, pod, origin) = (self.ctx.clone(), self.name.clone(), origin.clone());
            async move {
                let message = s.begin(&ctx.processes, &origin, hooks_deadline).await.err()?;
                tracing::warn!(%pod, container = %s.container, "preStop hook: {message}");
                Some((s.container, message))
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
                    // Probe results and updates no longer matter to a terminating pod.
                    Some(Msg::Probe(_) | Msg::Updated(_) | Msg::EphemeralExited { .. }) => {}
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

impl Worker {
    /// Stops a container a probe failed, as a deleted pod's are stopped
    /// (hook, SIGTERM, SIGKILL once the probe's grace period, else the
    /// pod's, is over); whatever of it is left once its main process exited
    /// is killed too, as a container's processes die with its init. The
    /// lifecycle restarts it when the exit is seen.
    pub(super) fn kill(&mut self, name: &str, probe: ProbeKind) {
        let Some(&pid) = self.processes.get(name) else { return };
        let processes = self.ctx.processes.clone();
        // Only a process still waited for is ours: its pid cannot be reused.
        let alive = move || processes.lock().map(|set| set.contains(&pid)).unwrap_or(false);
        if !alive() {
            return;
        }
        let container = self.container(name);
        let pod_grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        let grace = container
            .as_ref()
            .and_then(|c| probe.of(c).map(|p| probes::Settings::new(probe, p, c)))
            .and_then(|s| s.termination_grace)
            .or(pod_grace)
            .unwrap_or(DEFAULT_GRACE);
        let stop = Stop {
            container: name.to_string(),
            pid,
            hook: container.as_ref().and_then(Hook::of),
        };
        let (processes, origin, events) = (self.ctx.processes.clone(), self.origin(), self.events.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + grace;
            if let Err(message) = stop.begin(&processes, &origin, deadline).await {
                let message = format!("PreStopHook failed for container {}: {message}", stop.container);
                events.record(true, "FailedPreStopHook", &message).await;
            }
            while alive() && Instant::now() < deadline {
                tokio::time::sleep(EXIT_POLL).await;
            }
            // The group is the main process's pid: while it lives, or just
            // after it was reaped (pids are not reused that soon).
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        });
    }
}

/// Runs a container's `preStop` hook until `deadline`. `Err` says why it
/// failed.
async fn run_hook(
    processes: &Processes,
    pid: i32,
    hook: &Hook,
    origin: &Origin,
    deadline: Instant,
) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match hook {
        Hook::Exec(argv) => pre_stop_exec(processes, pid, argv, deadline).await,
        Hook::Sleep(d) => {
            tokio::time::sleep((*d).min(left)).await;
            Ok(())
        }
        Hook::Http(Handler::Http {
            https,
            host,
            port,
            path,
            headers,
        }) => {
            let get = probes::HttpGet {
                https: *https,
                host: host.as_deref(),
                port: *port,
                path,
                headers,
            };
            match probes::http(origin, &get, left).await {
                Outcome::Success => Ok(()),
                Outcome::Failure(m) | Outcome::Error(m) => Err(format!("HTTP lifecycle hook ({path}) failed: {m}")),
            }
        }
        Hook::Http(other) => Err(format!("not an httpGet action: {other:?}")),
    }
}

/// A `preStop` exec hook: `argv` entering the container as `kubectl exec`
/// does (through its main process `pid`), killed at `deadline`.
async fn pre_stop_exec(processes: &Processes, pid: i32, argv: &[String], deadline: Instant) -> Result<(), String> {
    let entry = Entry::of(pid).map_err(|e| format!("the container's process is gone ({e})"))?;
    let mut cmd = entry.command(argv, false).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("starting {argv:?}: {e}"))?;
    drop(cmd);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "ports": [{"name": "admin", "containerPort": 9901}],
            "lifecycle": lifecycle}))
        .unwrap()
    }

    #[test]
    fn hooks_from_the_spec() {
        let hook = |v| Hook::of(&container(json!({ "preStop": v })));
        assert_eq!(
            hook(json!({"exec": {"command": ["sh", "-c", "true"]}})),
            Some(Ok(Hook::Exec(vec!["sh".into(), "-c".into(), "true".into()])))
        );
        assert_eq!(
            hook(json!({"sleep": {"seconds": 2}})),
            Some(Ok(Hook::Sleep(Duration::from_secs(2))))
        );
        let Some(Ok(Hook::Http(Handler::Http { port, path, .. }))) =
            hook(json!({"httpGet": {"port": "admin", "path": "drain"}}))
        else {
            panic!("an httpGet hook");
        };
        assert_eq!((port, path.as_str()), (9901, "/drain"));
        assert!(
            hook(json!({"httpGet": {"port": "nope"}}))
                .unwrap()
                .unwrap_err()
                .contains("nope")
        );
        assert!(hook(json!({"exec": {"command": []}})).unwrap().is_err());
        assert_eq!(hook(json!({"tcpSocket": {"port": 80}})), None);
        assert_eq!(Hook::of(&container(json!({}))), None);
    }

    #[tokio::test]
    async fn an_exec_hook_enters_the_process_and_is_bounded() {
        if !testkit::gate("an_exec_hook_enters_the_process_and_is_bounded", &[testkit::Need::Root]) {
            return;
        }
        let me = i32::try_from(std::process::id()).unwrap();
        let registry: Processes = Arc::default();
        let soon = Instant::now() + Duration::from_secs(30);
        pre_stop_exec(&registry, me, &["true".into()], soon).await.unwrap();
        let failed = pre_stop_exec(&registry, me, &["false".into()], soon).await.unwrap_err();
        assert!(failed.contains("exited with"), "{failed}");
        let started = Instant::now();
        let late = Instant::now() + Duration::from_millis(300);
        let slow = pre_stop_exec(&registry, me, &["sleep".into(), "30".into()], late).await;
        assert!(slow.unwrap_err().contains("grace period"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the hook was killed at the deadline"
        );
        assert!(registry.lock().unwrap().is_empty());
        let gone = pre_stop_exec(&registry, i32::MAX, &["true".into()], soon).await;
        assert!(gone.unwrap_err().contains("process is gone"));
    }

    /// An httpGet hook is a GET to the pod IP; a 5xx fails it, saying so.
    #[tokio::test]
    async fn an_http_hook_gets_its_path() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let code = if head.starts_with("GET /drain ") {
                    "200 OK"
                } else {
                    "503 Busy"
                };
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\n\r\n").as_bytes()).await;
                let _ = tx.send(head);
            }
        });
        let origin = Origin {
            netns: None,
            pod_ip: Some([127, 0, 0, 1].into()),
        };
        let registry: Processes = Arc::default();
        let soon = Instant::now() + Duration::from_secs(10);
        let hook = |path: &str| {
            let c = container(json!({"preStop": {"httpGet": {"port": port, "path": path}}}));
            Hook::of(&c).unwrap().unwrap()
        };
        run_hook(&registry, 0, &hook("/drain"), &origin, soon).await.unwrap();
        assert!(rx.recv().await.unwrap().starts_with("GET /drain HTTP/1.1\r\n"));
        let failed = run_hook(&registry, 0, &hook("/other"), &origin, soon)
            .await
            .unwrap_err();
        assert!(failed.contains("503"), "{failed}");
    }
}
