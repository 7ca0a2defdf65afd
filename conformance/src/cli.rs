//! The command line: `istio-cni-conformance run --suite cni --plugin PATH ...`.
//! Exit 0 when no case failed, 1 when one did, 2 for unusable arguments.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::options::{Primary, Suite, SuiteOptions, parse_config_extra, parse_versions};
use crate::{cases, run_suite_with};

/// Exit code for unusable arguments.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when a case failed.
pub const EXIT_FAILED: i32 = 1;

const RUN_HELP: &str = "\
Output: one line per case, `PASS  <case>`, `FAIL  <case>: <why>` or
`SKIP  <case>: <reason>`, then `N passed, N failed, N skipped`. Exit status 1
when a case failed. Needs root (it creates network namespaces). The suite's
own state (node and pod namespaces, bridge, IPAM, result cache) lives in a
private network namespace and a temporary directory, both removed at the end.

Checking istio-cni: for pods in a namespace listed in `exclude_namespaces`
istio-cni needs no Kubernetes API, so exclude the pods' namespace and point
its agent run dir at a scratch directory:

  mkdir -p /tmp/istio-cni-run
  istio-cni-conformance run --suite cni --plugin target/debug/istio-cni \\
    --pod-namespace kube-system \\
    --config-extra '{\"exclude_namespaces\":[\"kube-system\"],\"cni_agent_run_dir\":\"/tmp/istio-cni-run\"}'

Checking Debian's plugins (they stop at 1.0.0, so 1.1.0 cases are skipped):

  istio-cni-conformance run --suite cni --plugin /usr/lib/cni/portmap";

/// `istio-cni-conformance`.
#[derive(Debug, Parser)]
#[command(
    name = "istio-cni-conformance",
    version,
    about = "Conformance suite for chained CNI plugins (CNI 1.1 contract, real network namespaces)"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a suite against a chained CNI plugin binary.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The suite to run.
    #[arg(long, value_enum, default_value_t = Suite::Cni)]
    pub suite: Suite,
    /// The plugin binary under test (its file name becomes its `type`).
    #[arg(long, value_name = "PATH")]
    pub plugin: PathBuf,
    /// The primary plugin run first in the chain (from --plugins-dir).
    #[arg(long, value_enum, default_value_t = Primary::Bridge)]
    pub primary: Primary,
    /// Spec versions for the version-driven cases, comma-separated.
    #[arg(long, value_name = "LIST", default_value = "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0")]
    pub versions: String,
    /// A JSON object merged into the plugin's entry of the network config.
    #[arg(long, value_name = "JSON")]
    pub config_extra: Option<String>,
    /// K8S_POD_NAMESPACE of the test pods (default: `default`, or
    /// `kube-system` under the istio-cni profile).
    #[arg(long, value_name = "NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Base of K8S_POD_NAME of the test pods (each gets `-<n>` appended).
    #[arg(long, value_name = "NAME", default_value = "conformance")]
    pub pod_name: String,
    /// How many ADDs the concurrency case runs at once.
    #[arg(long, value_name = "N", default_value_t = crate::options::DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Timeout of each plugin invocation, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    /// Run only the cases whose name contains PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,
    /// List the selected cases and exit without running them.
    #[arg(long)]
    pub list: bool,
    /// Where the primary plugins are.
    #[arg(long, value_name = "DIR", env = "CNI_PLUGINS_DIR", default_value = "/usr/lib/cni")]
    pub plugins_dir: PathBuf,
}

impl RunArgs {
    /// The suite options these arguments describe.
    pub fn options(&self) -> Result<SuiteOptions, String> {
        let mut opts = SuiteOptions::new(&self.plugin);
        opts.suite = self.suite;
        opts.primary = self.primary;
        opts.versions = parse_versions(&self.versions)?;
        if let Some(extra) = &self.config_extra {
            opts.config_extra = parse_config_extra(extra)?;
        }
        if let Some(ns) = &self.pod_namespace {
            opts.pod_namespace = ns.clone();
        }
        // istio-cni needs to know its pods are not meshed without an API
        // server: use the config Istio's installer writes (kube-system
        // excluded) and kube-system pods, unless told otherwise.
        let is_istio_cni = self.plugin.file_name().is_some_and(|n| n == "istio-cni");
        if is_istio_cni && self.config_extra.is_none() && self.pod_namespace.is_none() {
            let run_dir = std::env::temp_dir().join(format!("istio-cni-conformance-{}", std::process::id()));
            opts.config_extra = parse_config_extra(
                &serde_json::json!({"exclude_namespaces": ["kube-system"], "cni_agent_run_dir": run_dir}).to_string(),
            )?;
            opts.pod_namespace = "kube-system".to_owned();
        }
        opts.pod_name = self.pod_name.clone();
        opts.parallel = self.parallel;
        opts.timeout = Duration::from_secs(self.timeout.max(1));
        opts.only = self.only.clone();
        opts.plugins_dir = self.plugins_dir.clone();
        opts.validate()?;
        Ok(opts)
    }
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => run_cmd(&args),
    }
}

fn run_cmd(args: &RunArgs) -> i32 {
    let opts = match args.options() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("istio-cni-conformance: {e}");
            return EXIT_USAGE;
        }
    };
    let names = cases::selected_names(&opts);
    if names.is_empty() {
        eprintln!("istio-cni-conformance: --only {:?} selects no case", opts.only);
        return EXIT_USAGE;
    }
    let mut out = std::io::stdout().lock();
    if args.list {
        for name in names {
            let _ = writeln!(out, "{name}");
        }
        return 0;
    }
    let report = run_suite_with(&opts, |case| {
        let _ = writeln!(out, "{case}");
        let _ = out.flush();
    });
    let _ = writeln!(out, "{}", report.summary());
    let _ = out.flush();
    if report.success() { 0 } else { EXIT_FAILED }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("istio-cni-conformance").chain(args.iter().copied()))
    }

    #[test]
    fn arguments_become_options() {
        let cli = parse(&[
            "run",
            "--suite",
            "cni",
            "--plugin",
            "/x/istio-cni",
            "--primary",
            "ptp",
            "--versions",
            "1.1.0,0.4.0",
            "--config-extra",
            r#"{"exclude_namespaces":["kube-system"]}"#,
            "--pod-namespace",
            "kube-system",
            "--only",
            "add/",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        let opts = args.options().unwrap();
        assert_eq!(opts.primary, Primary::Ptp);
        assert_eq!(opts.versions, ["0.4.0", "1.1.0"]);
        assert_eq!(opts.config_extra["exclude_namespaces"][0], "kube-system");
        assert_eq!(opts.pod_namespace, "kube-system");
        assert_eq!(opts.only, ["add/"]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["run"]).is_err(), "--plugin is required");
        assert!(parse(&["run", "--plugin", "p", "--primary", "macvlan"]).is_err());
        let cli = parse(&["run", "--plugin", "p", "--versions", "0.2.0"]).unwrap();
        let Command::Run(args) = cli.command;
        assert!(args.options().unwrap_err().contains("no chaining"));
        let cli = parse(&["run", "--plugin", "p", "--config-extra", r#"{"name":"x"}"#]).unwrap();
        let Command::Run(args) = cli.command;
        assert!(args.options().unwrap_err().contains("\"name\""));
    }
}
