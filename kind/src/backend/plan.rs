//! Plans: the ordered steps a backend runs, as data.
//!
//! Generating a plan is pure (no process is started, no file is read), so
//! every plan is snapshot-tested in every build; [`super::exec`] runs one.
//! A plan renders (`Display`) as a readable shell script: one comment line
//! with the step's purpose, then the command — what `--dry-run` prints.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An ordered list of steps with a title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One line saying what the plan does (rendered as the first comment).
    pub title: String,
    /// The steps, run in order; the first failure stops the plan.
    pub steps: Vec<Step>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A comment for the reader; running it does nothing.
    Note(String),
    /// Create a directory and its parents (`mkdir -p`).
    MakeDir(PathBuf),
    /// Copy files into a directory, keeping their names.
    Stage {
        /// The files to copy.
        files: Vec<PathBuf>,
        /// The directory they go to (it must exist).
        dir: PathBuf,
        /// Why.
        purpose: String,
    },
    /// Run a program.
    Command(CommandStep),
    /// Apply Kubernetes manifests through the API server (`kubectl apply`).
    ApplyManifest {
        /// The kubeconfig of the cluster.
        kubeconfig: PathBuf,
        /// Where the manifests come from.
        source: ManifestSource,
        /// Why.
        purpose: String,
    },
    /// Retry a probe until it succeeds or the timeout passes.
    WaitFor {
        /// The probe; success (exit 0) ends the wait.
        probe: Cmd,
        /// How long to keep retrying.
        timeout: Duration,
        /// What is awaited.
        purpose: String,
    },
}

/// A program and its arguments, with optional stdin and output redirection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program, looked up on `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// What it reads on stdin (nothing when `None`).
    pub stdin: Option<Stdin>,
    /// Write stdout and stderr to this file instead of capturing them.
    pub output_file: Option<PathBuf>,
}

/// The stdin of a [`Cmd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stdin {
    /// Literal text (rendered as a here-document).
    Text(String),
    /// The stdout of another command (rendered as a pipe).
    Output(Box<Cmd>),
}

/// A [`Step::Command`]: a command, why it runs, and when it is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStep {
    /// The command.
    pub cmd: Cmd,
    /// Why it runs.
    pub purpose: String,
    /// Skip the command when this probe's stdout has the given line.
    pub skip_if: Option<Probe>,
}

/// A condition checked at run time: does `cmd` print `line` (a whole line)?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The command whose stdout is searched.
    pub cmd: Cmd,
    /// The exact line looked for.
    pub line: String,
}

/// Where the manifests of a [`Step::ApplyManifest`] come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSource {
    /// A pinned URL (`kubectl apply -f <url>`).
    Url(String),
    /// YAML text (`kubectl apply -f -`).
    Inline(String),
    /// A Helm chart rendered client side (`helm template ... | kubectl apply -f -`).
    HelmTemplate {
        /// The release name.
        release: String,
        /// The chart, as a pinned `.tgz` URL.
        chart: String,
        /// The namespace the chart installs into.
        namespace: String,
        /// The Kubernetes version the chart is rendered for (`--kube-version`).
        kube_version: String,
        /// `--set key=value` pairs, in order.
        values: Vec<(String, String)>,
    },
}

impl Cmd {
    /// `program args...`.
    pub fn new<I, S>(program: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            output_file: None,
        }
    }

    /// The same command reading `text` on stdin.
    pub fn stdin_text(mut self, text: impl Into<String>) -> Cmd {
        self.stdin = Some(Stdin::Text(text.into()));
        self
    }

    /// The same command reading `from`'s stdout.
    pub fn stdin_from(mut self, from: Cmd) -> Cmd {
        self.stdin = Some(Stdin::Output(Box::new(from)));
        self
    }

    /// The same command writing stdout and stderr to `path`.
    pub fn output_to(mut self, path: impl Into<PathBuf>) -> Cmd {
        self.output_file = Some(path.into());
        self
    }

    /// A step running this command.
    pub fn step(self, purpose: impl Into<String>) -> Step {
        Step::Command(CommandStep {
            cmd: self,
            purpose: purpose.into(),
            skip_if: None,
        })
    }

    /// A step running this command unless `probe` prints `line`.
    pub fn step_unless(self, purpose: impl Into<String>, probe: Cmd, line: impl Into<String>) -> Step {
        Step::Command(CommandStep {
            cmd: self,
            purpose: purpose.into(),
            skip_if: Some(Probe {
                cmd: probe,
                line: line.into(),
            }),
        })
    }
}

