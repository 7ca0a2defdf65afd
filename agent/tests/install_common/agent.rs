//! The real `istio-cni-agent` binary on a [`Node`], with no API server: no
//! repair mode is set (the binary's default), so the API server is only a
//! URL written into the plugin's kubeconfig; health on
//! an ephemeral loopback port, no metrics server, nothing from the
//! environment. Plus the node-side checks the kill tests share.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use istio_cni_agent::config::InstallSettings;
use istio_cni_agent::install::atomic::is_temp_name;
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use super::{Node, settings_at};

pub const AGENT: &str = env!("CARGO_BIN_EXE_istio-cni-agent");

impl Node {
    /// `istio-cni-agent [uninstall]` with the settings of [`settings_at`];
    /// stderr is appended to `<scratch>/agent.log`, stdout discarded.
    pub fn agent_command(&self, uninstall: bool) -> Command {
        self.agent_command_with(uninstall, &settings_at(self.scratch.path()))
    }

    /// The same with the install settings `s` (those [`settings_at`] sets,
    /// plus SKIP_TLS_VERIFY). No repair mode is set: the binary's default.
    pub fn agent_command_with(&self, uninstall: bool, s: &InstallSettings) -> Command {
        let mut cmd = Command::new(AGENT);
        cmd.env_clear();
        if uninstall {
            cmd.arg("uninstall");
        }
        let path = |p: &Path| p.as_os_str().to_owned();
        cmd.arg("--mounted-cni-net-dir")
            .arg(path(&s.mounted_cni_net_dir))
            .arg("--cni-bin-dir")
            .arg(path(&s.cni_bin_dir))
            .arg("--cni-bin-source-dir")
            .arg(path(&s.cni_bin_source_dir))
            .arg("--cni-agent-run-dir")
            .arg(path(&s.cni_agent_run_dir))
            .arg("--service-account-dir")
            .arg(path(&s.service_account_dir))
            .args(["--kubernetes-service-host", &s.kubernetes_service_host])
            .args(["--kubernetes-service-port", &s.kubernetes_service_port])
            .args(["--exclude-namespaces", &s.exclude_namespaces])
            .args(["--pod-namespace", &s.pod_namespace])
            .args(["--skip-tls-verify", if s.skip_tls_verify { "true" } else { "false" }]);
        if !uninstall {
            cmd.args([
                "--health-port",
                "0",
                "--monitoring-port",
                "0",
                "--listen-address",
                "127.0.0.1",
            ]);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.join("agent.log"))
            .unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        cmd
    }

    /// The agent's log so far, for failure messages (its last lines).
    pub fn agent_log_tail(&self) -> String {
        let text = fs::read_to_string(self.scratch.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Every file under the conf, bin and run dirs with its bytes (`None`
    /// for what cannot be read as a file, e.g. a socket).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
        let mut files = BTreeMap::new();
        for dir in [&self.conf, &self.bin, &self.run] {
            for entry in fs::read_dir(dir).into_iter().flatten() {
                let path = entry.unwrap().path();
                let bytes = fs::read(&path).ok();
                files.insert(path, bytes);
            }
        }
        files
    }

    /// Whether the node holds our installation: `list` has exactly
    /// `installed`, and the binary and kubeconfig are in place.
    pub fn is_installed(&self, list: &str, installed: &str) -> bool {
        fs::read_to_string(self.conf.join(list)).is_ok_and(|t| t == installed)
            && self.bin.join("istio-cni").exists()
            && self.run.join("istio-cni-kubeconfig").exists()
    }

    /// Files of ours still on the node: temp files anywhere, the binary,
    /// anything in the run dir (kubeconfig, state file, log socket).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for dir in [&self.conf, &self.bin] {
            for entry in fs::read_dir(dir).into_iter().flatten() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if is_temp_name(&name) || (dir == &self.bin && name == "istio-cni") {
                    left.push(self.redact(&dir.join(name).to_string_lossy()));
                }
            }
        }
        for entry in fs::read_dir(&self.run).into_iter().flatten() {
            left.push(self.redact(&entry.unwrap().path().to_string_lossy()));
        }
        left
    }

    /// Err naming what differs when the node is not exactly as before our
    /// first install: `file` alone in the conf dir with `original`'s bytes,
    /// and no leftover ([`Node::leftovers`]).
    pub fn check_clean(&self, file: &str, original: &str) -> Result<(), String> {
        let files = self.conf_files();
        if files != [file] {
            return Err(format!("conf dir holds {files:?}"));
        }
        let text = self.read(file);
        if text != original {
            return Err(format!("{file} is not the original:\n{text}"));
        }
        let left = self.leftovers();
        if !left.is_empty() {
            return Err(format!("left behind: {left:?}"));
        }
        Ok(())
    }
}

/// Blocks SIGTERM and SIGINT in the child before exec, so a signal sent
/// while the dynamic loader still runs is pending when the agent's `main`
/// starts instead of killing it.
pub fn block_termination_at_exec(cmd: &mut Command) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // SAFETY: between fork and exec only pthread_sigmask runs, which is
    // async-signal-safe and allocates nothing; `set` was built before fork.
    unsafe {
        cmd.pre_exec(move || set.thread_block().map_err(std::io::Error::from));
    }
}

pub fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    // ESRCH cannot happen: the child is not reaped before `wait`.
    nix::sys::signal::kill(pid, signal).unwrap();
}

/// The child's thread count from /proc (`None` once it is gone).
pub fn threads(child: &Child) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Waits for the child's exit up to `timeout`; `None` when it still runs.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Polls `done` every half millisecond up to `timeout`; whether it held.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    done()
}

/// The signal that killed the child, if one did.
pub fn killed_by(status: ExitStatus) -> Option<Signal> {
    status.signal().and_then(|s| Signal::try_from(s).ok())
}
