//! The life of one pod on a node, as kubelet drives it: sandbox (retried with
//! backoff while CNI fails), init containers in order (restartable "native
//! sidecar" init containers start and keep running), then the containers;
//! restarts per `restartPolicy` with crash-loop backoff; and the status
//! Kubernetes would report at every step.
//!
//! Pure: it never performs I/O. Feed it [`Input`]s with their time; do the
//! [`Action`]s it returns; call [`PodLifecycle::next_wakeup`] to know when to
//! send [`Input::Tick`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::probes::{Health, ProbeKind};

/// Crash-loop backoff: the first restart is immediate, later ones wait
/// `initial`, doubling up to `max` (kubelet uses 10 s and 5 min; the harness
/// compresses time by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before restart number `restarts + 1`.
    fn delay(&self, restarts: u32) -> Duration {
        if restarts == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(restarts - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// A regular init container: runs to completion before the next one.
    Init,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    Sidecar,
    /// A regular container.
    Main,
}

/// What the executor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the netns and run the CNI chain's ADD.
    CreateSandbox,
    /// Start a container's process (attempt 0 is the first start).
    Start {
        container: String,
        kind: ContainerKind,
        attempt: u32,
    },
    /// Kill every process of the pod, then run CNI DEL and remove the netns.
    KillAllAndTeardown,
    /// Stop a running container because `probe` failed; its exit comes back
    /// as [`Input::Exited`] and the restart policy decides what follows.
    Kill { container: String, probe: ProbeKind },
    /// Record a Kubernetes Event on the pod.
    Record {
        warning: bool,
        reason: String,
        message: String,
    },
}

/// What happened to the pod (the state machine's input; the Kubernetes
/// Events it records are [`Action::Record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    SandboxReady {
        pod_ips: Vec<String>,
    },
    SandboxFailed {
        message: String,
    },
    /// The container could not be started (e.g. `ErrImagePull`, `RunContainerError`).
    StartFailed {
        container: String,
        reason: String,
        message: String,
    },
    Started {
        container: String,
    },
    Exited {
        container: String,
        exit_code: i32,
    },
    /// A probe's result crossed its threshold (see [`super::probes`]).
    Probe {
        container: String,
        probe: ProbeKind,
        ok: bool,
    },
    Tick,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: SystemTime,
    },
    Terminated {
        exit_code: i32,
        started: Option<SystemTime>,
        finished: SystemTime,
    },
}

/// Where a container is in its own life, as kubelet tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Not asked to start yet (waiting for the sandbox or earlier init containers).
    NotStarted,
    /// A start was requested; waiting for `Started` or `StartFailed`.
    Starting,
    Running,
    /// Exited or failed to start; (re)start scheduled at `restart_at`.
    BackOff,
    /// Exited for good.
    Done,
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    image: String,
    kind: ContainerKind,
    progress: Progress,
    /// What the API shows.
    state: State,
    last: Option<State>,
    restarts: u32,
    restart_at: Option<SystemTime>,
    /// The scheduled start is a restart after an exit (counts in restartCount).
    restart_after_exit: bool,
    /// Failed starts in a row, for the start-retry backoff.
    start_failures: u32,
    /// What its probes say about the running instance.
    health: Health,
}

