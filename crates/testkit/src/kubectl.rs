//! kubectl and helm against one kubeconfig.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// kubectl on `PATH` (ci/env puts the pinned kubectl 1.33 first).
pub fn kubectl_path() -> Option<PathBuf> {
    crate::on_path("kubectl")
}

/// helm on `PATH` (ci/env puts the pinned helm 4 first).
pub fn helm_path() -> Option<PathBuf> {
    crate::on_path("helm")
}

/// One of the two clients, bound to a kubeconfig, with its caches and
/// settings in a private directory so tests never touch `$HOME`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    helm: bool,
}

/// A finished run.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout, or a panic showing the command, its status and both outputs.
    pub fn ok(self) -> String {
        assert!(self.success(), "{self}");
        self.stdout
    }

    /// stderr, or a panic when the command unexpectedly succeeded.
    pub fn failed(self) -> String {
        assert!(!self.success(), "expected a failure: {self}");
        self.stderr
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} exited {}\nstdout:\n{}\nstderr:\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }
}

impl Kubectl {
    /// kubectl for `kubeconfig`, its cache under `home`; `None` after
    /// [`crate::skip`] when kubectl is not installed (a panic in CI).
    pub fn new(test: &str, kubeconfig: &Path, home: &Path) -> Option<Kubectl> {
        Self::found(test, "kubectl", kubectl_path(), kubeconfig, home, false)
    }

    /// helm for `kubeconfig`, its cache, config and data under `home`.
    pub fn helm(test: &str, kubeconfig: &Path, home: &Path) -> Option<Kubectl> {
        Self::found(test, "helm", helm_path(), kubeconfig, home, true)
    }

    fn found(
        test: &str,
        tool: &str,
        bin: Option<PathBuf>,
        kubeconfig: &Path,
        home: &Path,
        helm: bool,
    ) -> Option<Kubectl> {
        let Some(bin) = bin else {
            crate::skip(test, &format!("{tool} not found in PATH (ci/setup installs it)"));
            return None;
        };
        let home = home.join(format!(".{tool}"));
        std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("creating {}: {e}", home.display()));
        Some(Kubectl {
            bin,
            kubeconfig: kubeconfig.to_owned(),
            home,
            helm,
        })
    }

    /// The command, ready to run or spawn (`port-forward`, `logs -f`);
    /// async tests can turn it into `tokio::process::Command::from`.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if self.helm {
            for (var, dir) in [
                ("HELM_CACHE_HOME", "cache"),
                ("HELM_CONFIG_HOME", "config"),
                ("HELM_DATA_HOME", "data"),
            ] {
                cmd.env(var, self.home.join(dir));
            }
        } else {
            cmd.arg("--cache-dir").arg(self.home.join("cache"));
        }
        cmd.args(args.iter().map(AsRef::as_ref));
        cmd
    }

    /// Runs to completion with no stdin.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Runs to completion with `stdin` (e.g. `apply -f -`).
    pub fn run_with_stdin<S: AsRef<str>>(&self, args: &[S], stdin: Option<&[u8]>) -> Run {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A client that exits early closes the pipe; its status says why.
            let _ = pipe.write_all(input);
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.bin.display()));
        Run {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and returns stdout, panicking with the whole run on failure.
    pub fn ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        self.run(args).ok()
    }

    /// The `items` of the list `args` get (`-o json` is added), panicking
    /// with the command and its output when it fails or is not a list.
    pub fn items<S: AsRef<str>>(&self, args: &[S]) -> Vec<serde_json::Value> {
        let mut all: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        all.extend(["-o", "json"]);
        list_items(&all, &self.ok(&all))
    }
}

/// The `items` array of the JSON list `out` that `args` printed.
fn list_items(args: &[&str], out: &str) -> Vec<serde_json::Value> {
    let list: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"));
    match list {
        serde_json::Value::Object(mut list) => match list.remove("items") {
            Some(serde_json::Value::Array(items)) => items,
            _ => panic!("{args:?}: no items array:\n{out}"),
        },
        _ => panic!("{args:?}: not a list:\n{out}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_the_lists_objects() {
        let out = r#"{"kind": "List", "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}"#;
        let names: Vec<_> = list_items(&["get", "pods"], out)
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    #[should_panic(expected = "no items array")]
    fn an_object_that_is_no_list_is_refused() {
        list_items(&["get", "pod", "a"], r#"{"kind": "Pod"}"#);
    }

    #[test]
    fn runs_the_client_with_its_own_cache_and_reports_failures() {
        let home = crate::Scratch::new("kubectl-runner");
        let Some(kubectl) = Kubectl::new("kubectl_runner", &home.join("no-such-kubeconfig"), &home) else {
            return;
        };
        assert!(kubectl.ok(&["version", "--client"]).contains("Client Version"));
        let run = kubectl.run(&["get", "pods"]);
        let shown = run.to_string();
        assert!(!run.success());
        assert!(shown.contains("\"get\", \"pods\""), "{shown}");
        let Some(helm) = Kubectl::helm("helm_runner", &home.join("no-such-kubeconfig"), &home) else {
            return;
        };
        assert!(helm.ok(&["version", "--short"]).starts_with('v'));
        assert!(home.join(".helm").is_dir());
    }
}
