//! Running the real `istio-cni-agent` binary against a node laid out in a
//! temp dir (or an embedded-cluster node), and talking to its endpoints.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A node's directories as the agent sees them.
pub struct NodeDirs {
    pub root: PathBuf,
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub source_dir: PathBuf,
    pub run_dir: PathBuf,
    pub sa_dir: PathBuf,
}

impl NodeDirs {
    /// A fresh layout under the temp dir with a source `istio-cni` binary and
    /// a service-account dir holding a token and a CA.
    pub fn new(name: &str) -> NodeDirs {
        let root = std::env::temp_dir().join(format!("agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs = NodeDirs {
            conf_dir: root.join("etc/cni/net.d"),
            bin_dir: root.join("opt/cni/bin"),
            source_dir: root.join("image/opt/cni/bin"),
            run_dir: root.join("var/run/istio-cni"),
            sa_dir: root.join("sa"),
            root,
        };
        for d in [&dirs.conf_dir, &dirs.bin_dir, &dirs.source_dir, &dirs.sa_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dirs.source_dir.join("istio-cni"), b"#!/bin/sh\nexit 0\n").unwrap();
        std::fs::write(dirs.sa_dir.join("token"), b"token-1").unwrap();
        std::fs::write(
            dirs.sa_dir.join("ca.crt"),
            b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        dirs
    }

    /// The env that points the agent at these dirs.
    pub fn env(&self) -> Vec<(String, String)> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            ("MOUNTED_CNI_NET_DIR".into(), s(&self.conf_dir)),
            ("CNI_BIN_DIR".into(), s(&self.bin_dir)),
            ("CNI_BIN_SOURCE_DIR".into(), s(&self.source_dir)),
            ("CNI_AGENT_RUN_DIR".into(), s(&self.run_dir)),
            ("SERVICE_ACCOUNT_DIR".into(), s(&self.sa_dir)),
            ("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
            ("REPAIR_ENABLED".into(), "false".into()),
        ]
    }
}

impl Drop for NodeDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A running agent process; SIGKILLed on drop if still running.
pub struct Agent {
    pub child: Child,
    pub health_port: u16,
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Agent {
    /// Starts the agent binary with `env` (plus ports on 127.0.0.1) via `cmd`.
    pub fn start_with(mut cmd: Command, env: &[(String, String)]) -> Agent {
        let health_port = free_port();
        let metrics_port = free_port();
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("HEALTH_PORT", health_port.to_string())
            .env("MONITORING_PORT", metrics_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // AGENT_TEST_LOGS=1 shows the agent's logs.
            .stderr(if std::env::var_os("AGENT_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let child = cmd.spawn().expect("starting istio-cni-agent");
        Agent {
            child,
            health_port,
            metrics_port,
        }
    }

    pub fn start(env: &[(String, String)]) -> Agent {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_istio-cni-agent")), env)
    }

    /// GET `path` on the health port: the status code, or None if not listening.
    pub fn health(&self, path: &str) -> Option<u16> {
        http_get(self.health_port, path).map(|(code, _)| code)
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of one metric sample line, e.g. `istio_cni_installs_total{result="SUCCESS"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` is 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.health("/readyz") != Some(200) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited before ready: {status}");
            }
            assert!(Instant::now() < deadline, "agent not ready within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait; the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().ok()?;
        status.code()
    }

    /// CPU time (user+system) used so far, from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET to 127.0.0.1:`port`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// Polls until `f` holds; the time it took, or None after `timeout`.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether `path` holds a JSON conflist whose last plugin is istio-cni.
pub fn has_istio_entry(path: &Path) -> bool {
    let Ok(text) = std::fs::read(path) else { return false };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    v["plugins"]
        .as_array()
        .and_then(|p| p.last())
        .is_some_and(|p| p["type"] == "istio-cni")
}
