//! The agent's HTTP endpoints:
//!
//! - `:HEALTH_PORT` — `/healthz` (always 200) and `/readyz` (200 once the
//!   plugin is installed and watched, 503 otherwise and during a reinstall);
//! - `:MONITORING_PORT/metrics` — Prometheus text with Istio's metric names
//!   and `process_*` (OpenMetrics on request);
//!
//! both on every address of both families unless `LISTEN_ADDRESS` is set;
//! - `<run dir>/log.sock` — the plugin's log records, re-emitted; root only ([`logsock`]);
//! - `<run dir>/pods.sock` — this node's pods, which the plugin asks before
//!   the API server; root only ([`pods`]).

pub mod logsock;
pub mod pods;
pub mod uds;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The readiness flag `/readyz` reports: true while the plugin is installed
/// and its files are watched.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The health router: `/healthz` and `/readyz`; anything else is 404.
pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", any(|| async { StatusCode::OK }))
        .route("/readyz", any(readyz))
        .with_state(ready)
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    if ready.get() {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            "Service Unavailable\n",
        )
            .into_response()
    }
}

/// The Prometheus text format, what `/metrics` serves unless asked otherwise.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics, served to a scraper whose `Accept` names it.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics router: `/metrics` in Prometheus text (as Istio's endpoint),
/// or OpenMetrics when the `Accept` header asks for it.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            any(|State(m): State<Metrics>, headers: HeaderMap| async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
                if wants_openmetrics(accept) {
                    ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], m.encode_openmetrics())
                } else {
                    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.encode_prometheus())
                }
            }),
        )
        .with_state(metrics)
}

/// Whether an `Accept` header prefers OpenMetrics: it is listed with a
/// quality at least that of every other listed type (Prometheus sends it
/// first, with text/plain as the fallback).
fn wants_openmetrics(accept: &str) -> bool {
    let mut best_other = 0.0_f32;
    let mut openmetrics: Option<f32> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "application/openmetrics-text" {
            openmetrics = Some(openmetrics.map_or(q, |o| o.max(q)));
        } else if !media.is_empty() {
            best_other = best_other.max(q);
        }
    }
    openmetrics.is_some_and(|q| q > 0.0 && q >= best_other)
}

/// The listener for `port`: on `addr` when one is configured, otherwise on
/// `[::]` accepting IPv4 too (IPV6_V6ONLY off), or on `0.0.0.0` where the
/// kernel has no IPv6. An explicit `::` is dual-stack as well.
pub fn listen(addr: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    match addr {
        Some(IpAddr::V6(ip)) if ip.is_unspecified() => dual_stack(port),
        Some(ip) => std_listen(SocketAddr::new(ip, port)),
        None => match dual_stack(port) {
            Err(e) if no_ipv6(&e) => std_listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)),
            other => other,
        },
    }
}

/// Errors that mean "this kernel (or netns) has no IPv6", not a port conflict.
fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EPROTONOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

fn dual_stack(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v6()?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &false)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    socket.listen(1024)
}

fn std_listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Binds (see [`listen`]) and serves `router` until the task is aborted.
/// Binding happens before returning so a port conflict is reported at start.
pub async fn serve_tcp(
    addr: Option<IpAddr>,
    port: u16,
    router: Router,
    what: &str,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let shown = addr.map_or_else(|| format!("[::]:{port}"), |a| SocketAddr::new(a, port).to_string());
    let listener =
        listen(addr, port).map_err(|e| std::io::Error::new(e.kind(), format!("{what} server on {shown}: {e}")))?;
    let local = listener.local_addr()?;
    let what = what.to_string();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(target: "cni-agent", "{what} server stopped: {e}");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readyz_follows_the_flag_and_healthz_is_always_ok() {
        let ready = Readiness::default();
        let router = health_router(ready.clone());
        assert_eq!(get(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n".into())
        );
        ready.set(true);
        assert_eq!(get(router.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(get(router, "/other").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn openmetrics_only_when_preferred() {
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        // Prometheus' scrape header with its default protocols.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain;q=1,application/openmetrics-text;q=0.5"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[tokio::test]
    async fn one_listener_answers_both_families() {
        let listener = listen(None, 0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(axum::serve(listener, health_router(Readiness::default())).into_future());
        for addr in ["127.0.0.1", "::1"] {
            let addr: IpAddr = addr.parse().unwrap();
            tokio::net::TcpStream::connect(SocketAddr::new(addr, port))
                .await
                .unwrap_or_else(|e| panic!("connect {addr}:{port}: {e}"));
        }
        task.abort();
        // An explicit address binds only that one.
        let v4 = listen(Some(Ipv4Addr::LOCALHOST.into()), 0).unwrap();
        let port = v4.local_addr().unwrap().port();
        assert!(
            tokio::net::TcpStream::connect(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn metrics_default_to_prometheus_text() {
        let resp = metrics_router(Metrics::new())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT);
        let resp = metrics_router(Metrics::new())
            .oneshot(
                Request::get("/metrics")
                    .header(header::ACCEPT, "application/openmetrics-text; version=1.0.0")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], OPENMETRICS_TEXT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn metrics_are_served() {
        let metrics = Metrics::new();
        metrics.set_install_ready(true);
        let (status, body) = get(metrics_router(metrics), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("istio_cni_install_ready 1"), "{body}");
    }
}