impl Container {
    fn done_ok(&self) -> bool {
        self.progress == Progress::Done && matches!(self.state, State::Terminated { exit_code: 0, .. })
    }
    fn running(&self) -> bool {
        self.progress == Progress::Running
    }
    /// Running, past its startup probe and passing its readiness probe.
    fn ready(&self) -> bool {
        self.running() && self.kind != ContainerKind::Init && self.health.ready()
    }
    /// Whether later init containers may start: an init container must have
    /// completed, a sidecar must have started once.
    fn unblocks_next(&self) -> bool {
        match self.kind {
            ContainerKind::Init => self.done_ok(),
            ContainerKind::Sidecar => (self.running() && self.health.started()) || self.last.is_some(),
            ContainerKind::Main => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sandbox {
    Pending { failures: u32 },
    Ready,
    TornDown,
}

/// The state machine of one pod.
#[derive(Debug, Clone)]
pub struct PodLifecycle {
    restart_policy: String,
    containers: Vec<Container>,
    sandbox: Sandbox,
    sandbox_retry_at: Option<SystemTime>,
    pod_ips: Vec<String>,
    backoff: Backoff,
    scheduled_at: SystemTime,
    start_time: Option<SystemTime>,
    deleting: bool,
    transitions: BTreeMap<&'static str, SystemTime>,
}

impl PodLifecycle {
    /// A pod just bound to this node. Returns the first actions (create the sandbox).
    pub fn new(spec: &PodSpec, backoff: Backoff, now: SystemTime) -> (PodLifecycle, Vec<Action>) {
        let init = spec.init_containers.iter().flatten().map(|c| {
            let kind = if c.restart_policy.as_deref() == Some("Always") {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            (c, kind)
        });
        let main = spec.containers.iter().map(|c| (c, ContainerKind::Main));
        let has_init = spec.init_containers.as_ref().is_some_and(|v| !v.is_empty());
        let containers = init
            .chain(main)
            .map(|(c, kind)| Container {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                kind,
                progress: Progress::NotStarted,
                state: State::Waiting {
                    reason: if has_init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    }
                    .into(),
                    message: None,
                },
                last: None,
                restarts: 0,
                restart_at: None,
                restart_after_exit: false,
                start_failures: 0,
                health: Health::of(c, kind == ContainerKind::Init),
            })
            .collect();
        let lifecycle = PodLifecycle {
            restart_policy: spec.restart_policy.clone().unwrap_or_else(|| "Always".into()),
            containers,
            sandbox: Sandbox::Pending { failures: 0 },
            sandbox_retry_at: None,
            pod_ips: Vec::new(),
            backoff,
            scheduled_at: now,
            start_time: Some(now),
            deleting: false,
            transitions: BTreeMap::new(),
        };
        (lifecycle, vec![Action::CreateSandbox])
    }

    /// Applies an input at time `now` and returns what to do next.
    pub fn handle(&mut self, input: Input, now: SystemTime) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.deleting {
            return actions;
        }
        match input {
            Input::Delete => {
                self.deleting = true;
                self.sandbox = Sandbox::TornDown;
                return vec![Action::KillAllAndTeardown];
            }
            Input::SandboxReady { pod_ips } => {
                self.sandbox = Sandbox::Ready;
                self.sandbox_retry_at = None;
                self.pod_ips = pod_ips;
                self.transitions.insert("PodReadyToStartContainers", now);
            }
            Input::SandboxFailed { message } => {
                let failures = match self.sandbox {
                    Sandbox::Pending { failures } => failures + 1,
                    _ => 1,
                };
                self.sandbox = Sandbox::Pending { failures };
                // Kubelet retries sandbox creation on its pod-sync backoff.
                self.sandbox_retry_at = Some(now + self.backoff.delay(failures).max(self.backoff.initial));
                actions.push(Action::Record {
                    warning: true,
                    reason: "FailedCreatePodSandBox".into(),
                    message: format!("Failed to create pod sandbox: {message}"),
                });
            }
            Input::Started { container } => {
                if let Some(c) = self.container_mut(&container) {
                    c.progress = Progress::Running;
                    c.state = State::Running { since: now };
                    c.start_failures = 0;
                    c.health.restart();
                    // The harness's images are local: kubelet's message for
                    // an image it need not pull.
                    actions.push(Action::Record {
                        warning: false,
                        reason: "Pulled".into(),
                        message: format!("Container image {:?} already present on machine", c.image),
                    });
                    actions.push(Action::Record {
                        warning: false,
                        reason: "Created".into(),
                        message: format!("Created container: {container}"),
                    });
                    actions.push(Action::Record {
                        warning: false,
                        reason: "Started".into(),
                        message: format!("Started container {container}"),
                    });
                }
            }
            Input::StartFailed {
                container,
                reason,
                message,
            } => {
                let initial = self.backoff.initial;
                let backoff = self.backoff;
                if let Some(c) = self.container_mut(&container) {
                    c.start_failures += 1;
                    c.progress = Progress::BackOff;
                    let reason = if reason == "ErrImagePull" && c.start_failures > 1 {
                        "ImagePullBackOff".to_string()
                    } else {
                        reason
                    };
                    // A volume that cannot be mounted leaves the container
                    // "ContainerCreating"; the event says why.
                    let waiting = if reason == "FailedMount" {
                        "ContainerCreating".to_string()
                    } else {
                        reason.clone()
                    };
                    c.state = State::Waiting {
                        reason: waiting,
                        message: Some(message.clone()),
                    };
                    c.restart_at = Some(now + backoff.delay(c.start_failures).max(initial));
                    actions.push(Action::Record {
                        warning: true,
                        reason: if reason.contains("Image") {
                            "Failed".into()
                        } else {
                            reason
                        },
                        message,
                    });
                }
            }
            Input::Exited { container, exit_code } => self.exited(&container, exit_code, now, &mut actions),
            Input::Probe { container, probe, ok } => self.probed(&container, probe, ok, &mut actions),
            Input::Tick => {}
        }
        self.advance(now, &mut actions);
        actions
    }

    fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    fn exited(&mut self, name: &str, exit_code: i32, now: SystemTime, actions: &mut Vec<Action>) {
        let policy = self.restart_policy.clone();
        let backoff = self.backoff;
        let Some(c) = self.container_mut(name) else { return };
        let started = match c.state {
            State::Running { since } => Some(since),
            _ => None,
        };
        let terminated = State::Terminated {
            exit_code,
            started,
            finished: now,
        };
        let restart = match c.kind {
            ContainerKind::Sidecar => true,
            ContainerKind::Init => exit_code != 0 && policy != "Never",
            ContainerKind::Main => match policy.as_str() {
                "Always" => true,
                "OnFailure" => exit_code != 0,
                _ => false,
            },
        };
        if restart {
            // Kubelet's first restart is immediate; later ones back off.
            let delay = backoff.delay(c.restarts);
            c.last = Some(terminated.clone());
            c.progress = Progress::BackOff;
            c.restart_at = Some(now + delay);
            c.restart_after_exit = true;
            c.state = terminated;
            if !delay.is_zero() {
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(format!(
                        "back-off {}s restarting failed container={} pod",
                        delay.as_secs(),
                        c.name
                    )),
                };
                actions.push(Action::Record {
                    warning: true,
                    reason: "BackOff".into(),
                    message: format!("Back-off restarting failed container {}", c.name),
                });
            }
        } else {
            c.progress = Progress::Done;
            c.state = terminated;
            c.restart_at = None;
        }
    }

    /// A probe result of a running container: `ready`/`started` change; a
    /// failed liveness or startup probe kills it (once per instance).
    fn probed(&mut self, name: &str, probe: ProbeKind, ok: bool, actions: &mut Vec<Action>) {
        let Some(c) = self.container_mut(name) else { return };
        if !c.running() {
            return;
        }
        if let Some(probe) = c.health.apply(probe, ok) {
            actions.push(Action::Record {
                warning: false,
                reason: "Killing".into(),
                message: format!(
                    "Container {name} failed {} probe, will be restarted",
                    probe.title().to_lowercase()
                ),
            });
            actions.push(Action::Kill {
                container: name.to_string(),
                probe,
            });
        }
    }

    /// Starts whatever is due: the sandbox retry, scheduled restarts, and the
    /// next containers in Kubernetes' order.
    fn advance(&mut self, now: SystemTime, actions: &mut Vec<Action>) {
        if let Sandbox::Pending { failures } = self.sandbox {
            if failures > 0 && self.sandbox_retry_at.is_some_and(|t| t <= now) {
                self.sandbox_retry_at = None;
                actions.push(Action::CreateSandbox);
            }
            return;
        }
        if self.sandbox != Sandbox::Ready {
            return;
        }
        // Init containers start one at a time, in order; containers start
        // together once every init container let them.
        let mut may_start = true;
        for c in &mut self.containers {
            let due = match c.progress {
                Progress::NotStarted => may_start,
                Progress::BackOff => c.restart_at.is_some_and(|t| t <= now),
                _ => false,
            };
            if due {
                if c.restart_after_exit {
                    c.restarts += 1;
                    c.restart_after_exit = false;
                }
                c.progress = Progress::Starting;
                c.restart_at = None;
                if c.last.is_none() {
                    c.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    };
                }
                actions.push(Action::Start {
                    container: c.name.clone(),
                    kind: c.kind,
                    attempt: c.restarts,
                });
            }
            if c.kind != ContainerKind::Main && !c.unblocks_next() {
                may_start = false;
            }
        }
    }

