//! Shared helpers for the harness integration tests (`cni_chain`, `nodes`,
//! `mesh_probe`): the privilege gate, scratch dirs, private harness
//! namespaces, clusters, and mesh-probe processes whose JSON events can be
//! awaited.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::sync::mpsc;
use std::time::{Duration, Instant};

use istio_cni_kind::node::{ClusterConfig, ClusterNetwork, Netns, NodeSpec};
use serde_json::Value;

#[allow(unused_imports)] // not every suite uses each
pub use testkit::{Need, Scratch, gate, run_ok};

/// What the node tests need: root, the CNI plugins and `ip`.
pub const NODE: &[Need] = &[Need::Root, Need::CniPlugins, Need::Tool("ip")];

/// [`NODE`] and more tools on `PATH`.
pub fn node_and(tools: &[&'static str]) -> Vec<Need> {
    NODE.iter()
        .copied()
        .chain(tools.iter().map(|t| Need::Tool(t)))
        .collect()
}

/// A fresh network namespace pinned inside `scratch`, with `lo` up.
pub fn private_netns(scratch: &Scratch, name: &str) -> Netns {
    let ns = Netns::create(&scratch.join(name)).unwrap_or_else(|e| panic!("creating netns {name}: {e}"));
    run_ok(ns.command("ip").args(["link", "set", "lo", "up"]));
    ns
}

/// A cluster whose bridge lives in a private harness netns (so parallel
/// tests and the host never see each other), root under `scratch`.
pub fn cluster(scratch: &Scratch, nodes: &[NodeSpec]) -> (ClusterNetwork, Netns) {
    let harness = private_netns(scratch, "harness");
    let config = ClusterConfig {
        root: Some(scratch.join("cluster")),
        harness_netns: Some(harness.path().to_path_buf()),
        ..ClusterConfig::default()
    };
    let mut net = ClusterNetwork::create(config).unwrap_or_else(|e| panic!("creating cluster: {e}"));
    for spec in nodes {
        net.add_node(spec.clone())
            .unwrap_or_else(|e| panic!("adding node {}: {e}", spec.name));
    }
    (net, harness)
}

/// Tears `net` down and asserts it left nothing behind (links, netns
/// files, mounts, directories).
pub fn teardown_clean(net: ClusterNetwork) {
    let resources = net.resources();
    net.teardown().expect("teardown");
    assert_eq!(resources.leftovers(), Vec::<String>::new());
}

/// The mesh-probe binary built for these tests.
pub fn probe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-probe")
}

/// A running process whose stdout JSON lines are collected.
pub struct Probe {
    pub child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Probe {
    /// Starts `cmd` (stdout/stderr piped).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    if tx.send(value).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        Self {
            child,
            events: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for an event matching `pred` (earlier events are kept).
    pub fn wait_for(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; events so far: {:#?}; stderr: {}",
                    self.seen,
                    self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
                ),
            }
        }
    }

    /// Waits for the `ready` event of a server mode.
    pub fn wait_ready(&mut self) {
        self.wait_for("ready", Duration::from_secs(10), |v| v["event"] == "ready");
    }

    /// Waits for exit and returns the status with every event.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for probe") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("probe did not exit within {timeout:?}; events: {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Drain what is left (the reader ends at EOF).
        while let Ok(v) = self.events.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        let seen = std::mem::take(&mut self.seen);
        (status, seen)
    }

    /// Every event received so far (non-blocking drain).
    pub fn events(&mut self) -> &[Value] {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mesh-probe client` in `ns` to completion; returns exit status and events.
pub fn client(ns: &Netns, args: &[&str]) -> (std::process::ExitStatus, Vec<Value>) {
    let mut cmd = ns.command(probe_bin());
    cmd.arg("client").args(args);
    Probe::spawn(cmd).finish(Duration::from_secs(30))
}

/// Events named `name`.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}
