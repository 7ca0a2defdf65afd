//! Forwarding the plugin's log records to the node agent: every record is
//! kept in memory as a JSON line and, when the invocation ends (also on
//! error), sent in one `POST /log` over `<run dir>/log.sock` with a 1 s
//! timeout — the agent re-emits them, so plugin logs appear in the agent's
//! pod logs. A missing socket is not an error (docs/plugin.md#logging).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The in-memory buffer of encoded records.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<String>>>);

impl LogBuffer {
    /// The records so far.
    pub fn records(&self) -> Vec<String> {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Sends the buffered records to the agent's socket, if it exists.
    pub fn flush_to(&self, socket: &Path) -> Result<(), String> {
        let records = self.records();
        if records.is_empty() || !socket.exists() {
            return Ok(());
        }
        post_log(socket, &records, Duration::from_secs(1))
    }
}

/// A tracing layer that encodes each event as Istio's plugin log JSON.
pub struct BufferLayer(pub LogBuffer);

impl<S: Subscriber> Layer<S> for BufferLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut record = serde_json::Map::new();
        record.insert("time".into(), timestamp(SystemTime::now()).into());
        record.insert(
            "level".into(),
            event.metadata().level().as_str().to_ascii_lowercase().into(),
        );
        record.insert("scope".into(), "cni".into());
        record.insert("msg".into(), fields.message.into());
        for (k, v) in fields.labels {
            record.insert(k, v.into());
        }
        if let Ok(mut records) = self.0.0.lock() {
            records.push(serde_json::Value::Object(record).to_string());
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    labels: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.labels.push((field.name().to_string(), value.to_string()));
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        d.subsec_micros()
    )
}

/// One HTTP/1.1 `POST /log` over a Unix socket; the agent must answer 200.
fn post_log(socket: &Path, records: &[String], timeout: Duration) -> Result<(), String> {
    let body = serde_json::to_string(records).map_err(|e| e.to_string())?;
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!(
        "POST /log HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send logs: {e}"))?;
    let mut status = [0u8; 12];
    stream
        .read_exact(&mut status)
        .map_err(|e| format!("read the agent's reply: {e}"))?;
    match &status {
        b"HTTP/1.1 200" | b"HTTP/1.0 200" => Ok(()),
        other => Err(format!("the agent answered {:?}", String::from_utf8_lossy(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_764_012_345, 678_901_000);
        assert_eq!(timestamp(t), "2025-11-24T19:25:45.678901Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn records_are_buffered_and_posted_as_one_json_array() {
        let buffer = LogBuffer::default();
        let subscriber = tracing_subscriber::registry().with(BufferLayer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(pod = "default/web", "traffic redirection programmed");
            tracing::warn!("second");
        });
        let records = buffer.records();
        assert_eq!(records.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
        assert_eq!(
            (first["level"].as_str(), first["msg"].as_str(), first["pod"].as_str()),
            (
                Some("info"),
                Some("traffic redirection programmed"),
                Some("default/web")
            )
        );

        let dir = std::env::temp_dir().join(format!("istio-cni-logsink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("log.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("second") {
                let n = conn.read(&mut chunk).unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
            String::from_utf8(request).unwrap()
        });
        buffer.flush_to(&socket).unwrap();
        let request = agent.join().unwrap();
        assert!(request.starts_with("POST /log HTTP/1.1\r\n"), "{request}");
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        let sent: Vec<String> = serde_json::from_str(body).unwrap();
        assert_eq!(sent, records);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_socket_is_not_an_error() {
        let buffer = LogBuffer::default();
        buffer.0.lock().unwrap().push("{}".into());
        assert!(buffer.flush_to(Path::new("/nonexistent/log.sock")).is_ok());
    }
}
