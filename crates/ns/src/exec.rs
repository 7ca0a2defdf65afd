//! Running a command to completion inside a network namespace, optionally in
//! a private mount namespace ([`MountSandbox`]).
//!
//! The command is spawned from a fresh thread that has entered the netns
//! (and, when asked, unshared its mount namespace and applied the sandbox's
//! binds): a new process inherits the namespaces of the thread that created
//! it. The thread exits afterwards and is never reused.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::sandbox::{MountSandbox, SandboxError};
use crate::{Netns, NsError};

/// What a fresh pipe holds at least (one page: the kernel's floor once a
/// user exceeds `pipe-user-pages-soft`); stdin up to this size is written
/// without a writer thread.
const PIPE_MIN_CAPACITY: usize = 4096;

/// A command, its stdin and its sandbox, ready to run in a namespace.
#[derive(Debug)]
pub struct Job {
    command: Command,
    stdin: Option<Vec<u8>>,
    sandbox: Option<MountSandbox>,
}

/// Whether the sandbox was in effect for the command.
#[derive(Debug)]
pub enum Sandboxed {
    /// None was asked for.
    No,
    /// It was set up.
    Yes,
    /// It was asked for but could not be set up; the command ran anyway, in
    /// the netns, possibly with part of the sandbox.
    Failed(SandboxError),
}

/// A command that ran, whatever its exit status.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub sandboxed: Sandboxed,
}

/// Why a command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The netns could not be entered (or the thread failed).
    #[error(transparent)]
    Netns(#[from] NsError),
    /// The process could not be started, or its I/O failed.
    #[error("{source}")]
    Io {
        #[source]
        source: io::Error,
    },
}

impl Job {
    /// `command` with stdin from `/dev/null`, stdout and stderr captured,
    /// no sandbox.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            stdin: None,
            sandbox: None,
        }
    }

    /// Feeds `input` on stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs the command in a private mount namespace with `sandbox`'s binds.
    pub fn sandbox(mut self, sandbox: MountSandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Runs to completion inside `netns`. `Err` only when the command could
    /// not run at all; a failed sandbox is reported in [`Output::sandboxed`].
    pub fn run_in(self, netns: &Netns) -> Result<Output, ExecError> {
        let ns = netns.clone();
        crate::thread::on_fresh_thread("netns-exec", netns.path(), move || {
            ns.enter_current_thread()?;
            let sandboxed = match &self.sandbox {
                None => Sandboxed::No,
                Some(sandbox) => match sandbox.enter_current_thread() {
                    Ok(()) => Sandboxed::Yes,
                    Err(e) => Sandboxed::Failed(e),
                },
            };
            Ok(self.spawn_and_wait(sandboxed))
        })?
        .map_err(|source| ExecError::Io { source })
    }

    fn spawn_and_wait(mut self, sandboxed: Sandboxed) -> io::Result<Output> {
        let stdin = if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self
            .command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let input = self.stdin.take();
        let output = std::thread::scope(|s| {
            if let (Some(mut pipe), Some(input)) = (child.stdin.take(), input.as_deref()) {
                // A write error (child exited early) shows up in its status.
                if input.len() <= PIPE_MIN_CAPACITY {
                    // Fits an empty pipe: the write cannot block.
                    let _ = pipe.write_all(input);
                } else {
                    // A separate writer avoids a pipe deadlock on large payloads.
                    s.spawn(move || {
                        let _ = pipe.write_all(input);
                    });
                }
            }
            child.wait_with_output()
        })?;
        Ok(Output {
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
            sandboxed,
        })
    }
}

/// `PATH`-style search: the first executable regular file named `program`
/// in `search_path`. Names containing `/` are taken as paths.
pub fn find_in_path(program: &str, search_path: &OsStr) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(search_path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Bind;
    use crate::testing::{Scratch, privileged, privileged_scratch};

    #[test]
    fn finds_binaries_only_in_the_search_path() {
        let dir = Scratch::new("path");
        assert_eq!(find_in_path("sh", dir.as_os_str()), None);
        assert!(find_in_path("sh", OsStr::new("/nonexistent:/bin:/usr/bin")).is_some());
        assert!(find_in_path("/bin/sh", OsStr::new("")).is_some());
        assert_eq!(find_in_path("/nonexistent/sh", OsStr::new("/bin")), None);
    }

    #[test]
    fn stdin_is_fed_and_output_captured_inside_the_netns() {
        let Some(dir) = privileged_scratch("exec::stdin_is_fed") else {
            return;
        };
        let ns = Netns::create(&dir.join("ns")).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; readlink /proc/self/ns/net; echo oops >&2; exit 3"]);
        // More than a pipe buffer, so a writer on the same thread would hang.
        let big = "x".repeat(1 << 20);
        let out = Job::new(cmd).stdin(format!("{big}\n")).run_in(&ns).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(matches!(out.sandboxed, Sandboxed::No));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ns.path()).unwrap());
        assert_eq!(stdout, format!("{big}\nnet:[{inode}]\n"));
        assert_eq!(out.stderr, b"oops\n");
        ns.delete().unwrap();
    }

    #[test]
    fn a_missing_program_is_an_io_error() {
        if !privileged("exec::missing_program") {
            return;
        }
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        let err = Job::new(Command::new("/nonexistent/prog")).run_in(&ns).unwrap_err();
        assert!(matches!(err, ExecError::Io { .. }), "{err}");
    }

    #[test]
    fn the_sandbox_masks_files_for_the_command_only() {
        let Some(dir) = privileged_scratch("exec::sandbox_masks") else {
            return;
        };
        let secret = dir.join("secret");
        std::fs::write(&secret, "host content").unwrap();
        let created = dir.join("created");
        let skipped = dir.join("skipped");
        let sandbox = MountSandbox::new([
            Bind::new("/dev/null", &secret).read_only(),
            Bind::new(&secret, &created).create_target(),
            Bind::new("/dev/null", &skipped),
        ]);
        let mut cmd = Command::new("sh");
        let script = format!(
            "wc -c < {s}; awk '$5 == \"{s}\" {{ print substr($6, 1, 3) }}' /proc/self/mountinfo; test -e {k} || echo skipped",
            s = secret.display(),
            k = skipped.display()
        );
        cmd.args(["-c", &script]);
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        let out = Job::new(cmd).sandbox(sandbox).run_in(&ns).unwrap();
        assert!(matches!(out.sandboxed, Sandboxed::Yes), "{:?}", out.sandboxed);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout,
            "0\nro,\nskipped\n",
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The masks lived in the command's private mount namespace only.
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host content");
        assert!(!crate::mounts::is_mounted(&secret));
        assert!(!crate::mounts::is_mounted(&created));
        assert!(created.exists(), "the missing target was created");
    }

    #[test]
    fn a_sandbox_that_cannot_be_set_up_is_reported_and_the_command_still_runs() {
        let Some(dir) = privileged_scratch("exec::sandbox_fails") else {
            return;
        };
        let sandbox = MountSandbox::new([Bind::new(dir.join("no-such-source"), &*dir).create_target()]);
        let mut cmd = Command::new("true");
        cmd.current_dir("/");
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        let out = Job::new(cmd).sandbox(sandbox).run_in(&ns).unwrap();
        assert!(out.status.success());
        match out.sandboxed {
            Sandboxed::Failed(e) => assert!(e.to_string().contains("no-such-source"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
