//! The agent's HTTP endpoints:
//!
//! - `:HEALTH_PORT` — `/healthz` (always 200) and `/readyz` (200 once the
//!   plugin is installed and watched, 503 otherwise and during a reinstall);
//! - `:MONITORING_PORT/metrics` — Prometheus text with Istio's metric names;
//! - `<run dir>/log.sock` — the plugin's log records, re-emitted; root only ([`logsock`]).

pub mod logsock;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;
use tokio::net::TcpListener;
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

/// The metrics router: `/metrics` in the OpenMetrics text format Prometheus scrapes.
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            any(|State(m): State<Metrics>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}

/// Binds `addr` and serves `router` until the task is aborted. Binding
/// happens before returning so a port conflict is reported at start.
pub async fn serve_tcp(addr: SocketAddr, router: Router, what: &str) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{what} server on {addr}: {e}")))?;
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

    #[tokio::test]
    async fn metrics_are_served() {
        let metrics = Metrics::new();
        metrics.set_install_ready(true);
        let (status, body) = get(metrics_router(metrics), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("istio_cni_install_ready 1"), "{body}");
    }
}
