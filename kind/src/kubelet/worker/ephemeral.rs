//! Ephemeral containers (`kubectl debug`): added to a running pod through
//! `pods/ephemeralcontainers`, each is started once, as a container of the
//! pod (its netns, volumes, image, capabilities), never restarted, and
//! reported in `status.ephemeralContainerStatuses`. One that asks for stdin
//! gets a pipe, with `tty` a pseudo-terminal (its output copied to the
//! container's log), registered for attach.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Stdio;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    EphemeralContainer, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Msg, Worker};

/// What became of each ephemeral container.
#[derive(Default)]
pub(super) struct Statuses(BTreeMap<String, ContainerStatus>);

impl Statuses {
    /// The statuses to report, `None` while there are none.
    pub(super) fn statuses(&self) -> Option<Vec<ContainerStatus>> {
        (!self.0.is_empty()).then(|| self.0.values().cloned().collect())
    }

    fn set(&mut self, name: &str, image: &str, state: ContainerState) {
        self.0.insert(
            name.to_string(),
            ContainerStatus {
                name: name.to_string(),
                image: image.to_string(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                started: Some(state.running.is_some()),
                state: Some(state),
                ..ContainerStatus::default()
            },
        );
    }
}

/// An ephemeral container as the container the kubelet starts (the same
/// fields; its target container is not needed: there is no pid namespace).
fn as_container(ec: &EphemeralContainer) -> Result<Container, String> {
    serde_json::to_value(ec)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("ephemeral container {:?}: {e}", ec.name))
}

impl Worker {
    /// The pod as the API server has it now: ephemeral containers added
    /// since are started.
    pub(super) async fn updated(&mut self, pod: Pod) {
        let listed = pod.spec.and_then(|s| s.ephemeral_containers).unwrap_or_default();
        let added: Vec<EphemeralContainer> = listed
            .iter()
            .filter(|ec| !self.ephemeral.0.contains_key(&ec.name))
            .cloned()
            .collect();
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.ephemeral_containers = Some(listed);
        }
        for ec in added {
            self.start_ephemeral(&ec).await;
        }
    }

    async fn start_ephemeral(&mut self, ec: &EphemeralContainer) {
        let image = ec.image.clone().unwrap_or_default();
        let now = || Some(Time(Timestamp::now()));
        match self.spawn_ephemeral(ec).await {
            Ok(()) => {
                let running = ContainerState {
                    running: Some(ContainerStateRunning { started_at: now() }),
                    ..ContainerState::default()
                };
                self.ephemeral.set(&ec.name, &image, running);
                self.record(false, "Created", &format!("Created container {}", ec.name))
                    .await;
                self.record(false, "Started", &format!("Started container {}", ec.name))
                    .await;
            }
            Err((reason, message)) => {
                let waiting = ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.to_string()),
                        message: Some(message.clone()),
                    }),
                    ..ContainerState::default()
                };
                self.ephemeral.set(&ec.name, &image, waiting);
                self.record(true, "Failed", &format!("Error: {message}")).await;
            }
        }
    }

    /// Starts the process; `Err` is the waiting reason and message.
    async fn spawn_ephemeral(&mut self, ec: &EphemeralContainer) -> Result<(), (&'static str, String)> {
        let c = as_container(ec).map_err(|e| ("CreateContainerConfigError", e))?;
        let exec = self
            .ctx
            .images
            .resolve(&c)
            .map_err(|e| ("ErrImagePull", e.to_string()))?;
        let launch = self.launch(&c, &exec, 0).await.map_err(|e| (e.reason, e.message))?;
        let mut cmd = self
            .process_command(&c, &launch, 0)
            .map_err(|e| ("RunContainerError", e.to_string()))?;
        let tty = ec.tty == Some(true);
        let mut master = None;
        if tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| ("RunContainerError", format!("openpty: {e}")))?;
            let slave = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(Stdio::from)
                    .map_err(|e| ("RunContainerError", format!("the terminal: {e}")))
            };
            cmd.stdin(slave(&pty.slave)?)
                .stdout(slave(&pty.slave)?)
                .stderr(slave(&pty.slave)?);
            master = Some(pty.master);
        } else if ec.stdin == Some(true) {
            cmd.stdin(Stdio::piped());
        }
        // The slave's copies in `cmd` close when it is dropped, after the spawn.
        let root = launch.root;
        let spawned = tokio::task::spawn_blocking(move || crate::kubelet::container::mounts::spawn(root, cmd))
            .await
            .unwrap_or_else(|e| Err(crate::kubelet::container::mounts::MountError::panicked(e)));
        let mut child = spawned.map_err(|e| ("RunContainerError", e.to_string()))?;
        let pid = child.id() as i32;
        let (ns, pod, name) = (self.ns.clone(), self.name.clone(), ec.name.clone());
        let stdin = match master {
            Some(master) => {
                self.copy_terminal_to_log(&master, &name);
                Some(master)
            }
            None => child.stdin.take().map(OwnedFd::from),
        };
        if let Some(fd) = stdin {
            self.ctx.running.stdin(&ns, &pod, &name, pid, fd, tty);
        }
        self.processes.insert(name.clone(), pid);
        if let Ok(mut all) = self.ctx.processes.lock() {
            all.insert(pid);
        }
        self.ctx.running.started(&ns, &pod, &name, pid);
        let (tx, all, running) = (self.tx.clone(), self.ctx.processes.clone(), self.ctx.running.clone());
        std::thread::spawn(move || {
            let exit_code = match child.wait() {
                Ok(status) => status
                    .code()
                    .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)),
                Err(_) => 255,
            };
            if let Ok(mut all) = all.lock() {
                all.remove(&pid);
            }
            running.exited(&ns, &pod, &name, pid);
            let _ = tx.send(Msg::EphemeralExited {
                container: name,
                exit_code,
            });
        });
        Ok(())
    }

    /// What the container writes to its terminal goes to its log, where
    /// `kubectl logs` and attach read it.
    fn copy_terminal_to_log(&self, master: &OwnedFd, container: &str) {
        let Some(path) = self.ctx.logs.current_file(&self.ns, &self.name, container) else {
            return;
        };
        let (Ok(reader), Ok(mut log)) = (master.try_clone(), std::fs::OpenOptions::new().append(true).open(&path))
        else {
            return;
        };
        let mut reader = std::fs::File::from(reader);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once the last process holding the terminal is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || log.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }

    /// An ephemeral container's process ended: it stays terminated.
    pub(super) fn ephemeral_exited(&mut self, container: &str, exit_code: i32) {
        self.processes.remove(container);
        let Some(status) = self.ephemeral.0.get(container) else {
            return;
        };
        let started_at = status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        let image = status.image.clone();
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                started_at,
                finished_at: Some(Time(Timestamp::now())),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        self.ephemeral.set(container, &image, terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_ephemeral_container_reads_as_a_container() {
        let ec: EphemeralContainer = serde_json::from_value(json!({"name": "debugger-1", "image": "busybox",
            "command": ["sh"], "stdin": true, "tty": true, "targetContainerName": "app"}))
        .unwrap();
        let c = as_container(&ec).unwrap();
        assert_eq!(
            (c.name.as_str(), c.image.as_deref(), c.tty, c.stdin),
            ("debugger-1", Some("busybox"), Some(true), Some(true))
        );
        assert_eq!(c.command, Some(vec!["sh".to_string()]));
    }

    #[test]
    fn statuses_are_reported_by_name() {
        let mut s = Statuses::default();
        assert_eq!(s.statuses(), None);
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        };
        s.set("b", "img", running.clone());
        s.set("a", "img", running);
        let names: Vec<String> = s.statuses().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
