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

use std::path::Path;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Map, Value};

use super::uds::RootSocket;

/// The socket's file name inside the run dir.
pub const SOCKET_NAME: &str = "log.sock";

/// A running log socket; dropping it does not remove the file, [`LogSocket::close`] does.
pub struct LogSocket(RootSocket);

impl LogSocket {
    /// Replaces a stale socket, creates the run dir (0750) and listens
    /// (socket mode 0600; see the module docs for who may connect).
    pub async fn bind(run_dir: &Path) -> std::io::Result<LogSocket> {
        let router = Router::new().route("/log", post(receive));
        RootSocket::bind(run_dir, SOCKET_NAME, "plugin log socket", router)
            .await
            .map(LogSocket)
    }

    /// Connections refused since bind: peers neither root nor the agent's uid.
    pub fn refused(&self) -> u64 {
        self.0.refused()
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Stops serving and removes the socket file.
    pub fn close(self) {
        self.0.close();
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
    use std::os::unix::fs::PermissionsExt;

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
