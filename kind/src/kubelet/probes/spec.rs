//! A container's probe as kubelet reads it: the API defaults applied, named
//! ports resolved against the container's ports.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The three probe kinds, in the order kubelet gates them: startup first,
/// then liveness and readiness together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The word kubelet's events start with ("Readiness probe failed: ...").
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The container's probe of this kind, if any.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// How to check the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Http {
        https: bool,
        /// `None`: the pod IP.
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
    Grpc {
        port: u16,
        service: Option<String>,
    },
}

/// A probe with Kubernetes' defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// What to run; an invalid probe errors at every period, as kubelet's
    /// prober does with one it cannot run.
    pub handler: Result<Handler, String>,
    /// Overrides the pod's grace period when this probe kills the container.
    pub termination_grace: Option<Duration>,
}

impl Settings {
    /// Reads `probe` of `kind` on container `c`.
    pub fn new(kind: ProbeKind, probe: &Probe, c: &Container) -> Settings {
        let secs = |v: Option<i32>, default: u64, min: u64| {
            Duration::from_secs(v.map_or(default, |v| u64::try_from(v).unwrap_or(0).max(min)))
        };
        let count = |v: Option<i32>, default: u32| v.map_or(default, |v| u32::try_from(v).unwrap_or(0).max(1));
        // The API only admits successThreshold 1 for liveness and startup.
        let success_threshold = match kind {
            ProbeKind::Readiness => count(probe.success_threshold, 1),
            ProbeKind::Liveness | ProbeKind::Startup => 1,
        };
        Settings {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, 3),
            handler: handler(probe, c),
            termination_grace: probe
                .termination_grace_period_seconds
                .filter(|_| kind != ProbeKind::Readiness)
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
        }
    }
}

fn handler(probe: &Probe, c: &Container) -> Result<Handler, String> {
    if let Some(h) = &probe.http_get {
        return http_get(h, c);
    }
    if let Some(t) = &probe.tcp_socket {
        return Ok(Handler::Tcp {
            host: t.host.clone().filter(|s| !s.is_empty()),
            port: port(&t.port, c)?,
        });
    }
    if let Some(e) = &probe.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe has no command".into());
        }
        return Ok(Handler::Exec { command });
    }
    if let Some(g) = &probe.grpc {
        return Ok(Handler::Grpc {
            port: number(i64::from(g.port))?,
            service: g.service.clone(),
        });
    }
    Err("probe has no handler (httpGet, tcpSocket, exec or grpc)".into())
}

/// An httpGet action (a probe's or a lifecycle hook's) of container `c`.
pub fn http_get(h: &HTTPGetAction, c: &Container) -> Result<Handler, String> {
    let https = match h.scheme.as_deref().unwrap_or("HTTP") {
        "HTTP" => false,
        "HTTPS" => true,
        other => return Err(format!("unsupported HTTP probe scheme {other:?}: use HTTP or HTTPS")),
    };
    let path = match h.path.as_deref() {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    };
    if path.chars().any(|ch| ch.is_control() || ch == ' ') {
        return Err(format!("HTTP probe path {path:?} has spaces or control characters"));
    }
    let mut headers = Vec::new();
    for header in h.http_headers.iter().flatten() {
        let bad = |s: &str| s.chars().any(|ch| ch.is_control());
        if header.name.is_empty() || header.name.contains(':') || bad(&header.name) || bad(&header.value) {
            return Err(format!("invalid HTTP probe header {:?}", header.name));
        }
        headers.push((header.name.clone(), header.value.clone()));
    }
    Ok(Handler::Http {
        https,
        host: h.host.clone().filter(|s| !s.is_empty()),
        port: port(&h.port, c)?,
        path,
        headers,
    })
}

/// A port number, or the container port of that name.
fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => number(i64::from(*n)),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i64>() {
                return number(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .map(|cp| number(i64::from(cp.container_port)))
                .unwrap_or_else(|| Err(format!("couldn't find port {name:?} in container {:?}", c.name)))
        }
    }
}

