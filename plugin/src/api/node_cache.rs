//! The node agent's pod cache: `GET /api/v1/namespaces/{ns}/pods/{name}`
//! over `<run dir>/pods.sock`, answered from the agent's watch of the pods
//! on this node (docs/plugin.md#pod-lookup).
//!
//! A hit costs a Unix-socket round trip instead of a kubeconfig read, a TLS
//! handshake and a request to the API server. Anything but a well-formed
//! `200` with a Pod — no socket (an older agent, or none yet), a pod not
//! yet seen by the agent's watch, a slow or garbled answer — is a miss, and
//! the caller asks the API server as before. The answer is never an error
//! of its own: the cache can only make a lookup faster, never fail it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::path;
use crate::cni::add::PodCache;

/// The socket's file name inside the run dir.
pub const SOCKET_NAME: &str = "pods.sock";

/// The longest answer read: a Pod object is a few KiB to a few hundred.
const MAX_REPLY: u64 = 4 << 20;

/// The longest header block read before the body.
const MAX_HEAD: usize = 16 << 10;

/// A client of the agent's pod cache at one socket.
#[derive(Debug, Clone)]
pub struct NodeCache {
    socket: PathBuf,
    timeout: Duration,
}

/// Why a lookup missed, for the debug log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss(pub String);

impl NodeCache {
    /// A cache at `socket`; each read and write waits at most `timeout`.
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        NodeCache { socket, timeout }
    }

    /// The cache in `run_dir`, bounded to 250 ms: far less than the API
    /// path it saves, far more than the agent needs to answer.
    pub fn in_run_dir(run_dir: &Path) -> Self {
        NodeCache::new(run_dir.join(SOCKET_NAME), Duration::from_millis(250))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The pod as the agent's watch last saw it, or why not.
    pub fn lookup(&self, namespace: &str, name: &str) -> Result<Pod, Miss> {
        let miss = |what: String| Miss(format!("{}: {what}", self.socket.display()));
        let mut stream = match UnixStream::connect(&self.socket) {
            Ok(s) => s,
            Err(e) => return Err(miss(format!("connect: {e}"))),
        };
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(|e| miss(format!("set timeout: {e}")))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: istio-cni-agent\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            path::pod(namespace, name)
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| miss(format!("send: {e}")))?;
        let reply = read_until_closed(&mut stream, Instant::now() + self.timeout).map_err(miss)?;
        let body = parse_reply(&reply).map_err(miss)?;
        serde_json::from_slice(body).map_err(|e| miss(format!("not a Pod: {e}")))
    }
}

impl PodCache for NodeCache {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, String> {
        self.lookup(namespace, name).map_err(|miss| miss.0)
    }
}

/// Everything the agent sends until it closes (it answers `Connection:
/// close`), within one deadline for the whole reply and at most
/// [`MAX_REPLY`] bytes.
fn read_until_closed(stream: &mut UnixStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("read: no complete reply in time".into());
        }
        stream.set_read_timeout(Some(left)).map_err(|e| format!("read: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) if (reply.len() + n) as u64 > MAX_REPLY => {
                return Err(format!("read: reply longer than {MAX_REPLY} bytes"));
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// The body of a complete `200` reply with a `Content-Length`, or why not.
/// Chunked bodies are refused: the agent always sends a length.
fn parse_reply(reply: &[u8]) -> Result<&[u8], String> {
    let head_end = reply
        .windows(4)
        .take(MAX_HEAD)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete header block")?;
    let head = std::str::from_utf8(&reply[..head_end]).map_err(|_| "header block is not UTF-8")?;
    let body = &reply[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .ok_or_else(|| format!("not an HTTP status line: {status:?}"))?;
    if code != "200" {
        return Err(format!("answered {status:?}"));
    }
    let mut length = None;
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {line:?}"));
        };
        if key.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if key.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported Transfer-Encoding {value:?}"));
        }
    }
    let length = length.ok_or("no Content-Length")?;
    if body.len() != length {
        return Err(format!("body is {} bytes, Content-Length says {length}", body.len()));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_a_complete_200_with_a_length_is_a_hit() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"),
            Ok(&b"{}"[..])
        );
        for (reply, why) in [
            (
                &b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}"[..],
                "answered",
            ),
            (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                "answered",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}",
                "Content-Length says 5",
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n{}", "no Content-Length"),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                "Transfer-Encoding",
            ),
            (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n{}", "bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2", "no complete header block"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP status line"),
            (b"", "no complete header block"),
        ] {
            let e = parse_reply(reply).unwrap_err();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(reply));
        }
    }

    /// A one-shot server answering `reply`, returning what it was sent.
    fn serve_once(dir: &Path, reply: &'static [u8]) -> (PathBuf, std::thread::JoinHandle<String>) {
        let socket = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(reply).unwrap();
            String::from_utf8(request).unwrap()
        });
        (socket, server)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("istio-cni-node-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_hit_is_the_pod_the_agent_sent() {
        let dir = scratch("hit");
        let body = br#"{"metadata":{"name":"web","namespace":"default","uid":"u-1"}}"#;
        let reply: &'static [u8] = Box::leak(
            [
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
                body,
            ]
            .concat()
            .into_boxed_slice(),
        );
        let (socket, server) = serve_once(&dir, reply);
        let pod = NodeCache::new(socket, Duration::from_secs(5))
            .lookup("default", "web")
            .unwrap();
        assert_eq!(pod.metadata.uid.as_deref(), Some("u-1"));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /api/v1/namespaces/default/pods/web HTTP/1.1\r\n"),
            "{request}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn misses_say_why() {
        let dir = scratch("miss");
        let absent = NodeCache::in_run_dir(&dir).lookup("default", "web").unwrap_err();
        assert!(absent.0.contains("pods.sock: connect"), "{absent:?}");

        for (reply, why) in [
            (&b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..], "404"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n[1,2", "not a Pod"),
        ] {
            let (socket, server) = serve_once(&dir, reply);
            let miss = NodeCache::new(socket.clone(), Duration::from_secs(5))
                .lookup("default", "web")
                .unwrap_err();
            assert!(miss.0.contains(why), "{why}: {miss:?}");
            server.join().unwrap();
            std::fs::remove_file(&socket).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_silent_agent_is_a_miss_after_the_timeout() {
        let dir = scratch("silent");
        let socket = dir.join(SOCKET_NAME);
        let _listener = UnixListener::bind(&socket).unwrap();
        // Nobody accepts: the connection sits in the backlog and no reply comes.
        let miss = NodeCache::new(socket, Duration::from_millis(50))
            .lookup("default", "web")
            .unwrap_err();
        assert!(miss.0.contains("read"), "{miss:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
