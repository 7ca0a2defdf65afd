//! The prober tasks: one per container instance, running its startup probe
//! until it succeeds, then its liveness and readiness probes side by side,
//! each on its own period, reporting to the pod's worker.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::exec;
use super::net::{self, HttpGet, Origin};
use super::spec::{Handler, ProbeKind, Settings};
use super::state::{Outcome, Threshold};

/// What a prober tells the pod's worker after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub container: String,
    /// Which start of the container the prober watches ([`Probers::current`]).
    pub instance: u64,
    pub kind: ProbeKind,
    /// The message of the `Unhealthy` event a failed or errored run records.
    pub unhealthy: Option<String>,
    /// A result that crossed its threshold (the lifecycle's input).
    pub result: Option<bool>,
}

/// Where a container's probes go.
#[derive(Debug, Clone)]
pub struct Target {
    /// httpGet and tcpSocket connect from here.
    pub origin: Origin,
    /// The container's main process: exec probes join its namespaces.
    pub pid: i32,
}

/// Receives the reports of every prober of a pod.
pub type Sink = Arc<dyn Fn(Report) + Send + Sync>;

/// The probes a container declares.
#[derive(Debug, Clone)]
struct ContainerProbes {
    startup: Option<Settings>,
    liveness: Option<Settings>,
    readiness: Option<Settings>,
}

impl ContainerProbes {
    fn of(c: &Container) -> Option<ContainerProbes> {
        let read = |kind: ProbeKind| kind.of(c).map(|p| Settings::new(kind, p, c));
        let probes = ContainerProbes {
            startup: read(ProbeKind::Startup),
            liveness: read(ProbeKind::Liveness),
            readiness: read(ProbeKind::Readiness),
        };
        (probes.startup.is_some() || probes.liveness.is_some() || probes.readiness.is_some()).then_some(probes)
    }
}

/// The running probers of a pod's containers; aborted when replaced, when
/// their container exits, and on drop.
#[derive(Default)]
pub struct Probers {
    running: HashMap<String, (u64, AbortHandle)>,
    next: u64,
}

impl Probers {
    /// Starts probing a container instance that just started (its initial
    /// delays count from now); replaces the previous instance's prober.
    pub fn start(&mut self, c: &Container, target: Target, sink: Sink) {
        self.stop(&c.name);
        let Some(probes) = ContainerProbes::of(c) else {
            return;
        };
        self.next += 1;
        let out = Out {
            container: c.name.clone(),
            instance: self.next,
            sink,
        };
        let task = tokio::spawn(probe_container(probes, target, Instant::now(), out));
        self.running.insert(c.name.clone(), (self.next, task.abort_handle()));
    }

    /// Stops probing a container (it exited or is being removed).
    pub fn stop(&mut self, container: &str) {
        if let Some((_, task)) = self.running.remove(container) {
            task.abort();
        }
    }

    /// Whether a report comes from the prober of the container's current
    /// instance (not from one already replaced or stopped).
    pub fn current(&self, report: &Report) -> bool {
        self.running
            .get(&report.container)
            .is_some_and(|(instance, _)| *instance == report.instance)
    }
}

impl Drop for Probers {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

struct Out {
    container: String,
    instance: u64,
    sink: Sink,
}

async fn probe_container(probes: ContainerProbes, target: Target, started: Instant, out: Out) {
    if let Some(startup) = &probes.startup
        && !watch(ProbeKind::Startup, startup, &target, started, &out).await
    {
        return;
    }
    let live = async {
        if let Some(s) = &probes.liveness {
            watch(ProbeKind::Liveness, s, &target, started, &out).await;
        }
    };
    let ready = async {
        if let Some(s) = &probes.readiness {
            watch(ProbeKind::Readiness, s, &target, started, &out).await;
        }
    };
    tokio::join!(live, ready);
}

/// Runs one probe every period from `started + initialDelay` until its
/// result is final for this instance: startup until it succeeds or fails,
/// liveness until it fails, readiness for ever. Whether it ended in success.
async fn watch(kind: ProbeKind, s: &Settings, target: &Target, started: Instant, out: &Out) -> bool {
    tokio::time::sleep_until(started + s.initial_delay).await;
    let mut threshold = Threshold::new(kind, s.success_threshold, s.failure_threshold);
    let mut ticks = tokio::time::interval(s.period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = execute(s, target).await;
        let unhealthy = match &outcome {
            Outcome::Success => None,
            Outcome::Failure(m) => Some(format!("{} probe failed: {m}", kind.title())),
            Outcome::Error(m) => Some(format!(
                "{} probe errored and resulted in unknown state: {m}",
                kind.title()
            )),
        };
        let result = threshold.observe(&outcome);
        if unhealthy.is_some() || result.is_some() {
            (out.sink)(Report {
                container: out.container.clone(),
                instance: out.instance,
                kind,
                unhealthy,
                result,
            });
        }
        match (kind, result) {
            (ProbeKind::Startup, Some(true)) => return true,
            (ProbeKind::Startup | ProbeKind::Liveness, Some(false)) => return false,
            _ => {}
        }
    }
}

/// One run of the probe's handler, bounded by its timeout.
async fn execute(s: &Settings, target: &Target) -> Outcome {
    let handler = match &s.handler {
        Ok(h) => h,
        Err(e) => return Outcome::Error(e.clone()),
    };
    match handler {
        Handler::Http {
            https,
            host,
            port,
            path,
            headers,
        } => {
            let get = HttpGet {
                https: *https,
                host: host.as_deref(),
                port: *port,
                path,
                headers,
            };
            net::http(&target.origin, &get, s.timeout).await
        }
        Handler::Tcp { host, port } => net::tcp(&target.origin, host.as_deref(), *port, s.timeout).await,
        Handler::Exec { command } => exec::run(target.pid, command, s.timeout).await,
        Handler::Grpc { port, .. } => Outcome::Error(format!(
            "grpc probe on port {port}: gRPC probes are not supported by this harness (use httpGet, tcpSocket or exec)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::IpAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A container whose probes hit a loopback server answering `/ok` with
    /// 200 and anything else with 500.
    fn container(probes: serde_json::Value) -> Container {
        let mut c = json!({"name": "app"});
        c.as_object_mut().unwrap().extend(probes.as_object().unwrap().clone());
        serde_json::from_value(c).unwrap()
    }

    async fn server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = buf[..n].starts_with(b"GET /ok ");
                let line = if ok {
                    "HTTP/1.1 200 OK\r\n\r\n"
                } else {
                    "HTTP/1.1 500 Boom\r\n\r\n"
                };
                let _ = s.write_all(line.as_bytes()).await;
            }
        });
        port
    }