fn number(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(kind: ProbeKind, probe: serde_json::Value) -> Settings {
        let c: Container = serde_json::from_value(json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        Settings::new(kind, &serde_json::from_value(probe).unwrap(), &c)
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let s = settings(ProbeKind::Readiness, json!({"tcpSocket": {"port": 80}}));
        assert_eq!(s.initial_delay, Duration::ZERO);
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.handler, Ok(Handler::Tcp { host: None, port: 80 }));
        assert_eq!(s.termination_grace, None);
    }

    #[test]
    fn values_are_clamped_to_what_the_api_admits() {
        let probe = json!({"exec": {"command": ["true"]}, "periodSeconds": 0, "timeoutSeconds": -3,
            "successThreshold": 4, "failureThreshold": 0, "initialDelaySeconds": 5,
            "terminationGracePeriodSeconds": 2});
        let r = settings(ProbeKind::Readiness, probe.clone());
        assert_eq!((r.period, r.timeout), (Duration::from_secs(1), Duration::from_secs(1)));
        assert_eq!((r.success_threshold, r.failure_threshold), (4, 1));
        assert_eq!(r.initial_delay, Duration::from_secs(5));
        assert_eq!(r.termination_grace, None, "readiness never kills");
        let l = settings(ProbeKind::Liveness, probe);
        assert_eq!(l.success_threshold, 1);
        assert_eq!(l.termination_grace, Some(Duration::from_secs(2)));
    }

    #[test]
    fn http_get_with_named_port_headers_and_scheme() {
        let s = settings(
            ProbeKind::Liveness,
            json!({"httpGet": {"port": "http", "path": "healthz", "scheme": "HTTPS",
                "httpHeaders": [{"name": "X-Probe", "value": "yes"}]}}),
        );
        assert_eq!(
            s.handler,
            Ok(Handler::Http {
                https: true,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-Probe".into(), "yes".into())],
            })
        );
        let s = settings(
            ProbeKind::Liveness,
            json!({"httpGet": {"port": 81, "host": "10.0.0.9"}}),
        );
        assert!(
            matches!(s.handler, Ok(Handler::Http { port: 81, ref path, host: Some(ref h), https: false, .. }) if path == "/" && h == "10.0.0.9")
        );
    }

    #[test]
    fn invalid_probes_name_the_problem() {
        let err = |probe| settings(ProbeKind::Readiness, probe).handler.unwrap_err();
        assert!(err(json!({"tcpSocket": {"port": "grpc"}})).contains("couldn't find port \"grpc\""));
        assert!(err(json!({"tcpSocket": {"port": 70000}})).contains("invalid port number: 70000"));
        assert!(err(json!({"tcpSocket": {"port": 0}})).contains("invalid port number: 0"));
        assert!(err(json!({"httpGet": {"port": 80, "scheme": "FTP"}})).contains("\"FTP\""));
        assert!(err(json!({"httpGet": {"port": 80, "path": "/a b"}})).contains("spaces"));
        assert!(
            err(json!({"httpGet": {"port": 80, "httpHeaders": [{"name": "A:B", "value": "x"}]}})).contains("header")
        );
        assert!(err(json!({"exec": {"command": []}})).contains("no command"));
        assert!(err(json!({})).contains("no handler"));
    }

    #[test]
    fn grpc_and_numeric_string_ports() {
        let s = settings(ProbeKind::Startup, json!({"grpc": {"port": 9000, "service": "x"}}));
        assert_eq!(
            s.handler,
            Ok(Handler::Grpc {
                port: 9000,
                service: Some("x".into())
            })
        );
        let s = settings(ProbeKind::Startup, json!({"tcpSocket": {"port": "8081"}}));
        assert_eq!(s.handler, Ok(Handler::Tcp { host: None, port: 8081 }));
    }
}
