//! Running `iptables*`/`nft` inside the pod netns, sandboxed.
//!
//! Each command runs through [`linux_ns::exec::Job`]: spawned from a fresh
//! thread inside the pod netns and a private mount namespace. The plugin's
//! policy for that sandbox: `/etc/nsswitch.conf` is masked with a read-only
//! `/dev/null` (so `-m owner` never triggers NSS lookups, which may hit the
//! network) and, for legacy iptables older than 1.8.6, the netns file is
//! bind-mounted over `/run/xtables.lock` so that the lock is per pod instead
//! of host-wide.
//!
//! If the sandbox cannot be set up (typically: no `CAP_SYS_ADMIN`), a warning
//! is logged and the command runs unsandboxed, still in the pod netns.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use linux_ns::Netns;
use linux_ns::exec::{ExecError, Job, Sandboxed};
use linux_ns::sandbox::{Bind, MountSandbox};

use super::NetnsError;

/// `PATH`-style binary search (re-exported for the plugin's callers).
pub use linux_ns::exec::find_in_path;

/// `PATH` used when the plugin's environment has none.
pub const DEFAULT_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Legacy iptables' global lock file.
pub const XTABLES_LOCK_PATH: &str = "/run/xtables.lock";
const NSSWITCH_PATH: &str = "/etc/nsswitch.conf";

/// How the xtables lock is scoped for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XtablesLock {
    /// No lock handling (nft-based binaries, `-save`, `nft`).
    #[default]
    None,
    /// Legacy 1.6.2 ≤ v < 1.8.6: bind-mount the netns file over
    /// `/run/xtables.lock` inside the sandbox.
    BindMount,
    /// Legacy ≥ 1.8.6: the child's environment is exactly
    /// `XTABLES_LOCKFILE=<netns path>`.
    EnvLockfile,
}

/// One external command to run in the pod netns.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// Binary name, looked up in the runner's search path.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Bytes fed to stdin (stdin is `/dev/null` when `None`).
    pub stdin: Option<Vec<u8>>,
    /// Lock scoping.
    pub lock: XtablesLock,
}

