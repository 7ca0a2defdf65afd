//! Executing one plugin binary: environment, stdin, captured output, a
//! deadline, and (optionally) a network namespace to run in.
//!
//! The child gets the caller's environment plus the given variables (as
//! libcni does), runs in its own process group so that a timeout kills
//! anything it started, and — when a namespace is given — enters it between
//! `fork` and `exec` (the node's netns: plugins act on the node's network
//! stack, just as kubelet's runtime runs them in the host's).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::node::netns::Netns;

/// How many times a spawn failing with ETXTBSY ("text file busy": the binary
/// is being replaced) is retried, as libcni's `RawExec` does.
const TEXT_BUSY_RETRIES: u32 = 5;

/// What a finished plugin process produced.
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Stdout bytes.
    pub stdout: Vec<u8>,
    /// Stderr bytes.
    pub stderr: Vec<u8>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Why a plugin process did not finish normally.
#[derive(Debug)]
pub enum ExecFailure {
    /// It could not be started.
    Spawn(std::io::Error),
    /// It ran past the deadline and was killed.
    Timeout {
        /// Whatever it printed on stdout before being killed.
        stdout: Vec<u8>,
        /// Whatever it printed on stderr before being killed.
        stderr: Vec<u8>,
    },
    /// Waiting for it failed.
    Wait(std::io::Error),
}

/// Runs `program` with `env` added to the inherited environment, `stdin` on
/// its standard input, inside `netns` if given, killing it (and its process
/// group) after `timeout`.
pub fn execute(
    program: &Path,
    env: &[(String, String)],
    stdin: &[u8],
    netns: Option<&Netns>,
    timeout: Duration,
) -> Result<RawOutput, ExecFailure> {
    execute_on_node(program, env, &[], stdin, netns, None, timeout)
}

/// Like [`execute`], also removing the inherited variables named in
/// `remove`; with `node_run`, the plugin runs in a private
/// mount namespace whose `/run` is that directory: the node's own runtime
/// state (an agent's run dir, its sockets) at the paths a node's files name
/// it by, as a real node's runtime runs plugins in the node's filesystem.
pub fn execute_on_node(
    program: &Path,
    env: &[(String, String)],
    remove: &[String],
    stdin: &[u8],
    netns: Option<&Netns>,
    node_run: Option<&Path>,
    timeout: Duration,
) -> Result<RawOutput, ExecFailure> {
    let node_run = match node_run.map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes())) {
        Some(Ok(path)) => Some(path),
        Some(Err(e)) => return Err(ExecFailure::Spawn(std::io::Error::other(e))),
        None => None,
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = spawn_with_retry(|| {
        let mut cmd = Command::new(program);
        for key in remove {
            cmd.env_remove(key);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(ns) = netns {
            ns.enter_on_exec(&mut cmd);
        }
        if let Some(run) = &node_run {
            bind_run_on_exec(&mut cmd, run.clone());
        }
        cmd
    })
    .map_err(ExecFailure::Spawn)?;

    let input = stdin.to_vec();
    let writer = child.stdin.take().map(|mut pipe| {
        std::thread::spawn(move || {
            // A plugin may exit without reading stdin (VERSION): ignore EPIPE.
            let _ = pipe.write_all(&input);
        })
    });
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());

    let status = wait_until(&mut child, deadline).map_err(ExecFailure::Wait)?;
    let grace = Duration::from_millis(500);
    let status = match status {
        Some(status) => status,
        None => {
            kill_group(&child);
            let _ = child.wait();
            let out = collect(stdout, Instant::now() + grace);
            let err = collect(stderr, Instant::now() + grace);
            return Err(ExecFailure::Timeout {
                stdout: out,
                stderr: err,
            });
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    // The pipes close when the plugin exits, unless something it started
    // keeps them open; wait for that until the deadline, then give up.
    let until = deadline.max(Instant::now() + grace);
    let out = collect(stdout, until);
    let err = collect(stderr, until);
    Ok(RawOutput {
        status,
        stdout: out,
        stderr: err,
        elapsed: start.elapsed(),
    })
}

/// In the child: a private mount namespace (nothing propagates back) with
/// `run` bound over `/run`.
fn bind_run_on_exec(cmd: &mut Command, run: std::ffi::CString) {
    // SAFETY: the hook runs in the forked child before exec and only makes
    // the unshare(2) and mount(2) system calls on strings built before the
    // fork; it allocates nothing and takes no locks (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            let root = c"/";
            let target = c"/run";
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                run.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))
        });
    }
}

fn spawn_with_retry(mut make: impl FnMut() -> Command) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        match make().spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, until: Instant) -> Vec<u8> {
    rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        .unwrap_or_default()
}

fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // The child leads its own process group (process_group(0)).
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> (std::path::PathBuf, impl Drop) {
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        use std::os::unix::fs::PermissionsExt;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("ick-exec-{}-{n}.sh", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (path.clone(), Rm(path))
    }

    #[test]
    fn env_stdin_and_output_are_wired() {
        let (path, _rm) = sh(r#"printf '%s|' "$CNI_COMMAND"; cat; echo err >&2"#);
        let out = execute(
            &path,
            &[("CNI_COMMAND".into(), "ADD".into())],
            b"{}",
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"ADD|{}");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let (path, _rm) = sh("echo started; sleep 30 & sleep 30");
        let start = Instant::now();
        match execute(&path, &[], b"", None, Duration::from_millis(300)) {
            Err(ExecFailure::Timeout { stdout, .. }) => assert_eq!(stdout, b"started\n"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_binary_is_a_spawn_error() {
        let err = execute(Path::new("/nonexistent/plugin"), &[], b"", None, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ExecFailure::Spawn(_)));
    }
}
