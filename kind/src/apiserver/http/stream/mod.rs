//! The streaming subresources `pods/exec`, `pods/attach` and
//! `pods/portforward`: the API server upgrades the request (WebSocket, or
//! plain SPDY for port-forward) and relays it to the node's kubelet through
//! the [`PodStreams`] seam, as kube-apiserver proxies to the kubelet's
//! streaming server.
//!
//! - exec/attach: [`channel`] framing over WebSocket (`v5.channel.k8s.io`,
//!   `v4.channel.k8s.io`), driven by [`remotecommand`].
//! - port-forward: SPDY/3.1 ([`spdy`]) carrying `portforward.k8s.io`
//!   streams ([`portforward`]), either tunnelled in WebSocket binary
//!   messages (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31) or over a plain
//!   `Upgrade: SPDY/3.1` connection (kubectl's fallback).

pub(crate) mod channel;
pub(crate) mod portforward;
pub(crate) mod remotecommand;
pub(crate) mod spdy;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::App;
use super::logs::LogSource;
use super::routes::{Query, ResourcePath};
use crate::apiserver::registry::resources::ids;
use crate::apiserver::registry::strategy::pod;
use crate::apiserver::status::ApiError;

/// A byte stream out of a session (stdout, stderr).
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// A byte stream into a session (stdin).
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
/// A boxed future, as the seam returns them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The container a stream is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// The streams a client asked for (`stdin=`, `stdout=`, `stderr=`, `tty=`)
/// and, for exec, the command (`command=`, repeated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size, as the resize channel carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A running exec or attach: its standard streams (those asked for), how to
/// resize its terminal, and its end.
pub struct Session {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
    /// Applies a terminal size (sessions with a tty).
    pub resize: Option<Box<dyn Fn(TerminalSize) -> io::Result<()> + Send + Sync>>,
    /// The exit code (a signal `n` counts as `128 + n`). Dropping the session
    /// ends what it started.
    pub exit: BoxFuture<Result<i32, StreamError>>,
}

/// Why a stream could not be opened or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("container {container:?} in pod {pod:?} is not running")]
    NotRunning { pod: String, container: String },
    #[error("pod {pod:?} has no running container to forward ports into")]
    NoSandbox { pod: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("streaming is not supported by this cluster's kubelet")]
    Unsupported,
}

impl StreamError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StreamError {
        let what = what.into();
        move |source| StreamError::Io { what, source }
    }
}

/// The node kubelet's streaming side, one seam for `pods/log`,
/// `pods/exec`, `pods/attach` and `pods/portforward`.
pub trait PodStreams: LogSource {
    /// Runs `options.command` in the container's namespaces.
    fn exec(&self, target: &StreamTarget, options: &StreamOptions) -> Result<Session, StreamError>;

    /// Connects to the running container's standard streams.
    fn attach(&self, target: &StreamTarget, options: &StreamOptions) -> Result<Session, StreamError>;

    /// A TCP connection to `port` on the pod's loopback, inside its netns.
    fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> BoxFuture<Result<TcpStream, StreamError>>;
}

/// Whether a pods subresource is served here.
pub fn is_streaming(subresource: Option<&str>) -> bool {
    matches!(subresource, Some("exec" | "attach" | "portforward"))
}

fn to_api_error(e: StreamError) -> ApiError {
    match e {
        StreamError::Io { .. } => ApiError::internal(e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

fn websocket_requested(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn websocket(parts: &mut Parts, protocols: &'static [&'static str]) -> Result<WebSocketUpgrade, ApiError> {
    let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|r| ApiError::bad_request(format!("upgrading to WebSocket: {}", r.body_text())))?
        .protocols(protocols.iter().copied());
    if upgrade.selected_protocol().is_none() {
        return Err(ApiError::bad_request(format!(
            "none of the requested WebSocket subprotocols is supported; supported: {}",
            protocols.join(", ")
        )));
    }
    Ok(upgrade)
}

/// `pods/<name>/{exec,attach,portforward}`, authorized already.
pub(crate) async fn handle(
    app: &App,
    rp: &ResourcePath,
    query: &Query,
    parts: &mut Parts,
) -> Result<Response, ApiError> {
    let ns = rp.namespace.clone().unwrap_or_default();
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.as_deref().unwrap_or_default();
    let pod_obj = app.store.get(ids::PODS, &ns, &name)?;
    let streams = app
        .streams
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
        .ok_or_else(|| to_api_error(StreamError::Unsupported))?;
    if sub == "portforward" {
        return port_forward(streams, ns, name, parts).await;
    }
    let target = StreamTarget {
        container: pod::log_container(&pod_obj, query.get("container"))?,
        namespace: ns,
        pod: name,
    };
    let options = StreamOptions {
        command: query.all("command").to_vec(),
        stdin: query.flag("stdin")?,
        stdout: query.flag("stdout")?,
        stderr: query.flag("stderr")?,
        tty: query.flag("tty")?,
    };
    if sub == "exec" && options.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if options.tty && options.stderr {
        return Err(ApiError::bad_request("stderr must not be requested with a tty"));
    }
    if !websocket_requested(parts) {
        return Err(ApiError::bad_request(format!(
            "pods/{sub} is served over WebSocket ({}); this request asks for no WebSocket upgrade",
            channel::PROTOCOLS.join(", ")
        )));
    }
    let upgrade = websocket(parts, &channel::PROTOCOLS).await?;
    let v5 = upgrade.selected_protocol().is_some_and(|p| p == channel::V5);
    let opened = if sub == "exec" {
        streams.exec(&target, &options)
    } else {
        streams.attach(&target, &options)
    };
    // What keeps the session from existing is an HTTP error; a session that
    // failed to start reports it on the error channel, as a command would.
    let session = match opened {
        Err(e @ StreamError::Io { .. }) => Err(e),
        Err(e) => return Err(to_api_error(e)),
        Ok(s) => Ok(s),
    };
    Ok(upgrade.on_upgrade(move |socket| remotecommand::serve(socket, session, v5)))
}

async fn port_forward(
    streams: Arc<dyn PodStreams>,
    namespace: String,
    pod: String,
    parts: &mut Parts,
) -> Result<Response, ApiError> {
    let target = portforward::Target {
        streams,
        namespace,
        pod,
    };
    if websocket_requested(parts) {
        let upgrade = websocket(parts, &[portforward::TUNNEL_PROTOCOL]).await?;
        return Ok(upgrade.on_upgrade(move |socket| portforward::serve_websocket(socket, target)));
    }
    // Plain SPDY: `Upgrade: SPDY/3.1` offering `portforward.k8s.io`.
    let header_has = |name: &str, want: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(want))
    };
    if !header_has("upgrade", "SPDY/3.1") {
        return Err(ApiError::bad_request(format!(
            "pods/portforward needs an upgrade to WebSocket ({}) or SPDY/3.1",
            portforward::TUNNEL_PROTOCOL
        )));
    }
    if !header_has("x-stream-protocol-version", portforward::PROTOCOL) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to upgrade: the client offers no stream protocol version this server supports ({})",
                portforward::PROTOCOL
            ),
        ));
    }
    let on_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => portforward::serve(TokioIo::new(upgraded), target).await,
            Err(e) => tracing::debug!("port-forward upgrade: {e}"),
        }
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(portforward::PROTOCOL),
    );
    Ok(response)
}
