//! Running plans: each step as a child process (or a file operation), in order.
//!
//! Only meaningful where the tools exist (see [`super::preflight`]); the
//! code compiles in every build so that it never rots.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::plan::{Cmd, Plan, Stdin, Step};

/// Longest time one command of a plan may run (image builds and `kind create cluster` are the slow ones).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest time one attempt of a [`Step::WaitFor`] probe may run.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between attempts of a [`Step::WaitFor`] probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Its stdout (empty when redirected to a file).
    pub stdout: String,
    /// Its stderr (empty when redirected to a file).
    pub stderr: String,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("`{program}` failed ({status}){}", tail(.stderr))]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr.
        stderr: String,
    },
    /// It ran longer than allowed and was killed.
    #[error("`{program}` did not finish within {}s and was killed", .timeout.as_secs())]
    Timeout {
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A failed step of a plan.
#[derive(Debug, thiserror::Error)]
#[error("step {number} ({purpose}) failed: {source}\n  the step: {rendered}")]
pub struct StepError {
    /// 1-based number of the step in its plan.
    pub number: usize,
    /// What the step was for.
    pub purpose: String,
    /// The step as the plan renders it.
    pub rendered: String,
    /// What went wrong.
    pub source: ExecError,
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    let start = lines.len().saturating_sub(20);
    if lines.is_empty() {
        String::new()
    } else {
        format!(":\n{}", lines[start..].join("\n"))
    }
}

/// Run every step of `plan` in order; stop at the first failure.
pub fn run_plan(plan: &Plan) -> Result<(), StepError> {
    tracing::info!(plan = %plan.title, "running plan");
    for (index, step) in plan.steps.iter().enumerate() {
        run_step(step).map_err(|source| StepError {
            number: index + 1,
            purpose: step.purpose().unwrap_or("file operation").to_string(),
            rendered: step.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Run every step of `plan`, even after failures (for teardown and log
/// collection, where each step is worth trying); return the first failure.
pub fn run_plan_all(plan: &Plan) -> Result<(), StepError> {
    tracing::info!(plan = %plan.title, "running plan (every step)");
    let mut first = None;
    for (index, step) in plan.steps.iter().enumerate() {
        if let Err(source) = run_step(step) {
            let error = StepError {
                number: index + 1,
                purpose: step.purpose().unwrap_or("file operation").to_string(),
                rendered: step.to_string(),
                source,
            };
            tracing::warn!("{error}");
            first.get_or_insert(error);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Run one step.
pub fn run_step(step: &Step) -> Result<(), ExecError> {
    match step {
        Step::Note(text) => {
            tracing::debug!("# {text}");
            Ok(())
        }
        Step::MakeDir(path) => std::fs::create_dir_all(path).map_err(|source| ExecError::Io {
            what: format!("creating {}", path.display()),
            source,
        }),
        Step::Stage { files, dir, .. } => {
            for file in files {
                let name = file.file_name().unwrap_or(file.as_os_str());
                std::fs::copy(file, dir.join(name)).map_err(|source| ExecError::Io {
                    what: format!("copying {} to {}", file.display(), dir.display()),
                    source,
                })?;
            }
            Ok(())
        }
        Step::Command(command) => {
            tracing::info!(purpose = %command.purpose, "{}", command.cmd);
            if let Some(probe) = &command.skip_if {
                let listed = run(&probe.cmd, PROBE_TIMEOUT)?;
                if listed.stdout.lines().any(|line| line.trim() == probe.line) {
                    tracing::info!("skipped: `{}` lists {}", probe.cmd, probe.line);
                    return Ok(());
                }
            }
            run(&command.cmd, COMMAND_TIMEOUT).map(drop)
        }
        Step::ApplyManifest {
            kubeconfig,
            source,
            purpose,
        } => {
            let cmd = source.apply_command(kubeconfig);
            tracing::info!(purpose = %purpose, "{cmd}");
            run(&cmd, COMMAND_TIMEOUT).map(drop)
        }
        Step::WaitFor {
            probe,
            timeout,
            purpose,
        } => {
            tracing::info!(purpose = %purpose, "waiting up to {}s: {probe}", timeout.as_secs());
            let deadline = Instant::now() + *timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match run(probe, left.min(PROBE_TIMEOUT).max(Duration::from_secs(1))) {
                    Ok(_) => return Ok(()),
                    Err(error) if Instant::now() + PROBE_INTERVAL >= deadline => return Err(error),
                    Err(error) => tracing::debug!("not yet: {error}"),
                }
                thread::sleep(PROBE_INTERVAL);
            }
        }
    }
}

/// Run one command with a time limit, feeding its stdin and capturing its output.
pub fn run(cmd: &Cmd, timeout: Duration) -> Result<Captured, ExecError> {
    let mut upstream = match &cmd.stdin {
        Some(Stdin::Output(from)) => Some(spawn(from, Stdio::null(), Stdio::piped(), Stdio::piped())?),
        _ => None,
    };
    let stdin = match (&cmd.stdin, upstream.as_mut().and_then(|child| child.stdout.take())) {
        (_, Some(pipe)) => Stdio::from(pipe),
        (Some(Stdin::Text(_)), None) => Stdio::piped(),
        _ => Stdio::null(),
    };
    let (stdout, stderr) = match &cmd.output_file {
        Some(path) => {
            let io = |source| ExecError::Io {
                what: format!("creating {}", path.display()),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            let file = File::create(path).map_err(io)?;
            let copy = file.try_clone().map_err(io)?;
            (Stdio::from(file), Stdio::from(copy))
        }
        None => (Stdio::piped(), Stdio::piped()),
    };
    let mut child = match spawn(cmd, stdin, stdout, stderr) {
        Ok(child) => child,
        Err(error) => {
            kill(upstream.as_mut());
            return Err(error);
        }
    };
    let feeder = match (&cmd.stdin, child.stdin.take()) {
        (Some(Stdin::Text(text)), Some(mut pipe)) => {
            let text = text.clone();
            // A child that exits without reading its stdin is reported by its status, not here.
            Some(thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let upstream_err = upstream.as_mut().and_then(|child| child.stderr.take()).map(reader);

    let status = wait(&mut child, timeout).inspect_err(|_| kill(upstream.as_mut()));
    let status = status.map_err(|_| ExecError::Timeout {
        program: cmd.program.clone(),
        timeout,
    })?;
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let captured = Captured {
        stdout: joined(out),
        stderr: joined(err),
    };
    if let (Some(from), Some(Stdin::Output(from_cmd))) = (upstream.as_mut(), &cmd.stdin) {
        let from_status = wait(from, PROBE_TIMEOUT).map_err(|_| ExecError::Timeout {
            program: from_cmd.program.clone(),
            timeout: PROBE_TIMEOUT,
        })?;
        if !from_status.success() {
            return Err(ExecError::Failed {
                program: from_cmd.program.clone(),
                status: from_status,
                stderr: joined(upstream_err),
            });
        }
    }
    if status.success() {
        Ok(captured)
    } else {
        Err(ExecError::Failed {
            program: cmd.program.clone(),
            status,
            stderr: captured.stderr,
        })
    }
}

fn spawn(cmd: &Cmd, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Result<Child, ExecError> {
    Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: cmd.program.clone(),
            source,
        })
}

/// Wait for `child` until `timeout`; kill it (and return `Err`) when the time is up.
fn wait(child: &mut Child, timeout: Duration) -> Result<ExitStatus, ()> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                kill(Some(child));
                return Err(());
            }
        }
    }
}

fn kill(child: Option<&mut Child>) {
    if let Some(child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn joined(handle: Option<thread::JoinHandle<String>>) -> String {
    handle.and_then(|handle| handle.join().ok()).unwrap_or_default()
}

/// Deletes a cluster when dropped, by running its teardown plan, unless disarmed.
#[derive(Debug)]
pub struct TeardownGuard {
    teardown: Plan,
    armed: bool,
}

impl TeardownGuard {
    /// A guard that runs `teardown` on drop when `armed`.
    pub fn new(teardown: Plan, armed: bool) -> TeardownGuard {
        TeardownGuard { teardown, armed }
    }

    /// Whether dropping the guard deletes the cluster.
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Keep the cluster after all.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Run the teardown now (once).
    pub fn teardown_now(&mut self) -> Result<(), StepError> {
        if !std::mem::replace(&mut self.armed, false) {
            return Ok(());
        }
        run_plan_all(&self.teardown)
    }
}

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Err(error) = self.teardown_now() {
            tracing::error!("teardown failed: {error}");
            eprintln!("istio-cni-kind: teardown failed: {error}");
        }
    }
}
