//! Running external commands (mostly `ip`) and reporting failures with the
//! command line, the namespace and stderr.

use std::process::{Command, Output, Stdio};

/// A command that could not be started or exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("`{cmdline}`{} {problem}{}", context_suffix(.context), stderr_suffix(.stderr))]
pub struct CommandError {
    /// The command line, space-joined.
    pub cmdline: String,
    /// Where it ran (e.g. `in netns /x/y`), possibly empty.
    pub context: String,
    /// `failed to start: ...` or `exited with status N`.
    pub problem: String,
    /// Its stderr, trimmed.
    pub stderr: String,
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" ({context})")
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The command line of `cmd` for messages: program and arguments, with
/// arguments containing whitespace quoted.
pub fn cmdline(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(char::is_whitespace) {
                format!("{s:?}")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion (stdin from `/dev/null`) and returns its output
/// when it exits 0; otherwise an error naming the command, `context` and
/// stderr.
pub fn run_checked(cmd: &mut Command, context: &str) -> Result<Output, CommandError> {
    let line = cmdline(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| CommandError {
            cmdline: line.clone(),
            context: context.to_owned(),
            problem: format!("failed to start: {e}"),
            stderr: String::new(),
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(CommandError {
            cmdline: line,
            context: context.to_owned(),
            problem: format!("exited with {}", output.status),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_context_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = run_checked(&mut cmd, "in netns /x").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`sh -c \"echo oops >&2; exit 3\"`"), "{text}");
        assert!(text.contains("in netns /x"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with(": oops"), "{text}");
    }

    #[test]
    fn missing_program_is_reported() {
        let err = run_checked(&mut Command::new("/nonexistent/prog"), "").unwrap_err();
        assert!(err.problem.starts_with("failed to start"), "{err}");
        assert!(!err.to_string().contains("()"), "{err}");
    }

    #[test]
    fn success_returns_stdout() {
        let out = run_checked(Command::new("echo").arg("hi"), "").unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
