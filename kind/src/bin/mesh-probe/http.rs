//! `mesh-probe http`: a fake app for kubelet probes.
//!
//! - `GET /ready`: 200 while ready, else 503. Ready from the start unless
//!   `--start-unready`; with `--require-header NAME=VALUE`, only requests
//!   carrying that header can be answered 200.
//! - `GET /healthz`: 200, or 500 with `--fail-healthz`.
//! - `/ready/pass` and `/ready/fail` (any method) make `/ready` pass or fail
//!   from then on, so a test flips readiness from inside the pod netns.
//! - Anything else: 404.
//!
//! `--tls` serves HTTPS with a fresh self-signed certificate. Every request
//! is logged as an `http` event with its method, path, status and
//! User-Agent. One connection, one request (`Connection: close`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Termination, canonical, emit, event, tcp_listener, wildcards};

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// What the server answers with.
pub struct Behaviour {
    pub start_unready: bool,
    pub fail_healthz: bool,
    /// (lower-cased name, value)
    pub require_header: Option<(String, String)>,
    pub tls: bool,
}

/// Parses `NAME=VALUE`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_ascii_lowercase(), value.to_string())),
        _ => Err(format!("invalid header {text:?}: expected NAME=VALUE")),
    }
}

struct State {
    ready: AtomicBool,
    behaviour: Behaviour,
    name: String,
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Request { method, path, headers })
}

/// The status and body for `req`.
fn answer(state: &State, req: &Request) -> (u16, &'static str) {
    let header_ok = state
        .behaviour
        .require_header
        .as_ref()
        .is_none_or(|(n, v)| req.headers.iter().any(|(hn, hv)| hn == n && hv == v));
    match req.path.as_str() {
        "/ready" if state.ready.load(Ordering::SeqCst) && header_ok => (200, "ready\n"),
        "/ready" => (503, "not ready\n"),
        "/healthz" if state.behaviour.fail_healthz => (500, "unhealthy\n"),
        "/healthz" => (200, "ok\n"),
        "/ready/pass" => {
            state.ready.store(true, Ordering::SeqCst);
            (200, "ready from now on\n")
        }
        "/ready/fail" => {
            state.ready.store(false, Ordering::SeqCst);
            (200, "not ready from now on\n")
        }
        _ => (404, "not found\n"),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(state: &State, mut stream: S, peer: SocketAddr) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&head);
    let Some(req) = read.ok().and_then(|()| parse_request(&text)) else {
        emit(event(
            json!({"event": "http_error", "peer": canonical(peer).to_string(), "error": "no request"}),
        ));
        return;
    };
    let (code, body) = answer(state, &req);
    let user_agent = req
        .headers
        .iter()
        .find(|(n, _)| n == "user-agent")
        .map(|(_, v)| v.clone());
    emit(event(json!({
        "event": "http", "mode": "http", "name": state.name, "method": req.method, "path": req.path,
        "status": code, "user_agent": user_agent, "peer": canonical(peer).to_string(),
    })));
    let response = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(code),
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn tls_acceptor() -> Result<tokio_rustls::TlsAcceptor, String> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve(state: Arc<State>, listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (state, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => handle(&state, tls, peer).await,
                    Err(e) => emit(event(
                        json!({"event": "http_error", "peer": canonical(peer).to_string(), "error": format!("TLS: {e}")}),
                    )),
                },
                None => handle(&state, stream, peer).await,
            }
        });
    }
}

/// Serves until SIGTERM/SIGINT; exit 0 then, 2 when nothing could listen.
pub async fn run(name: String, port: u16, behaviour: Behaviour) -> std::process::ExitCode {
    let mut termination = Termination::install();
    let tls = if behaviour.tls {
        match tls_acceptor() {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                emit(event(json!({"event": "exit", "mode": "http", "reason": e})));
                return std::process::ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let state = Arc::new(State {
        ready: AtomicBool::new(!behaviour.start_unready),
        behaviour,
        name: name.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for addr in wildcards(port) {
        match tcp_listener(addr) {
            Ok(listener) => {
                emit(event(
                    json!({"event": "listening", "mode": "http", "proto": "tcp", "addr": addr.to_string(), "listener": port}),
                ));
                tasks.spawn(serve(state.clone(), listener, tls.clone()));
            }
            Err(e) => emit(event(
                json!({"event": "bind_failed", "mode": "http", "proto": "tcp", "addr": addr.to_string(), "error": e}),
            )),
        }
    }
    if tasks.is_empty() {
        emit(event(
            json!({"event": "exit", "mode": "http", "reason": "no listener could be opened"}),
        ));
        return std::process::ExitCode::from(2);
    }
    emit(event(json!({"event": "ready", "mode": "http", "name": name})));
    let reason = termination.wait().await;
    tasks.abort_all();
    emit(event(json!({"event": "exit", "mode": "http", "reason": reason})));
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(start_unready: bool, require_header: Option<&str>) -> State {
        State {
            ready: AtomicBool::new(!start_unready),
            behaviour: Behaviour {
                start_unready,
                fail_healthz: false,
                require_header: require_header.map(|h| parse_header(h).unwrap()),
                tls: false,
            },
            name: "t".into(),
        }
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request("GET /ready HTTP/1.1\r\nHost: x\r\nX-Probe:  yes \r\n\r\n"),
            Some(get("/ready", &[("host", "x"), ("x-probe", "yes")]))
        );
        assert_eq!(parse_request("garbage"), None);
        assert!(parse_header("X-Probe=yes").is_ok());
        assert!(parse_header("=yes").is_err());
        assert!(parse_header("nothing").is_err());
    }

    #[test]
    fn readiness_flips_and_needs_the_required_header() {
        let s = state(true, Some("X-Probe=yes"));
        let probe = get("/ready", &[("x-probe", "yes")]);
        assert_eq!(answer(&s, &probe).0, 503);
        assert_eq!(answer(&s, &get("/ready/pass", &[])).0, 200);
        assert_eq!(answer(&s, &probe).0, 200);
        assert_eq!(answer(&s, &get("/ready", &[])).0, 503, "header missing");
        assert_eq!(answer(&s, &get("/ready/fail", &[])).0, 200);
        assert_eq!(answer(&s, &probe).0, 503);
        assert_eq!(answer(&s, &get("/healthz", &[])).0, 200);
        assert_eq!(answer(&s, &get("/other", &[])).0, 404);
        let sick = State {
            behaviour: Behaviour {
                fail_healthz: true,
                ..s.behaviour
            },
            ..state(false, None)
        };
        assert_eq!(answer(&sick, &get("/healthz", &[])).0, 500);
    }
}
