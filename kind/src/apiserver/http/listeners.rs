//! Listening sockets and connections: HTTPS (rustls) and plain HTTP, served
//! by hyper's HTTP/1 connection driver; stopping them (closing the sockets and
//! cutting every open connection) and binding the same addresses again, each
//! in the network namespace it was first bound in.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// One address the server listens on.
#[derive(Debug)]
pub(crate) struct Slot {
    pub addr: SocketAddr,
    pub tls: bool,
    /// The network namespace the socket lives in (when the kernel tells us).
    netns: Option<OwnedFd>,
}

struct Running {
    accept: JoinSet<()>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

/// The server's listeners, running or stopped.
pub(crate) struct Listeners {
    pub slots: Vec<Slot>,
    running: Option<Running>,
}

/// The network namespace of a socket (`SIOCGSKNS`; needs CAP_NET_ADMIN over it).
fn socket_netns(sock: &StdListener) -> Option<OwnedFd> {
    // SAFETY: SIOCGSKNS takes no argument; it returns a new file descriptor
    // (which we then own) or -1.
    let fd = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGSKNS as _) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a freshly opened descriptor nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn same_as_current_netns(ns: &OwnedFd) -> bool {
    let Ok(cur) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return true;
    };
    let Ok(file) = ns.try_clone().map(std::fs::File::from) else {
        return true;
    };
    file.metadata()
        .is_ok_and(|m| m.dev() == cur.dev() && m.ino() == cur.ino())
}

fn bind_here(addr: SocketAddr) -> io::Result<StdListener> {
    let l = StdListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Binds `addr` in network namespace `ns` (a helper thread enters it).
fn bind_in(addr: SocketAddr, ns: Option<&OwnedFd>) -> io::Result<StdListener> {
    match ns {
        Some(ns) if !same_as_current_netns(ns) => linux_ns::Netns::from_fd(ns.try_clone()?, "the listener's netns")
            .run(move || bind_here(addr))
            .map_err(io::Error::other)?,
        _ => bind_here(addr),
    }
}

impl Listeners {
    /// Binds the addresses (in the calling thread's network namespace) and
    /// adopts pre-bound listeners; returns the slots and the sockets to serve.
    pub fn bind(
        https: &[SocketAddr],
        https_prebound: Vec<StdListener>,
        http: &[SocketAddr],
        http_prebound: Vec<StdListener>,
    ) -> io::Result<(Listeners, Vec<StdListener>)> {
        let mut slots = Vec::new();
        let mut socks = Vec::new();
        let mut add = |sock: StdListener, tls: bool| -> io::Result<()> {
            sock.set_nonblocking(true)?;
            slots.push(Slot {
                addr: sock.local_addr()?,
                tls,
                netns: socket_netns(&sock),
            });
            socks.push(sock);
            Ok(())
        };
        for sock in https_prebound {
            add(sock, true)?;
        }
        for a in https {
            add(bind_here(*a)?, true)?;
        }
        for sock in http_prebound {
            add(sock, false)?;
        }
        for a in http {
            add(bind_here(*a)?, false)?;
        }
        Ok((Listeners { slots, running: None }, socks))
    }

    /// Binds every slot's address again (same port, same namespace),
    /// retrying briefly while the port is still in use.
    pub async fn rebind(&self) -> io::Result<Vec<StdListener>> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let mut attempt = 0;
            loop {
                match bind_in(slot.addr, slot.netns.as_ref()) {
                    Ok(l) => {
                        out.push(l);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < 50 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Serves `router` on the sockets (in slot order).
    pub fn serve(&mut self, socks: Vec<StdListener>, router: Router, tls: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let mut accept = JoinSet::new();
        for (slot, sock) in self.slots.iter().zip(socks) {
            let listener = TcpListener::from_std(sock)?;
            let acceptor = slot.tls.then(|| TlsAcceptor::from(tls.clone()));
            accept.spawn(accept_loop(listener, acceptor, router.clone(), conns.clone()));
        }
        self.running = Some(Running { accept, conns });
        Ok(())
    }

    /// Closes the listeners and cuts every connection (open watches end
    /// abruptly).
    pub async fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        running.accept.shutdown().await;
        let mut conns = std::mem::take(&mut *running.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        conns.shutdown().await;
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, router: Router, conns: Arc<Mutex<JoinSet<()>>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let mut set = conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while set.try_join_next().is_some() {}
                set.spawn(serve_connection(stream, tls.clone(), router.clone()));
            }
            Err(e) => {
                tracing::warn!("apiserver accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, router: Router) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let result = match tls {
        Some(acceptor) => match acceptor.accept(stream).await {
            // Upgrades: exec, attach and port-forward streams.
            Ok(tls_stream) => {
                builder
                    .serve_connection(TokioIo::new(tls_stream), service)
                    .with_upgrades()
                    .await
            }
            Err(e) => {
                tracing::debug!("apiserver TLS handshake: {e}");
                return;
            }
        },
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!("apiserver connection: {e}");
    }
}
