//! The agent's sockets for the plugin in `<run dir>`: HTTP over a Unix
//! socket that only root and the agent's own uid may use.
//!
//! The plugin runs as root (the container runtime execs it); the agent's uid
//! is allowed too for rootless test runs, where both share a uid. The file
//! is 0600 and each connection's peer credentials (SO_PEERCRED) are checked
//! before a byte is read, so no other local user can talk to the agent or
//! read what it answers.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::serve::Listener;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// A socket being served; dropping it does not remove the file,
/// [`RootSocket::close`] does.
pub struct RootSocket {
    path: PathBuf,
    task: JoinHandle<()>,
    refused: Arc<AtomicU64>,
}

impl RootSocket {
    /// Replaces a stale socket `run_dir/name`, creates the run dir (0750)
    /// and serves `router` on it (socket mode 0600). `what` names the socket
    /// in errors and warnings ("plugin log socket").
    pub async fn bind(run_dir: &Path, name: &str, what: &'static str, router: Router) -> std::io::Result<RootSocket> {
        let path = run_dir.join(name);
        let named = |e: std::io::Error, step: &str| {
            std::io::Error::new(e.kind(), format!("{what} {}: {step}: {e}", path.display()))
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
            what,
        };
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(target: "cni-agent", "{what} stopped: {e}");
            }
        });
        Ok(RootSocket { path, task, refused })
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
    what: &'static str,
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
            "{}: refused a connection from {who}: only root and the agent's uid may connect ({n} refused so far)",
            self.what
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