    /// Whether a sandbox ADD was asked for and has not answered yet.
    pub fn sandbox_in_flight(&self) -> bool {
        matches!(self.sandbox, Sandbox::Pending { .. }) && self.sandbox_retry_at.is_none()
    }

    /// The earliest time a [`Input::Tick`] has work to do.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        let restarts = self.containers.iter().filter_map(|c| c.restart_at);
        restarts.chain(self.sandbox_retry_at).min()
    }

    /// The pod status Kubernetes would report now.
    pub fn status(&self) -> PodStatus {
        let time = |t: SystemTime| {
            let since = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
            let secs = i64::try_from(since.as_secs()).ok()?;
            k8s_openapi::jiff::Timestamp::new(secs, 0).ok().map(Time)
        };
        let statuses = |kinds: &[ContainerKind]| -> Vec<ContainerStatus> {
            self.containers
                .iter()
                .filter(|c| kinds.contains(&c.kind))
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: String::new(),
                    ready: c.ready(),
                    started: Some(c.running() && c.health.started()),
                    restart_count: c.restarts as i32,
                    state: Some(to_state(&c.state, &time)),
                    last_state: c.last.as_ref().map(|s| to_state(s, &time)),
                    ..Default::default()
                })
                .collect()
        };
        let init_done = self.containers.iter().all(Container::unblocks_next);
        let mains: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| c.kind == ContainerKind::Main)
            .collect();
        // Restartable init containers count towards readiness as containers do.
        let sidecars_ready = self
            .containers
            .iter()
            .filter(|c| c.kind == ContainerKind::Sidecar)
            .all(Container::ready);
        let containers_ready = !mains.is_empty() && mains.iter().all(|c| c.ready()) && sidecars_ready;
        let failed_init = self
            .containers
            .iter()
            .any(|c| c.kind == ContainerKind::Init && c.progress == Progress::Done && !c.done_ok());
        let mains_done = mains.iter().all(|c| c.progress == Progress::Done);
        let mains_started = mains
            .iter()
            .any(|c| c.running() || c.last.is_some() || c.progress == Progress::Done);
        let phase = if failed_init || (mains_done && mains.iter().any(|c| !c.done_ok())) {
            "Failed"
        } else if mains_done {
            "Succeeded"
        } else if self.sandbox == Sandbox::Ready && init_done && mains_started {
            "Running"
        } else {
            "Pending"
        };
        let condition = |kind: &str, ok: bool, reason: Option<&str>| PodCondition {
            type_: kind.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: if ok { None } else { reason.map(str::to_string) },
            last_transition_time: time(self.scheduled_at),
            ..Default::default()
        };
        let conditions = vec![
            condition("PodReadyToStartContainers", self.sandbox == Sandbox::Ready, None),
            condition("Initialized", init_done, Some("ContainersNotInitialized")),
            condition("Ready", containers_ready, Some("ContainersNotReady")),
            condition("ContainersReady", containers_ready, Some("ContainersNotReady")),
            condition("PodScheduled", true, None),
        ];
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            pod_ip: self.pod_ips.first().cloned(),
            pod_ips: (!self.pod_ips.is_empty())
                .then(|| self.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
            start_time: self.start_time.and_then(time),
            init_container_statuses: Some(statuses(&[ContainerKind::Init, ContainerKind::Sidecar]))
                .filter(|v| !v.is_empty()),
            container_statuses: Some(statuses(&[ContainerKind::Main])),
            ..Default::default()
        }
    }
}

