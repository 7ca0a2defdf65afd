//! The plugin's log socket `<run dir>/log.sock`.
//!
//! The plugin runs for milliseconds per pod, invoked by the container
//! runtime, so its logs would be lost in the runtime's journal. It POSTs its
//! records to `/log` here as a JSON array of JSON lines, and the agent
//! re-emits each under the `cni-plugin` target with its level, message,
//! original time and extra keys, so they appear in the agent's pod logs.
//!
//! Only the plugin may write here, and it runs as root (the container
//! runtime execs it). So the socket is 0600, and each connection's peer
//! credentials (SO_PEERCRED) must be root's or the agent's own uid (rootless
//! test runs, where plugin and agent share a uid); any other peer is closed
//! unread and counted, so no other local user can forge plugin log lines.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::Listener;
use serde_json::{Map, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The socket's file name inside the run dir.
pub const SOCKET_NAME: &str = "log.sock";

/// A running log socket; dropping it does not remove the file, [`LogSocket::close`] does.
pub struct LogSocket {
    path: PathBuf,
    task: JoinHandle<()>,
    refused: Arc<AtomicU64>,
}

impl LogSocket {
    /// Replaces a stale socket, creates the run dir (0750) and listens
    /// (socket mode 0600; see the module docs for who may connect).
    pub async fn bind(run_dir: &Path) -> std::io::Result<LogSocket> {
        let path = run_dir.join(SOCKET_NAME);
        let named = |e: std::io::Error, what: &str| {
            std::io::Error::new(e.kind(), format!("log socket {}: {what}: {e}", path.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(run_dir)
            .map_err(|e| named(e, "create run dir"))?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(named(e, "remove stale socket")),
        }
        let listener = UnixListener::bind(&path).map_err(|e| named(e, "listen"))?;
        // Between bind and chmod the umask decides; the peer check covers that window.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| named(e, "chmod"))?;
        let refused = Arc::new(AtomicU64::new(0));
        let listener = PeerChecked {
            inner: listener,
            allowed: [0, nix::unistd::geteuid().as_raw()],
            refused: refused.clone(),
        };
        let router = Router::new().route("/log", post(receive));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(target: "cni-agent", "log socket stopped: {e}");
            }
        });
        Ok(LogSocket { path, task, refused })
    }

    /// Connections refused since bind: peers neither root nor the agent's uid.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file.
    pub fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The socket's listener: hands the server only connections whose peer is an
/// allowed uid; others are closed before a byte of theirs is read.
struct PeerChecked {
    inner: UnixListener,
    allowed: [u32; 2],
    refused: Arc<AtomicU64>,
}

impl PeerChecked {
    /// Counts the refusal; logs the 1st, 2nd, 4th, 8th, ... so a flood of
    /// connections cannot flood the log. Their content is never read.
    fn refuse(&self, peer: std::io::Result<tokio::net::unix::UCred>) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_power_of_two() {
            return;
        }
        let who = match peer {
            Ok(cred) => format!(
                "uid {} (pid {})",
                cred.uid(),
                cred.pid().map_or_else(|| "unknown".into(), |p| p.to_string())
            ),
            Err(e) => format!("an unknown peer ({e})"),
        };
        tracing::warn!(
            target: "cni-agent",
            "plugin log socket: refused a connection from {who}: only root and the agent's uid may send plugin logs ({n} refused so far)"
        );
    }
}

impl Listener for PeerChecked {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = Listener::accept(&mut self.inner).await;
            let peer = io.peer_cred();
            if matches!(&peer, Ok(cred) if self.allowed.contains(&cred.uid())) {
                return (io, addr);
            }
            drop(io);
            self.refuse(peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn receive(body: axum::body::Bytes) -> StatusCode {
    let lines: Vec<String> = match serde_json::from_slice(&body) {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!(target: "cni-agent", "plugin log socket: body is not a JSON array of strings: {e}");
            return StatusCode::BAD_REQUEST;
        }
    };
    for line in &lines {
        emit(line);
    }
    StatusCode::OK
}

/// One plugin record, as the plugin encodes it: `{"level","time","msg",...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRecord {
    pub level: String,
    pub time: String,
    pub msg: String,
    /// Every other key, sorted, as `key=value`.
    pub labels: Vec<(String, String)>,
}

impl PluginRecord {
    /// Parses one line; a line that is not a JSON object is kept as the message.
    pub fn parse(line: &str) -> PluginRecord {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(line) else {
            return PluginRecord {
                level: "info".into(),
                time: String::new(),
                msg: line.to_string(),
                labels: Vec::new(),
            };
        };
        let mut take = |k: &str| match obj.remove(k) {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let level = take("level");
        let time = take("time");
        let msg = take("msg");
        let labels = labels(obj);
        PluginRecord {
            level,
            time,
            msg,
            labels,
        }
    }
}

fn labels(obj: Map<String, Value>) -> Vec<(String, String)> {
    obj.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

fn emit(line: &str) {
    let r = PluginRecord::parse(line);
    let labels = r
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    // tracing targets are static, so the level is matched here.
    match r.level.as_str() {
        "debug" | "trace" => tracing::debug!(target: "cni-plugin", time = %r.time, labels = %labels, "{}", r.msg),
        "warn" | "warning" => tracing::warn!(target: "cni-plugin", time = %r.time, labels = %labels, "{}", r.msg),
        "error" | "fatal" => tracing::error!(target: "cni-plugin", time = %r.time, labels = %labels, "{}", r.msg),
        _ => tracing::info!(target: "cni-plugin", time = %r.time, labels = %labels, "{}", r.msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_level_time_message_and_extra_keys() {
        let r = PluginRecord::parse(
            r#"{"time":"2026-11-24T10:00:00.000001Z","level":"warn","scope":"cni","msg":"no rules","pod":"a/b"}"#,
        );
        assert_eq!(r.level, "warn");
        assert_eq!(r.time, "2026-11-24T10:00:00.000001Z");
        assert_eq!(r.msg, "no rules");
        assert_eq!(
            r.labels,
            vec![("pod".into(), "a/b".into()), ("scope".into(), "cni".into())]
        );
        assert_eq!(PluginRecord::parse("plain text").msg, "plain text");
    }

    #[tokio::test]
    async fn the_plugin_posts_and_the_socket_answers_200() {
        let dir = testkit::Scratch::new("agent-logsock");
        // A stale file where the socket goes is replaced.
        std::fs::write(dir.join(SOCKET_NAME), b"stale").unwrap();
        let sock = LogSocket::bind(&dir).await.unwrap();
        let mode = std::fs::metadata(sock.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let path = sock.path().to_path_buf();
        let send = |body: &'static str| {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::{Read, Write};
                let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                write!(
                    s,
                    "POST /log HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
        };
        let ok = send(r#"["{\"level\":\"info\",\"time\":\"t\",\"msg\":\"hello\"}"]"#)
            .await
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let bad = send(r#"{"not":"an array"}"#).await.unwrap();
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        sock.close();
        assert!(!path.exists());
    }
}