impl CommandSpec {
    /// A command with the given arguments and no stdin or lock.
    pub fn new<S: Into<String>>(program: impl Into<String>, args: impl IntoIterator<Item = S>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Feeds `input` on stdin.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Sets the lock scoping.
    pub fn lock(mut self, lock: XtablesLock) -> Self {
        self.lock = lock;
        self
    }

    /// The command line for messages: program and arguments, space-joined
    /// (arguments with spaces are quoted).
    pub fn cmdline(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn quote(arg: &str) -> String {
    if arg.is_empty() || arg.contains(char::is_whitespace) {
        format!("{arg:?}")
    } else {
        arg.to_owned()
    }
}

/// The result of a command that ran (whatever its exit status).
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// Whether the mount-namespace sandbox was in effect.
    pub sandboxed: bool,
}

impl CommandOutput {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Turns a non-zero exit into [`CommandError::Failed`].
    pub fn check(self) -> Result<Self, CommandError> {
        if self.success() {
            Ok(self)
        } else {
            Err(CommandError::Failed {
                cmdline: self.cmdline,
                code: self.status.code(),
                status: self.status.to_string(),
                stderr: self.stderr,
            })
        }
    }
}

/// A command that could not be run or that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The binary is not in the search path.
    #[error("exec: {program:?}: executable file not found in $PATH ({})", search_path.to_string_lossy())]
    NotFound {
        /// The binary name.
        program: String,
        /// The path that was searched.
        search_path: OsString,
    },
    /// The pod netns could not be entered for the command.
    #[error("`{cmdline}`: {source}")]
    Netns {
        /// The command line.
        cmdline: String,
        /// Why entering failed.
        #[source]
        source: NetnsError,
    },
    /// The process could not be started (or its I/O failed).
    #[error("`{cmdline}` could not be run: {source}")]
    Spawn {
        /// The command line.
        cmdline: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited non-zero.
    #[error("`{cmdline}` failed ({status}): {}", stderr.trim_end())]
    Failed {
        /// The command line.
        cmdline: String,
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Exit status as text (`exit status: 2`, `signal: 9`).
        status: String,
        /// Captured stderr.
        stderr: String,
    },
    /// The per-command thread panicked.
    #[error("`{cmdline}`: command thread panicked")]
    Panicked {
        /// The command line.
        cmdline: String,
    },
}

impl CommandError {
    /// The captured stderr, when the process ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Spawns commands inside one pod netns (see the module docs).
#[derive(Debug, Clone)]
pub struct Runner {
    netns: PathBuf,
    search_path: OsString,
    sandbox: bool,
}

impl Runner {
    /// A sandboxing runner for `netns`, finding binaries in `$PATH`.
    pub fn new(netns: &Path) -> Self {
        let search_path = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_SEARCH_PATH.into());
        Self {
            netns: netns.to_path_buf(),
            search_path,
            sandbox: true,
        }
    }

    /// Finds binaries in `search_path` instead of `$PATH`.
    pub fn with_search_path(mut self, search_path: impl Into<OsString>) -> Self {
        self.search_path = search_path.into();
        self
    }

    /// Enables or disables the mount-namespace sandbox (on by default).
    pub fn with_sandbox(mut self, sandbox: bool) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The netns commands run in.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The binary search path.
    pub fn search_path(&self) -> &OsStr {
        &self.search_path
    }

    /// Resolves `program` to an executable file in the search path.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        find_in_path(program, &self.search_path)
    }

    /// Runs `spec` to completion. `Err` only when it could not run at all;
    /// a non-zero exit is an `Ok` output (use [`CommandOutput::check`]).
    pub fn run(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        let cmdline = spec.cmdline();
        let binary = self.find(&spec.program).ok_or_else(|| CommandError::NotFound {
            program: spec.program.clone(),
            search_path: self.search_path.clone(),
        })?;
        let netns_err = |source| CommandError::Netns {
            cmdline: cmdline.clone(),
            source,
        };
        let netns = Netns::open(&self.netns).map_err(netns_err)?;
        let mut cmd = Command::new(binary);
        cmd.args(&spec.args);
        if spec.lock == XtablesLock::EnvLockfile {
            // As Istio: the child's environment is only the lock file.
            cmd.env_clear().env("XTABLES_LOCKFILE", &self.netns);
        }
        let mut job = Job::new(cmd);
        if let Some(input) = &spec.stdin {
            job = job.stdin(input.clone());
        }
        if self.sandbox {
            job = job.sandbox(sandbox_for(&self.netns, spec.lock));
        }
        tracing::debug!(cmd = %cmdline, sandbox = self.sandbox, "running");
        let output = job.run_in(&netns).map_err(|e| match e {
            ExecError::Netns(NetnsError::Panicked { .. }) => CommandError::Panicked {
                cmdline: cmdline.clone(),
            },
            ExecError::Netns(source) => netns_err(source),
            ExecError::Io { source } => CommandError::Spawn {
                cmdline: cmdline.clone(),
                source,
            },
        })?;
        let sandboxed = match output.sandboxed {
            Sandboxed::Yes => true,
            Sandboxed::No => false,
            Sandboxed::Failed(e) => {
                tracing::warn!(cmd = %cmdline, error = %e, "failed to set up the command sandbox; running unsandboxed");
                false
            }
        };
        Ok(CommandOutput {
            cmdline,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            sandboxed,
        })
    }

    /// Runs `spec` and fails on a non-zero exit.
    pub fn run_checked(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        self.run(spec)?.check()
    }
}

/// The sandbox policy for one command: the xtables lock (when bind-mounted)
/// first, then the NSS mask. A missing nsswitch.conf means glibc defaults
/// (local files only), so there is nothing to mask.
fn sandbox_for(netns: &Path, lock: XtablesLock) -> MountSandbox {
    let lock_bind = (lock == XtablesLock::BindMount).then(|| Bind::new(netns, XTABLES_LOCK_PATH).create_target());
    MountSandbox::new(
        lock_bind
            .into_iter()
            .chain([Bind::new("/dev/null", NSSWITCH_PATH).read_only()]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_quotes_only_when_needed() {
        let spec = CommandSpec::new(
            "iptables",
            ["-t", "nat", "-C", "OUTPUT", "-m", "comment", "--comment", "a b"],
        );
        assert_eq!(
            spec.cmdline(),
            r#"iptables -t nat -C OUTPUT -m comment --comment "a b""#
        );
    }

    #[test]
    fn the_sandbox_binds_the_lock_only_when_asked_and_always_masks_nss() {
        let netns = Path::new("/run/netns/pod");
        let nss = Bind::new("/dev/null", NSSWITCH_PATH).read_only();
        for lock in [XtablesLock::None, XtablesLock::EnvLockfile] {
            assert_eq!(sandbox_for(netns, lock).binds, std::slice::from_ref(&nss), "{lock:?}");
        }
        let lock = Bind::new(netns, XTABLES_LOCK_PATH).create_target();
        assert_eq!(sandbox_for(netns, XtablesLock::BindMount).binds, [lock, nss]);
    }

    #[test]
    fn the_bind_mounted_lock_is_the_netns_file_for_the_command_only() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let runner = Runner::new(Path::new("/proc/self/ns/net"));
        let spec = CommandSpec::new("stat", ["-L", "-c", "%i", XTABLES_LOCK_PATH]).lock(XtablesLock::BindMount);
        let out = runner.run_checked(&spec).unwrap();
        assert!(out.sandboxed);
        let netns = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata("/proc/self/ns/net").unwrap());
        assert_eq!(out.stdout.trim(), netns.to_string());
        let host = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(XTABLES_LOCK_PATH).unwrap());
        assert_ne!(host, netns, "the bind must not reach the host");
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let runner = Runner::new(Path::new("/proc/self/ns/net")).with_search_path("/nonexistent");
        let err = runner.run(&CommandSpec::new("nft", ["--version"])).unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }));
        assert!(err.to_string().contains("executable file not found"), "{err}");
    }

    #[test]
    fn failures_carry_cmdline_status_and_stderr() {
        // Needs CAP_SYS_ADMIN to re-enter our own netns; skip quietly otherwise.
        let runner = Runner::new(Path::new("/proc/self/ns/net"));
        let spec = CommandSpec::new("sh", ["-c", "echo oops >&2; exit 3"]);
        let out = match runner.run(&spec) {
            Ok(out) => out,
            Err(CommandError::Netns { .. }) => return,
            Err(e) => panic!("{e}"),
        };
        let err = out.check().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert_eq!(err.stderr(), Some("oops\n"));
    }

    #[test]
    fn stdin_is_fed_and_env_lockfile_replaces_the_environment() {
        let runner = Runner::new(Path::new("/proc/self/ns/net"));
        let spec = CommandSpec::new("/bin/sh", ["-c", "cat; env"])
            .stdin("hello\n")
            .lock(XtablesLock::EnvLockfile);
        let out = match runner.run(&spec) {
            Ok(out) => out.check().unwrap(),
            Err(CommandError::Netns { .. }) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(out.stdout.starts_with("hello\n"), "{}", out.stdout);
        assert!(
            out.stdout.contains("XTABLES_LOCKFILE=/proc/self/ns/net"),
            "{}",
            out.stdout
        );
        assert!(!out.stdout.contains("HOME="), "{}", out.stdout);
    }

    #[test]
    fn sandbox_masks_nsswitch_without_touching_the_host() {
        let runner = Runner::new(Path::new("/proc/self/ns/net"));
        let spec = CommandSpec::new("sh", ["-c", "wc -c < /etc/nsswitch.conf"]);
        let out = match runner.run(&spec) {
            Ok(out) => out.check().unwrap(),
            Err(CommandError::Netns { .. }) => return,
            Err(e) => panic!("{e}"),
        };
        if nix::unistd::geteuid().is_root() {
            assert!(out.sandboxed, "root must get the sandbox");
        }
        if !out.sandboxed || !Path::new(NSSWITCH_PATH).exists() {
            return;
        }
        assert_eq!(out.stdout.trim(), "0");
        // The mask lived in the command's private mount namespace only.
        assert!(std::fs::metadata(NSSWITCH_PATH).map(|m| m.len()).unwrap_or(0) > 0);
    }
}
