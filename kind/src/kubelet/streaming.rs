//! The kubelet's streaming side, behind the API server's [`PodStreams`]
//! seam: logs from [`PodLogs`], exec ([`super::exec`]), attach and
//! port-forward through the main process of each running container, which
//! the pod workers record in [`Running`].
//!
//! Attach: containers run with stdin on `/dev/null` and their output in
//! their log file, so attaching streams what the container writes from
//! then on (stdout and stderr, as the log interleaves them, on the stdout
//! channel) until it exits; stdin sent by the client is dropped.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::logs::PodLogs;
use crate::apiserver::{BoxFuture, LogSource, PodStreams, Session, StreamError, StreamOptions, StreamTarget};

/// How often attach looks for new output and for the container's exit.
const POLL: Duration = Duration::from_millis(100);
/// Connecting to a forwarded port gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// (namespace, pod, container).
type ContainerKey = (String, String, String);

/// The main process of every running container (cheap to clone; clones
/// share the map).
#[derive(Clone, Default)]
pub struct Running {
    pids: Arc<Mutex<HashMap<ContainerKey, i32>>>,
}

impl Running {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerKey, i32>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A container instance started as process `pid`.
    pub fn started(&self, ns: &str, pod: &str, container: &str, pid: i32) {
        self.map().insert((ns.into(), pod.into(), container.into()), pid);
    }

    /// Process `pid` of a container exited (a newer instance stays).
    pub fn exited(&self, ns: &str, pod: &str, container: &str, pid: i32) {
        let key = (ns.to_string(), pod.to_string(), container.to_string());
        let mut map = self.map();
        if map.get(&key) == Some(&pid) {
            map.remove(&key);
        }
    }

    /// Forgets a torn-down pod.
    pub fn forget(&self, ns: &str, pod: &str) {
        self.map().retain(|(n, p, _), _| !(n == ns && p == pod));
    }

    /// The main process of a running container.
    pub fn pid(&self, ns: &str, pod: &str, container: &str) -> Option<i32> {
        self.map()
            .get(&(ns.to_string(), pod.to_string(), container.to_string()))
            .copied()
    }

    /// A process of any running container of the pod (they share its netns).
    fn any_pid(&self, ns: &str, pod: &str) -> Option<i32> {
        self.map()
            .iter()
            .find(|((n, p, _), _)| n == ns && p == pod)
            .map(|(_, pid)| *pid)
    }
}

/// What the API server calls for a cluster's pods.
#[derive(Clone)]
pub struct Streaming {
    logs: PodLogs,
    running: Running,
}

impl Streaming {
    pub fn new(logs: PodLogs, running: Running) -> Streaming {
        Streaming { logs, running }
    }

    fn pid(&self, t: &StreamTarget) -> Result<i32, StreamError> {
        self.running
            .pid(&t.namespace, &t.pod, &t.container)
            .ok_or_else(|| StreamError::NotRunning {
                pod: t.pod.clone(),
                container: t.container.clone(),
            })
    }
}

impl LogSource for Streaming {
    fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<String> {
        self.logs.logs(namespace, pod, container, previous)
    }
}

impl PodStreams for Streaming {
    fn exec(&self, target: &StreamTarget, options: &StreamOptions) -> Result<Session, StreamError> {
        super::exec::spawn(self.pid(target)?, options)
    }

    fn attach(&self, target: &StreamTarget, options: &StreamOptions) -> Result<Session, StreamError> {
        let pid = self.pid(target)?;
        let file = self
            .logs
            .current_file(&target.namespace, &target.pod, &target.container)
            .ok_or_else(|| StreamError::NotRunning {
                pod: target.pod.clone(),
                container: target.container.clone(),
            })?;
        let (reader, writer) = tokio::io::duplex(64 << 10);
        let (running, t) = (self.running.clone(), target.clone());
        let alive = move || running.pid(&t.namespace, &t.pod, &t.container) == Some(pid);
        let wants_output = options.stdout || options.stderr;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // Ends with the container, or when the session is dropped.
            let go_on = || alive() && !done_tx.is_closed();
            if wants_output {
                follow(file, writer, &go_on).await;
            } else {
                drop(writer);
                while go_on() {
                    tokio::time::sleep(POLL).await;
                }
            }
            let _ = done_tx.send(());
        });
        Ok(Session {
            stdin: None,
            stdout: wants_output.then(|| Box::pin(reader) as _),
            stderr: None,
            resize: None,
            exit: Box::pin(async move {
                let _ = done_rx.await;
                Ok(0)
            }),
        })
    }

    fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> BoxFuture<Result<TcpStream, StreamError>> {
        let pid = self.running.any_pid(namespace, pod);
        let pod = pod.to_string();
        Box::pin(async move {
            let pid = pid.ok_or(StreamError::NoSandbox { pod })?;
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            let netns = linux_ns::Netns::open(&path).map_err(|e| StreamError::Io {
                what: format!("opening {}", path.display()),
                source: std::io::Error::other(e),
            })?;
            let connect = move || {
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e| {
                    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                    StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
                })
            };
            let joined = tokio::task::spawn_blocking(move || netns.run(connect))
                .await
                .map_err(|e| StreamError::Io {
                    what: "connecting in the pod".into(),
                    source: std::io::Error::other(e),
                })?;
            let stream = joined
                .map_err(|e| StreamError::Io {
                    what: "entering the pod's network namespace".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(StreamError::io(format!("connecting to localhost:{port} in the pod")))?;
            stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
                .map_err(StreamError::io("adopting the connection"))
        })
    }
}

/// Copies what is appended to `file` from now on into `out` until `go_on`
/// says stop (then what is left is still copied) or the reader goes away.
async fn follow(file: PathBuf, mut out: tokio::io::DuplexStream, go_on: &(dyn Fn() -> bool + Send + Sync)) {
    let Ok(mut f) = tokio::fs::File::open(&file).await else {
        return;
    };
    if f.seek(SeekFrom::End(0)).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let running = go_on();
        loop {
            match f.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !running {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