    fn collect() -> (Sink, Arc<Mutex<Vec<Report>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        (Arc::new(move |r| sink_seen.lock().unwrap().push(r)), seen)
    }

    fn target() -> Target {
        Target {
            origin: Origin {
                netns: None,
                pod_ip: Some(IpAddr::from([127, 0, 0, 1])),
            },
            pid: std::process::id() as i32,
        }
    }

    /// Startup fails until its threshold, which ends probing (the kill is
    /// the lifecycle's); liveness and readiness never ran.
    #[tokio::test]
    async fn a_failing_startup_probe_reports_each_failure_then_the_result_and_stops() {
        let port = server().await;
        let c = container(json!({
            "startupProbe": {"httpGet": {"port": port, "path": "/bad"}, "periodSeconds": 1, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"port": port, "path": "/ok"}, "periodSeconds": 1},
        }));
        let (sink, seen) = collect();
        let mut probers = Probers::default();
        probers.start(&c, target(), sink);
        let task = probers.running.get("app").unwrap().1.clone();
        while !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:#?}");
        for (n, r) in seen.iter().enumerate() {
            assert_eq!(r.kind, ProbeKind::Startup);
            assert_eq!(
                r.unhealthy.as_deref(),
                Some("Startup probe failed: HTTP probe failed with statuscode: 500")
            );
            assert_eq!(r.result, (n == 2).then_some(false));
            assert!(probers.current(r));
        }
    }

    /// After startup succeeds, readiness reports ready; a replaced prober's
    /// reports are no longer current.
    #[tokio::test]
    async fn startup_success_hands_over_to_readiness_and_liveness() {
        let port = server().await;
        let c = container(json!({
            "startupProbe": {"httpGet": {"port": port, "path": "/ok"}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            "readinessProbe": {"httpGet": {"port": port, "path": "/ok"}, "periodSeconds": 1, "initialDelaySeconds": 2},
        }));
        let (sink, seen) = collect();
        let mut probers = Probers::default();
        probers.start(&c, target(), sink.clone());
        let wanted = |seen: &[Report]| seen.iter().any(|r| r.kind == ProbeKind::Readiness);
        while !wanted(&seen.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = seen.lock().unwrap().clone();
        assert_eq!(got[0].kind, ProbeKind::Startup);
        assert_eq!((got[0].result, got[0].unhealthy.as_deref()), (Some(true), None));
        let ready = got.iter().find(|r| r.kind == ProbeKind::Readiness).unwrap();
        assert_eq!(ready.result, Some(true));
        assert!(
            got.iter().all(|r| r.kind != ProbeKind::Liveness),
            "liveness succeeding is no news"
        );
        assert!(probers.current(ready));
        probers.start(&c, target(), sink);
        assert!(!probers.current(ready), "a restart replaces the prober");
        probers.stop("app");
        assert!(probers.running.is_empty());
    }

    #[tokio::test]
    async fn invalid_and_grpc_probes_error() {
        let c = container(json!({}));
        let s = Settings::new(
            ProbeKind::Readiness,
            &serde_json::from_value(json!({"grpc": {"port": 9090}})).unwrap(),
            &c,
        );
        assert!(matches!(execute(&s, &target()).await, Outcome::Error(m) if m.contains("not supported")));
        let s = Settings::new(
            ProbeKind::Readiness,
            &serde_json::from_value(json!({"tcpSocket": {"port": "missing"}})).unwrap(),
            &c,
        );
        assert!(matches!(execute(&s, &target()).await, Outcome::Error(m) if m.contains("couldn't find port")));
        assert!(ContainerProbes::of(&c).is_none());
    }
}