fn to_state(state: &State, time: &dyn Fn(SystemTime) -> Option<Time>) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(*since),
            }),
            ..Default::default()
        },
        State::Terminated {
            exit_code,
            started,
            finished,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *exit_code,
                reason: Some(if *exit_code == 0 { "Completed" } else { "Error" }.into()),
                started_at: started.and_then(time),
                finished_at: time(*finished),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container as K8sContainer;

    fn started(container: &str) -> Input {
        Input::Started {
            container: container.into(),
        }
    }

    fn exited(container: &str, exit_code: i32) -> Input {
        Input::Exited {
            container: container.into(),
            exit_code,
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn container(name: &str, always: bool) -> K8sContainer {
        K8sContainer {
            name: name.into(),
            image: Some(format!("{name}-image")),
            restart_policy: always.then(|| "Always".into()),
            ..Default::default()
        }
    }

    fn spec(init: &[(&str, bool)], main: &[&str], policy: &str) -> PodSpec {
        PodSpec {
            init_containers: Some(init.iter().map(|(n, a)| container(n, *a)).collect()),
            containers: main.iter().map(|n| container(n, false)).collect(),
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    /// What `pick` finds in each action that has it, in order.
    fn picked(actions: &[Action], pick: impl Fn(&Action) -> Option<&String>) -> Vec<String> {
        actions.iter().filter_map(pick).cloned().collect()
    }

    /// The containers the actions start.
    fn starts(actions: &[Action]) -> Vec<String> {
        picked(actions, |a| match a {
            Action::Start { container, .. } => Some(container),
            _ => None,
        })
    }

    fn init_status<'a>(s: &'a PodStatus, name: &str) -> &'a ContainerStatus {
        s.init_container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .unwrap()
    }

    fn ready(pod: &mut PodLifecycle, at: SystemTime) -> Vec<Action> {
        pod.handle(
            Input::SandboxReady {
                pod_ips: vec!["10.251.0.5".into()],
            },
            at,
        )
    }

    #[test]
    fn a_plain_pod_starts_and_runs() {
        let (mut pod, first) = PodLifecycle::new(&spec(&[], &["app", "sidecar"], "Always"), Backoff::default(), t(0));
        assert_eq!(first, vec![Action::CreateSandbox]);
        assert_eq!(pod.status().phase.as_deref(), Some("Pending"));
        let waiting = &pod.status().container_statuses.unwrap()[0];
        assert_eq!(
            waiting
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );

        assert_eq!(starts(&ready(&mut pod, t(1))), vec!["app", "sidecar"]);
        pod.handle(started("app"), t(1));
        pod.handle(started("sidecar"), t(1));
        let s = pod.status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.251.0.5"));
        let ready = s.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn cni_failures_are_events_and_the_sandbox_is_retried_with_backoff() {
        let (mut pod, _) = PodLifecycle::new(&spec(&[], &["app"], "Always"), Backoff::default(), t(0));
        let actions = pod.handle(
            Input::SandboxFailed {
                message: "plugin type=\"istio-cni\" failed (add): boom".into(),
            },
            t(0),
        );
        assert!(
            matches!(&actions[0], Action::Record { warning: true, reason, message } if reason == "FailedCreatePodSandBox" && message.contains("boom"))
        );
        assert_eq!(pod.next_wakeup(), Some(t(1)));
        assert!(pod.handle(Input::Tick, t(0)).is_empty(), "not yet due");
        assert_eq!(pod.handle(Input::Tick, t(1)), vec![Action::CreateSandbox]);
        pod.handle(
            Input::SandboxFailed {
                message: "again".into(),
            },
            t(1),
        );
        assert_eq!(pod.next_wakeup(), Some(t(3)), "retries back off: 1 s, then 2 s");
        assert!(pod.handle(Input::Tick, t(2)).is_empty());
        assert_eq!(pod.handle(Input::Tick, t(3)), vec![Action::CreateSandbox]);
        assert_eq!(starts(&ready(&mut pod, t(3))), vec!["app"]);
    }

    #[test]
    fn init_containers_run_in_order_and_gate_the_containers() {
        let (mut pod, _) = PodLifecycle::new(
            &spec(&[("one", false), ("two", false)], &["app"], "Always"),
            Backoff::default(),
            t(0),
        );
        assert_eq!(starts(&ready(&mut pod, t(0))), vec!["one"]);
        pod.handle(started("one"), t(0));
        assert!(starts(&pod.handle(Input::Tick, t(1))).is_empty());
        assert_eq!(starts(&pod.handle(exited("one", 0), t(1))), vec!["two"]);
        let s = pod.status();
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let one = init_status(&s, "one");
        assert_eq!(
            one.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );
        pod.handle(started("two"), t(1));
        assert_eq!(starts(&pod.handle(exited("two", 0), t(2))), vec!["app"]);
        pod.handle(started("app"), t(2));
        assert_eq!(pod.status().phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_failing_init_container_crash_loops_with_exit_126_visible() {
        let backoff = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(40),
        };
        let (mut pod, _) = PodLifecycle::new(&spec(&[("istio-validation", false)], &["app"], "Always"), backoff, t(0));
        ready(&mut pod, t(0));
        pod.handle(started("istio-validation"), t(0));
        // The first restart is immediate.
        let restart = pod.handle(exited("istio-validation", 126), t(5));
        assert_eq!(
            restart,
            vec![Action::Start {
                container: "istio-validation".into(),
                kind: ContainerKind::Init,
                attempt: 1
            }]
        );
        pod.handle(started("istio-validation"), t(5));
        let v = init_status(&pod.status(), "istio-validation").clone();
        assert_eq!(v.restart_count, 1);
        assert_eq!(v.last_state.unwrap().terminated.unwrap().exit_code, 126);

        // Then back-off: 10 s, 20 s, 40 s, 40 s.
        let mut at = 10;
        for (n, delay) in [10u64, 20, 40, 40].into_iter().enumerate() {
            let actions = pod.handle(exited("istio-validation", 126), t(at));
            assert!(
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Record { reason, .. } if reason == "BackOff"))
            );
            let s = pod.status();
            let v = init_status(&s, "istio-validation");
            assert_eq!(
                v.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(),
                Some("CrashLoopBackOff")
            );
            assert_eq!(
                v.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code,
                126
            );
            assert_eq!(v.restart_count, n as i32 + 1);
            assert_eq!(s.phase.as_deref(), Some("Pending"));
            assert_eq!(pod.next_wakeup(), Some(t(at + delay)), "restart {n}");
            assert!(starts(&pod.handle(Input::Tick, t(at + delay - 1))).is_empty());
            assert_eq!(
                starts(&pod.handle(Input::Tick, t(at + delay))),
                vec!["istio-validation"]
            );
            pod.handle(started("istio-validation"), t(at + delay));
            at += delay + 1;
        }
        // Once it passes, the app starts and the pod runs.
        assert_eq!(starts(&pod.handle(exited("istio-validation", 0), t(at))), vec!["app"]);
        pod.handle(started("app"), t(at));
        assert_eq!(pod.status().phase.as_deref(), Some("Running"));
    }

    #[test]
    fn with_restart_policy_never_a_failed_init_fails_the_pod_without_last_state() {
        let (mut pod, _) = PodLifecycle::new(
            &spec(&[("istio-validation", false)], &["app"], "Never"),
            Backoff::default(),
            t(0),
        );
        ready(&mut pod, t(0));
        pod.handle(started("istio-validation"), t(0));
        assert!(starts(&pod.handle(exited("istio-validation", 126), t(1))).is_empty());
        let s = pod.status();
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert!(init_status(&s, "istio-validation").last_state.is_none());
    }

    #[test]
    fn a_native_sidecar_starts_then_lets_the_next_init_container_run_and_keeps_restarting() {
        let s = spec(
            &[("istio-validation", false), ("istio-proxy", true), ("user-init", false)],
            &["app"],
            "Never",
        );
        let (mut pod, _) = PodLifecycle::new(&s, Backoff::default(), t(0));
        assert_eq!(starts(&ready(&mut pod, t(0))), vec!["istio-validation"]);
        pod.handle(started("istio-validation"), t(0));
        assert_eq!(
            starts(&pod.handle(exited("istio-validation", 0), t(1))),
            vec!["istio-proxy"]
        );
        assert_eq!(starts(&pod.handle(started("istio-proxy"), t(1))), vec!["user-init"]);
        pod.handle(started("user-init"), t(1));
        assert_eq!(starts(&pod.handle(exited("user-init", 0), t(2))), vec!["app"]);
        pod.handle(started("app"), t(2));
        assert_eq!(pod.status().phase.as_deref(), Some("Running"));
        // A sidecar restarts even under restartPolicy: Never.
        assert_eq!(starts(&pod.handle(exited("istio-proxy", 1), t(3))), vec!["istio-proxy"]);
        // When the app completes, the pod succeeds.
        pod.handle(started("istio-proxy"), t(3));
        pod.handle(exited("app", 0), t(4));
        assert_eq!(pod.status().phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn restart_policies_of_containers() {
        for (policy, code, restarts, phase) in [
            ("Always", 0, true, "Running"),
            ("OnFailure", 0, false, "Succeeded"),
            ("OnFailure", 3, true, "Running"),
            ("Never", 3, false, "Failed"),
        ] {
            let (mut pod, _) = PodLifecycle::new(&spec(&[], &["app"], policy), Backoff::default(), t(0));
            ready(&mut pod, t(0));
            pod.handle(started("app"), t(0));
            let again = starts(&pod.handle(exited("app", code), t(1)));
            assert_eq!(!again.is_empty(), restarts, "{policy} exit {code}");
            if restarts {
                pod.handle(started("app"), t(1));
            }
            assert_eq!(pod.status().phase.as_deref(), Some(phase), "{policy} exit {code}");
        }
    }

    #[test]
    fn unknown_images_wait_with_err_image_pull_then_back_off() {
        let (mut pod, _) = PodLifecycle::new(&spec(&[], &["app"], "Always"), Backoff::default(), t(0));
        ready(&mut pod, t(0));
        let msg = "image \"nope:1\" is not in the harness's image table";
        let actions = pod.handle(
            Input::StartFailed {
                container: "app".into(),
                reason: "ErrImagePull".into(),
                message: msg.into(),
            },
            t(0),
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Record { warning: true, .. }))
        );
        let waiting = |pod: &PodLifecycle| {
            pod.status().container_statuses.unwrap()[0]
                .state
                .clone()
                .unwrap()
                .waiting
                .unwrap()
                .reason
                .unwrap()
        };
        assert_eq!(waiting(&pod), "ErrImagePull");
        assert_eq!(pod.status().phase.as_deref(), Some("Pending"));
        assert_eq!(starts(&pod.handle(Input::Tick, t(1))), vec!["app"]);
        pod.handle(
            Input::StartFailed {
                container: "app".into(),
                reason: "ErrImagePull".into(),
                message: msg.into(),
            },
            t(1),
        );
        assert_eq!(waiting(&pod), "ImagePullBackOff");
        assert_eq!(pod.status().container_statuses.unwrap()[0].restart_count, 0);
    }

    fn probe(container: &str, probe: ProbeKind, ok: bool) -> Input {
        Input::Probe {
            container: container.into(),
            probe,
            ok,
        }
    }

    /// A pod whose containers declare probes (empty handlers: the
    /// lifecycle only sees their results).
    fn probed_spec(main: &[(&str, bool, bool)], sidecar: Option<(&str, bool)>) -> PodSpec {
        let probe = || Some(Default::default());
        let with = |name: &str, startup: bool, readiness: bool, always: bool| K8sContainer {
            startup_probe: if startup { probe() } else { None },
            readiness_probe: if readiness { probe() } else { None },
            liveness_probe: probe(),
            ..container(name, always)
        };
        PodSpec {
            init_containers: sidecar.map(|(n, startup)| vec![with(n, startup, false, true)]),
            containers: main.iter().map(|(n, s, r)| with(n, *s, *r, false)).collect(),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }
    }

    fn condition(pod: &PodLifecycle, kind: &str) -> bool {
        let s = pod.status();
        s.conditions.unwrap().iter().find(|c| c.type_ == kind).unwrap().status == "True"
    }

    fn main_status(pod: &PodLifecycle, name: &str) -> ContainerStatus {
        pod.status()
            .container_statuses
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
    }

    /// The reasons of the events the actions record.
    fn reasons(actions: &[Action]) -> Vec<String> {
        picked(actions, |a| match a {
            Action::Record { reason, .. } => Some(reason),
            _ => None,
        })
    }

    #[test]
    fn a_start_records_pulled_created_started() {
        let (mut pod, _) = PodLifecycle::new(&spec(&[], &["app"], "Always"), Backoff::default(), t(0));
        ready(&mut pod, t(0));
        let actions = pod.handle(started("app"), t(0));
        assert_eq!(reasons(&actions), ["Pulled", "Created", "Started"]);
        assert!(matches!(&actions[0], Action::Record { message, .. }
            if message == "Container image \"app-image\" already present on machine"));
        assert!(matches!(&actions[1], Action::Record { message, .. } if message == "Created container: app"));
    }

    #[test]
    fn readiness_results_drive_container_ready_and_the_pod_conditions() {
        let (mut pod, _) = PodLifecycle::new(
            &probed_spec(&[("app", false, true), ("plain", false, false)], None),
            Backoff::default(),
            t(0),
        );
        ready(&mut pod, t(0));
        pod.handle(started("app"), t(0));
        pod.handle(started("plain"), t(0));
        assert_eq!(pod.status().phase.as_deref(), Some("Running"));
        assert!(
            !main_status(&pod, "app").ready,
            "not ready before its readiness probe passes"
        );
        assert!(
            main_status(&pod, "plain").ready,
            "no readiness probe: ready when running"
        );
        assert!(!condition(&pod, "Ready") && !condition(&pod, "ContainersReady"));

        assert!(pod.handle(probe("app", ProbeKind::Readiness, true), t(1)).is_empty());
        assert!(main_status(&pod, "app").ready);
        assert!(condition(&pod, "Ready") && condition(&pod, "ContainersReady"));

        assert!(pod.handle(probe("app", ProbeKind::Readiness, false), t(2)).is_empty());
        let app = main_status(&pod, "app");
        assert!(!app.ready && app.started == Some(true) && app.restart_count == 0);
        assert!(!condition(&pod, "Ready") && !condition(&pod, "ContainersReady"));
        assert_eq!(
            pod.status().phase.as_deref(),
            Some("Running"),
            "not ready is still running"
        );
    }

    #[test]
    fn a_startup_probe_holds_started_and_ready_until_it_passes() {
        let (mut pod, _) = PodLifecycle::new(&probed_spec(&[("app", true, true)], None), Backoff::default(), t(0));
        ready(&mut pod, t(0));
        pod.handle(started("app"), t(0));
        // A readiness result before startup passed does not make it ready.
        pod.handle(probe("app", ProbeKind::Readiness, true), t(1));
        let app = main_status(&pod, "app");
        assert_eq!((app.started, app.ready), (Some(false), false));
        pod.handle(probe("app", ProbeKind::Startup, true), t(2));
        let app = main_status(&pod, "app");
        assert_eq!((app.started, app.ready), (Some(true), true));
        assert!(condition(&pod, "Ready"));
    }

    #[test]
    fn a_liveness_failure_kills_once_then_the_restart_policy_and_backoff_apply() {
        let (mut pod, _) = PodLifecycle::new(&probed_spec(&[("app", false, false)], None), Backoff::default(), t(0));
        ready(&mut pod, t(0));
        pod.handle(started("app"), t(0));
        assert!(pod.handle(probe("app", ProbeKind::Liveness, true), t(1)).is_empty());
        let actions = pod.handle(probe("app", ProbeKind::Liveness, false), t(2));
        assert_eq!(
            actions,
            vec![
                Action::Record {
                    warning: false,
                    reason: "Killing".into(),
                    message: "Container app failed liveness probe, will be restarted".into(),
                },
                Action::Kill {
                    container: "app".into(),
                    probe: ProbeKind::Liveness
                },
            ]
        );
        assert!(
            pod.handle(probe("app", ProbeKind::Liveness, false), t(2)).is_empty(),
            "killed once"
        );
        // The process exits (SIGTERM handled: 0); the first restart is immediate.
        assert_eq!(starts(&pod.handle(exited("app", 0), t(3))), vec!["app"]);
        pod.handle(started("app"), t(3));
        assert_eq!(main_status(&pod, "app").restart_count, 1);
        // A result for the new instance kills again; the next restart backs off.
        assert!(matches!(
            &pod.handle(probe("app", ProbeKind::Liveness, false), t(4))[..],
            [Action::Record { .. }, Action::Kill { .. }]
        ));
        let actions = pod.handle(exited("app", 137), t(5));
        assert_eq!(reasons(&actions), ["BackOff"]);
        assert!(starts(&actions).is_empty());
        assert_eq!(starts(&pod.handle(Input::Tick, t(6))), vec!["app"]);
        // Results for a container that is not running are ignored.
        assert!(pod.handle(probe("app", ProbeKind::Liveness, false), t(6)).is_empty());
    }

    #[test]
    fn a_startup_failure_kills_and_a_never_policy_fails_the_pod() {
        let mut s = probed_spec(&[("app", true, false)], None);
        s.restart_policy = Some("Never".into());
        let (mut pod, _) = PodLifecycle::new(&s, Backoff::default(), t(0));
        ready(&mut pod, t(0));
        pod.handle(started("app"), t(0));
        let actions = pod.handle(probe("app", ProbeKind::Startup, false), t(1));
        assert!(matches!(&actions[0], Action::Record { message, .. }
            if message == "Container app failed startup probe, will be restarted"));
        assert!(matches!(
            &actions[1],
            Action::Kill {
                probe: ProbeKind::Startup,
                ..
            }
        ));
        assert!(starts(&pod.handle(exited("app", 137), t(2))).is_empty());
        assert_eq!(pod.status().phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn a_sidecar_startup_probe_gates_the_containers_and_its_readiness_the_pod() {
        let (mut pod, _) = PodLifecycle::new(
            &probed_spec(&[("app", false, false)], Some(("proxy", true))),
            Backoff::default(),
            t(0),
        );
        assert_eq!(starts(&ready(&mut pod, t(0))), vec!["proxy"]);
        assert!(
            starts(&pod.handle(started("proxy"), t(0))).is_empty(),
            "not started yet"
        );
        assert!(!condition(&pod, "Initialized"));
        assert_eq!(
            starts(&pod.handle(probe("proxy", ProbeKind::Startup, true), t(1))),
            vec!["app"]
        );
        pod.handle(started("app"), t(1));
        assert!(condition(&pod, "Ready"));
        // A sidecar that is not ready makes the pod not ready.
        let (mut pod, _) = PodLifecycle::new(
            &PodSpec {
                init_containers: Some(vec![K8sContainer {
                    readiness_probe: Some(Default::default()),
                    ..container("proxy", true)
                }]),
                ..spec(&[], &["app"], "Always")
            },
            Backoff::default(),
            t(0),
        );
        ready(&mut pod, t(0));
        pod.handle(started("proxy"), t(0));
        pod.handle(started("app"), t(0));
        assert!(!condition(&pod, "Ready") && !condition(&pod, "ContainersReady"));
        pod.handle(probe("proxy", ProbeKind::Readiness, true), t(1));
        assert!(condition(&pod, "Ready"));
    }

    #[test]
    fn delete_tears_down_once_and_ignores_later_events() {
        let (mut pod, _) = PodLifecycle::new(&spec(&[], &["app"], "Always"), Backoff::default(), t(0));
        ready(&mut pod, t(0));
        assert_eq!(pod.handle(Input::Delete, t(1)), vec![Action::KillAllAndTeardown]);
        assert!(pod.handle(exited("app", 137), t(1)).is_empty());
        assert!(pod.handle(Input::Delete, t(2)).is_empty());
    }
}