impl ManifestSource {
    /// The `kubectl apply` command for these manifests.
    pub fn apply_command(&self, kubeconfig: &Path) -> Cmd {
        let kubectl = |file: &str| Cmd::new("kubectl", ["--kubeconfig", &path_arg(kubeconfig), "apply", "-f", file]);
        match self {
            ManifestSource::Url(url) => kubectl(url),
            ManifestSource::Inline(yaml) => kubectl("-").stdin_text(yaml.clone()),
            ManifestSource::HelmTemplate {
                release,
                chart,
                namespace,
                kube_version,
                values,
            } => {
                let mut args = vec![
                    "template".to_string(),
                    release.clone(),
                    chart.clone(),
                    "--namespace".to_string(),
                    namespace.clone(),
                    "--kube-version".to_string(),
                    kube_version.clone(),
                ];
                for (key, value) in values {
                    args.push("--set".to_string());
                    args.push(format!("{key}={value}"));
                }
                kubectl("-").stdin_from(Cmd::new("helm", args))
            }
        }
    }
}

/// A path as a command argument (lossy for non-UTF-8 paths).
pub fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `kubectl --kubeconfig <kubeconfig> <args>`.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Cmd {
    let path = path_arg(kubeconfig);
    let mut all = vec!["--kubeconfig", path.as_str()];
    all.extend_from_slice(args);
    Cmd::new("kubectl", all)
}

/// The first steps of every plan that starts nodes in Docker: a note of
/// the tools checked before anything runs, then whether the engine answers.
pub fn docker_preamble(tools: &[super::preflight::Tool]) -> Vec<Step> {
    vec![
        tools_note(tools),
        Cmd::new("docker", ["info", "--format", "{{.ServerVersion}}"]).step("the Docker engine answers"),
    ]
}

/// A note of the tools preflight checks on `PATH` before any step.
pub fn tools_note(tools: &[super::preflight::Tool]) -> Step {
    let programs: Vec<&str> = tools.iter().map(|tool| tool.program()).collect();
    Step::Note(format!("preflight (before any step): {} on PATH", programs.join(", ")))
}

/// Waits until every node is Ready, then until cluster DNS has rolled out
/// (pod networking works): the end of every cluster bring-up.
pub fn ready_steps(kubeconfig: &Path, timeout: Duration, nodes_purpose: String) -> Vec<Step> {
    vec![
        Step::WaitFor {
            probe: kubectl(
                kubeconfig,
                &["wait", "--for=condition=Ready", "nodes", "--all", "--timeout=30s"],
            ),
            timeout,
            purpose: nodes_purpose,
        },
        Step::WaitFor {
            probe: kubectl(
                kubeconfig,
                &[
                    "-n",
                    "kube-system",
                    "rollout",
                    "status",
                    "deployment/coredns",
                    "--timeout=30s",
                ],
            ),
            timeout,
            purpose: "cluster DNS up (pod networking works)".to_string(),
        },
    ]
}

impl Step {
    /// The comment line of the step (its purpose), if it has one.
    pub fn purpose(&self) -> Option<&str> {
        match self {
            Step::Note(_) | Step::MakeDir(_) => None,
            Step::Stage { purpose, .. } | Step::ApplyManifest { purpose, .. } | Step::WaitFor { purpose, .. } => {
                Some(purpose)
            }
            Step::Command(step) => Some(&step.purpose),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# {}", self.title)?;
        for step in &self.steps {
            if let Some(purpose) = step.purpose() {
                writeln!(f, "# {purpose}")?;
            }
            writeln!(f, "{step}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Note(text) => write!(f, "# {text}"),
            Step::MakeDir(path) => write!(f, "mkdir -p {}", quote(&path_arg(path))),
            Step::Stage { files, dir, .. } => {
                f.write_str("cp")?;
                for file in files {
                    write!(f, " {}", quote(&path_arg(file)))?;
                }
                write!(f, " {}/", quote(&path_arg(dir)))
            }
            Step::Command(step) => match &step.skip_if {
                None => write!(f, "{}", step.cmd),
                Some(probe) => {
                    write!(f, "{} | grep -qxF {} || {}", probe.cmd, quote(&probe.line), step.cmd)
                }
            },
            Step::ApplyManifest { kubeconfig, source, .. } => write!(f, "{}", source.apply_command(kubeconfig)),
            Step::WaitFor { probe, timeout, .. } => {
                write!(f, "until {probe}; do sleep 2; done  # up to {}s", timeout.as_secs())
            }
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(Stdin::Output(from)) = &self.stdin {
            write!(f, "{from} | ")?;
        }
        f.write_str(&quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", quote(arg))?;
        }
        if let Some(path) = &self.output_file {
            write!(f, " > {} 2>&1", quote(&path_arg(path)))?;
        }
        if let Some(Stdin::Text(text)) = &self.stdin {
            write!(f, " <<'EOF'\n{}", text)?;
            if !text.ends_with('\n') {
                f.write_str("\n")?;
            }
            f.write_str("EOF")?;
        }
        Ok(())
    }
}

/// Quote a word for a POSIX shell when it needs it.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@,+%^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}
