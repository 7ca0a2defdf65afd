//! Running `iptables*`/`nft` inside the pod netns, sandboxed as in §4.6.
//!
//! Each command gets its own fresh OS thread. That thread re-enters the pod
//! netns, unshares its mount namespace, makes `/` private (or slave), masks
//! `/etc/nsswitch.conf` with a read-only `/dev/null` (so `-m owner` never
//! triggers NSS lookups, which may hit the network) and, for legacy iptables
//! older than 1.8.6, bind-mounts the netns file over `/run/xtables.lock` so
//! that the lock is per pod instead of host-wide. The child is then spawned
//! *from that thread*: on Linux a new process inherits the namespaces of the
//! thread that created it, so the child sees the private mounts while the rest
//! of the plugin does not. The thread exits afterwards and is never reused.
//!
//! If the sandbox cannot be set up (typically: no `CAP_SYS_ADMIN`), a warning
//! is logged and the command runs unsandboxed, still in the pod netns.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use super::NetnsError;

/// `PATH` used when the plugin's environment has none.
pub const DEFAULT_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Legacy iptables' global lock file.
pub const XTABLES_LOCK_PATH: &str = "/run/xtables.lock";
const NSSWITCH_PATH: &str = "/etc/nsswitch.conf";

/// How the xtables lock is scoped for one command (§4.6).
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
    /// Whether the §4.6 sandbox was in effect.
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
        let ns = File::open(&self.netns).map_err(|source| CommandError::Netns {
            cmdline: cmdline.clone(),
            source: NetnsError::Open {
                path: self.netns.clone(),
                source,
            },
        })?;
        let job = Job {
            binary,
            spec: spec.clone(),
            cmdline: cmdline.clone(),
            netns: self.netns.clone(),
            sandbox: self.sandbox,
        };
        let handle = std::thread::Builder::new()
            .name("netns-exec".to_owned())
            .spawn(move || job.run(&ns))
            .map_err(|source| CommandError::Spawn {
                cmdline: cmdline.clone(),
                source,
            })?;
        handle.join().unwrap_or(Err(CommandError::Panicked { cmdline }))
    }

    /// Runs `spec` and fails on a non-zero exit.
    pub fn run_checked(&self, spec: &CommandSpec) -> Result<CommandOutput, CommandError> {
        self.run(spec)?.check()
    }
}

/// Everything the per-command thread needs, owned.
struct Job {
    binary: PathBuf,
    spec: CommandSpec,
    cmdline: String,
    netns: PathBuf,
    sandbox: bool,
}

impl Job {
    /// Runs on the dedicated thread: enter, sandbox, spawn, wait.
    fn run(self, ns: &File) -> Result<CommandOutput, CommandError> {
        super::enter(ns, &self.netns).map_err(|source| CommandError::Netns {
            cmdline: self.cmdline.clone(),
            source,
        })?;
        let sandboxed = self.sandbox
            && match setup_sandbox(&self.netns, self.spec.lock) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(cmd = %self.cmdline, error = %e, "failed to set up the command sandbox; running unsandboxed");
                    false
                }
            };
        self.spawn_and_wait(sandboxed)
    }

    fn spawn_and_wait(self, sandboxed: bool) -> Result<CommandOutput, CommandError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.spec.args)
            .stdin(if self.spec.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.spec.lock == XtablesLock::EnvLockfile {
            // As Istio: the child's environment is only the lock file.
            cmd.env_clear().env("XTABLES_LOCKFILE", &self.netns);
        }
        let spawn_err = |source| CommandError::Spawn {
            cmdline: self.cmdline.clone(),
            source,
        };
        tracing::debug!(cmd = %self.cmdline, sandboxed, "running");
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let output = std::thread::scope(|s| {
            if let (Some(mut pipe), Some(input)) = (child.stdin.take(), self.spec.stdin.as_deref()) {
                // A separate writer avoids a pipe deadlock on large payloads.
                // A write error (child exited early) shows up in its status.
                s.spawn(move || {
                    let _ = pipe.write_all(input);
                });
            }
            child.wait_with_output()
        })
        .map_err(spawn_err)?;
        Ok(CommandOutput {
            cmdline: self.cmdline,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            sandboxed,
        })
    }
}

/// Why the sandbox could not be set up (the command then runs without it).
#[derive(Debug, thiserror::Error)]
enum SandboxError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("create {XTABLES_LOCK_PATH}: {0}")]
    LockFile(#[source] std::io::Error),
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
    move |source| SandboxError::Sys { step, source }
}

/// Private mount namespace for the calling (throw-away) thread, plus masks.
fn setup_sandbox(netns: &Path, lock: XtablesLock) -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    let none: Option<&str> = None;
    // Keep our bind mounts from propagating back to the host: rprivate,
    // or rslave where private is refused.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .or_else(|_| mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none))
        .map_err(sys("remount / rprivate/rslave"))?;
    if lock == XtablesLock::BindMount {
        if !Path::new(XTABLES_LOCK_PATH).exists() {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(XTABLES_LOCK_PATH)
                .map_err(SandboxError::LockFile)?;
        }
        bind(netns, XTABLES_LOCK_PATH, "bind netns over /run/xtables.lock")?;
    }
    // A missing nsswitch.conf means glibc defaults (local files only).
    if Path::new(NSSWITCH_PATH).exists() {
        bind("/dev/null", NSSWITCH_PATH, "bind /dev/null over /etc/nsswitch.conf")?;
        mount(
            none,
            NSSWITCH_PATH,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            none,
        )
        .map_err(sys("remount /etc/nsswitch.conf read-only"))?;
    }
    Ok(())
}

fn bind<P: AsRef<Path> + ?Sized>(src: &P, dst: &str, step: &'static str) -> Result<(), SandboxError> {
    let none: Option<&str> = None;
    mount(Some(src.as_ref()), dst, none, MsFlags::MS_BIND, none).map_err(sys(step))
}

/// `exec.LookPath`-like search: the first executable regular file named
/// `program` in `search_path`. Names containing `/` are taken as paths.
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
    fn finds_binaries_only_in_the_search_path() {
        let dir = std::env::temp_dir().join(format!("icni-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find_in_path("sh", dir.as_os_str()), None);
        assert!(find_in_path("sh", OsStr::new("/nonexistent:/bin:/usr/bin")).is_some());
        assert!(find_in_path("/bin/sh", OsStr::new("")).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
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
