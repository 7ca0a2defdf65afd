//! The kubelet's streaming side, behind the API server's [`PodStreams`]
//! seam: logs from [`PodLogs`], exec ([`super::exec`]), attach and
//! port-forward through the main process of each running container, which
//! the pod workers record in [`Running`].
//!
//! Attach: containers run with their output in their log file, so
//! attaching streams what the container writes from then on (stdout and
//! stderr, as the log interleaves them, on the stdout channel) until it
//! exits. Containers run with stdin on `/dev/null`, except ephemeral ones
//! that ask for stdin (`kubectl debug -i`): their stdin (a pipe, or with
//! `tty` the pseudo-terminal whose output goes to the log) is registered
//! here, and what an attached client sends reaches it.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::OwnedFd;
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

/// A container's stdin: the write end of its pipe, or its pseudo-terminal.
#[derive(Clone)]
struct Stdin {
    pid: i32,
    fd: Arc<OwnedFd>,
    tty: bool,
}

/// The main process of every running container (cheap to clone; clones
/// share the map).
#[derive(Clone, Default)]
pub struct Running {
    pids: Arc<Mutex<HashMap<ContainerKey, i32>>>,
    stdins: Arc<Mutex<HashMap<ContainerKey, Stdin>>>,
}

impl Running {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerKey, i32>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stdin_map(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerKey, Stdin>> {
        self.stdins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stdin of container instance `pid` (`tty`: a pseudo-terminal's
    /// master), for attach.
    pub fn stdin(&self, ns: &str, pod: &str, container: &str, pid: i32, fd: OwnedFd, tty: bool) {
        let key = (ns.to_string(), pod.to_string(), container.to_string());
        let fd = Arc::new(fd);
        self.stdin_map().insert(key, Stdin { pid, fd, tty });
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
        let mut stdins = self.stdin_map();
        if stdins.get(&key).is_some_and(|s| s.pid == pid) {
            stdins.remove(&key);
        }
    }

    /// Forgets a torn-down pod.
    pub fn forget(&self, ns: &str, pod: &str) {
        self.map().retain(|(n, p, _), _| !(n == ns && p == pod));
        self.stdin_map().retain(|(n, p, _), _| !(n == ns && p == pod));
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

    fn open(&self, namespace: &str, pod: &str, container: &str) -> Option<std::fs::File> {
        self.logs.open(namespace, pod, container)
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
        let key = (target.namespace.clone(), target.pod.clone(), target.container.clone());
        let input = self.running.stdin_map().get(&key).filter(|s| s.pid == pid).cloned();
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
        let (mut stdin, mut resize) = (None, None);
        if let Some(input) = input {
            if options.stdin {
                let fd = input
                    .fd
                    .try_clone()
                    .map_err(StreamError::io("duplicating the container's stdin"))?;
                stdin = Some(Box::pin(tokio::fs::File::from_std(std::fs::File::from(fd))) as _);
            }
            if input.tty {
                let fd = input.fd.clone();
                resize = Some(Box::new(move |size| super::exec::set_size(&fd, size)) as _);
            }
        }
        Ok(Session {
            stdin,
            stdout: wants_output.then(|| Box::pin(reader) as _),
            stderr: None,
            resize,
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
