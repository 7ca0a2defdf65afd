//! What the kubectl tests share: a local ptp cluster with the pinned kubectl
//! pointed at it, `kubectl apply` of a JSON document, the lines a child
//! prints as they come, polling with a deadline, and a command run on a
//! real terminal (`-it`) with what it printed there.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::cni::Profile;
use istio_cni_kind::kubelet::{Backoff, ImageTable};
use serde_json::Value;
use testkit::{Kubectl, Need, Scratch};

/// How long any wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);
/// [`WAIT`] as a kubectl flag.
pub const TIMEOUT: &str = "--timeout=60s";
/// This build's mesh-probe, the `mesh-probe` image.
pub const PROBE: &str = env!("CARGO_BIN_EXE_mesh-probe");
/// What every kubectl test needs from the machine.
pub const NEEDS: &[Need] = &[Need::Root, Need::Tool("ip"), Need::CniPlugins];

/// A ptp cluster of `nodes` nodes with the images `mesh-probe` (this
/// build's) and `shell` (`/bin/sh`).
pub fn spec(nodes: u32) -> ClusterSpec {
    ClusterSpec {
        nodes,
        profile: Profile::Ptp,
        images: ImageTable::new()
            .add("mesh-probe", PROBE, &[])
            .add("shell", "/bin/sh", &[]),
        ..ClusterSpec::default()
    }
}

/// A restart backoff short enough for a test to see several restarts.
pub fn short_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
    }
}

/// A cluster and kubectl pointed at it.
pub struct Env {
    // Dropped in this order: kubectl, its home, the cluster last.
    pub k: Kubectl,
    pub scratch: Scratch,
    pub cluster: Cluster,
}

/// Creates the cluster of `spec` once `needs` are met; `None` (after the
/// gate's `SKIP:`) when they are not or kubectl is missing, and for an
/// ordinary user once the test's re-run as root of a user namespace is
/// over (`testkit::gate_or_userns`: it reports that run).
pub fn start(test: &str, needs: &[Need], spec: ClusterSpec) -> Option<Env> {
    if !testkit::gate_or_userns(test, needs) {
        return None;
    }
    let scratch = Scratch::new(test);
    let cluster = Cluster::create(spec).expect("cluster");
    let k = Kubectl::new(test, cluster.kubeconfig_path(), &scratch)?;
    Some(Env { k, scratch, cluster })
}

/// `kubectl apply -f -` of `doc` (its namespace is the one in its metadata).
pub fn apply(k: &Kubectl, doc: &Value) {
    let run = k.run_with_stdin(&["apply", "-f", "-"], Some(doc.to_string().as_bytes()));
    assert!(run.success(), "{run}");
}

/// Lines a child prints on stdout, as they come.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Spawns `command` with its stdout piped into [`lines_of`] and its stderr
/// to `stderr`.
pub fn follow(mut command: Command, stderr: Stdio) -> (Child, mpsc::Receiver<String>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("kubectl");
    let lines = lines_of(&mut child);
    (child, lines)
}

/// Kills a child and reaps it.
pub fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The local port of a `kubectl port-forward` that is forwarding.
pub fn forwarded_port(lines: &mpsc::Receiver<String>) -> u16 {
    let line = wait_line(lines, "Forwarding from 127.0.0.1:");
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"))
}

/// Waits for a line containing `needle`; every line seen on failure.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw {seen:#?}");
}

/// Polls `done` every `every` until it holds; panics naming `what` after
/// [`WAIT`]. Returns how long it took.
pub fn wait_until(what: &str, every: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT, "timed out waiting for: {what}");
        std::thread::sleep(every);
    }
    started.elapsed()
}

/// A command whose stdin, stdout and stderr are one terminal, and what it
/// has printed there so far.
pub struct Terminal {
    child: Child,
    typing: File,
    seen: Arc<Mutex<Vec<u8>>>,
    /// Says the terminal has closed (every holder of its slave exited).
    closed: mpsc::Receiver<()>,
}

impl Terminal {
    /// Spawns `command` on a new terminal, of `(rows, columns)` if given.
    pub fn spawn(mut command: Command, size: Option<(u16, u16)>) -> Terminal {
        let size = size.map(|(rows, cols)| nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = nix::pty::openpty(size.as_ref(), None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let child = command
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .spawn()
            .expect("kubectl");
        drop(pty.slave);
        let mut master = File::from(pty.master);
        let typing = master.try_clone().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, closed) = mpsc::channel();
        let record = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once kubectl, the last holder of the slave, exits.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                record.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(());
        });
        Terminal {
            child,
            typing,
            seen,
            closed,
        }
    }

    /// What the terminal has shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `needle`; panics after [`WAIT`].
    pub fn wait_for(&self, needle: &str) {
        let started = Instant::now();
        while !self.text().contains(needle) {
            assert!(
                started.elapsed() < WAIT,
                "no {needle:?} on the terminal: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys` on the terminal.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.typing.write_all(keys).unwrap();
    }

    /// Waits for the command to exit and the terminal to close: all it
    /// showed and the command's exit code.
    pub fn finish(mut self) -> (String, Option<i32>) {
        let status = self.child.wait().expect("kubectl");
        self.closed.recv_timeout(WAIT).expect("terminal output");
        (self.text(), status.code())
    }
}
