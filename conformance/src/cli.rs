//! The command line:
//!
//! ```text
//! istio-cni-conformance run [--cluster local|kind|existing] [--kubeconfig F] [--cni NAME]...
//!                           [--suite cni|install|lifecycle|scenarios|all] [--filter PATTERN]... [--jobs N]
//!                           [--junit FILE] [--report DIR] [--plugin PATH ...spec options]
//!                           [--chart DIR [--values FILE]... [--set K=V]... | --manifests FILE...]
//!                           [--image REF=DIR|EXECUTABLE]... [--agent-image REF]
//! istio-cni-conformance list [--suite ...] [--filter PATTERN]...
//! ```
//!
//! Exit 0 when nothing failed, 1 when something did (or the machine or
//! cluster could not be prepared), 2 for unusable arguments. `run --suite
//! cni --plugin P` keeps its historical output: one case line each, then
//! `N passed, N failed, N skipped`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use istio_cni_kind::backend::StartError;
use istio_cni_kind::backend::kind::{KindSpec, PrimaryCni};
use istio_cni_kind::backend::preflight;
use istio_cni_scenarios::catalog;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::system::{Source, System, SystemError};

use crate::options::{OptionsError, Primary, SuiteOptions, parse_config_extra, parse_versions};
use crate::progress::{Mode, Progress};
use crate::report::{html, junit, table};
use crate::results::{RunResults, Totals};
use crate::runner::{self, RunPlan, TargetEnv};
use crate::suites::{self, Planned, SuiteName};
use crate::{cases, prepare, userns};

/// Exit code for unusable arguments.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when a case failed.
pub const EXIT_FAILED: i32 = 1;

const RUN_HELP: &str = "\
Suites: `cni` the CNI-spec cases (`spec/*`, against --plugin); `install`
`platform/*` and every scenario with a name segment starting with `install`
or `uninstall`; `lifecycle` `upgrade/*`, `race/scale-out/*` and `race/job*`;
`scenarios` every scenario of the catalog; `all` both.
Default: `all`, or `cni` when --plugin is given (as before the runner).
`istio-cni-conformance list` prints the names --filter matches.

Output: live progress (a bar on a terminal, one line per finished item
otherwise), a results table, then `N passed, N failed, N skipped`. With
--suite cni: one line per case, `PASS  <case>`, `FAIL  <case>: <why>` or
`SKIP  <case>: <reason>`, then `N passed, N failed, N skipped`. Exit status 1
when something failed, 2 for bad arguments.

The spec cases and the embedded cluster need root; an ordinary user's run
re-executes itself in a user namespace (as ci/test does: Debian's uidmap and
an /etc/subuid range). Run from a checkout, it first runs ci/setup (the test
tools from Debian's packages) unless --no-setup. The spec suite's own state
(node and pod namespaces, bridge, IPAM, result cache) lives in a private
network namespace and a temporary directory, both removed at the end.

Checking istio-cni: for pods in a namespace listed in `exclude_namespaces`
istio-cni needs no Kubernetes API, so exclude the pods' namespace and point
its agent run dir at a scratch directory (the default for a plugin named
istio-cni):

  mkdir -p /tmp/istio-cni-run
  istio-cni-conformance run --suite cni --plugin target/debug/istio-cni \\
    --pod-namespace kube-system \\
    --config-extra '{\"exclude_namespaces\":[\"kube-system\"],\"cni_agent_run_dir\":\"/tmp/istio-cni-run\"}'

Checking Debian's plugins (they stop at 1.0.0, so 1.1.0 cases are skipped):

  istio-cni-conformance run --suite cni --plugin /usr/lib/cni/portmap

The system under test: scenarios deploy the project's manifests by default;
--chart DIR (with --values/--set) or --manifests FILE put another agent in
their place, and --image REF=DIR|EXECUTABLE gives the embedded cluster the
image a chart names (no registry, no Docker):

  istio-cni-conformance run --filter 'cni/ptp/*' --chart ./istio/manifests/charts/istio-cni \
    --set hub=docker.io/istio --set tag=1.28.0 --image docker.io/istio/install-cni:1.28.0=./agent-image

Scenarios needing a feature of the project's agent (e.g. the not-ready
taint) are skipped, saying so, on a foreign chart or manifest.

Scenarios on kind (docker and kind needed) with two primary CNIs, and on a
running cluster:

  istio-cni-conformance run --suite scenarios --cluster kind --cni kindnet --cni calico
  istio-cni-conformance run --suite scenarios --cluster existing --kubeconfig ~/.kube/config";

/// `istio-cni-conformance`.
#[derive(Debug, Parser)]
#[command(
    name = "istio-cni-conformance",
    version,
    about = "Conformance runner for istio-cni: the CNI-spec cases for any chained plugin, and the scenario matrix on embedded, kind or existing clusters"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run suites: the CNI-spec cases and the scenarios.
    #[command(after_help = RUN_HELP)]
    Run(Box<RunArgs>),
    /// Print every name, one per line, with a summary after a tab (all targets: `run --list` shows what one run covers).
    List(ListArgs),
}

/// Where scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ClusterKind {
    /// A fresh embedded cluster per scenario (namespaces on this machine).
    #[default]
    Local,
    /// kind clusters, one primary CNI per --cni (needs docker and kind).
    Kind,
    /// The running cluster of --kubeconfig.
    Existing,
}

/// Why `run`'s cluster or system-under-test arguments are unusable (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--kubeconfig goes with --cluster existing")]
    KubeconfigWithoutExisting,
    #[error("--cni goes with --cluster kind (the embedded cluster's CNI is each scenario's own)")]
    CniWithoutKind,
    #[error("--jobs must be at least 1")]
    NoJobs,
    #[error("--cluster existing needs --kubeconfig FILE")]
    NoKubeconfig,
    /// `reason` is the kind backend's (it names the CNI).
    #[error("--cni: {reason}")]
    Cni { reason: String },
    #[error("--chart and --manifests each name the system under test: give one of them")]
    ChartAndManifests,
    #[error("--values and --set are values of --chart DIR, and there is none")]
    ValuesWithoutChart,
    #[error(
        "--image adds to the embedded cluster's images; a {} cluster pulls them (--agent-image names the agent's)",
        format!("{cluster:?}").to_lowercase()
    )]
    ImageOffLocal { cluster: ClusterKind },
    #[error("--set {set:?}: expected KEY=VALUE")]
    BadSet { set: String },
    /// The system's inputs (the error names the flag and file).
    #[error(transparent)]
    System(#[from] SystemError),
}

/// Why a kind run cannot start (exit 1): its `--cni`, or what the kind
/// backend checks before it starts (tools, the Docker engine).
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Backend(#[from] StartError),
}

/// Writing `--junit` or `--report` failed (exit 1).
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct OutputError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The suite to run [default: all; cni when --plugin is given].
    #[arg(long, value_enum)]
    pub suite: Option<SuiteName>,
    /// Run only what matches: a substring of the name, `*` wildcards (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Where scenarios run.
    #[arg(long, value_enum, default_value_t = ClusterKind::Local)]
    pub cluster: ClusterKind,
    /// The cluster for --cluster existing.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// kind's primary CNI (repeatable: every scenario runs on each) [default: kindnet].
    #[arg(long, value_name = "NAME")]
    pub cni: Vec<String>,
    /// Scenarios run at once, each on its own cluster [default: CPUs]; kind
    /// and existing clusters take one scenario at a time.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// A scenario still running after this many seconds fails as timed out
    /// and the run goes on without it (its embedded cluster is torn down).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub scenario_timeout: u64,
    /// Write JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write an HTML report (DIR/index.html) with diagnostics and timelines.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Do not run the checkout's ci/setup first.
    #[arg(long)]
    pub no_setup: bool,
    /// The plugin binary under test (its file name becomes its `type`)
    /// [default: the istio-cni next to this runner].
    #[arg(long, value_name = "PATH")]
    pub plugin: Option<PathBuf>,
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
    /// Run only the spec cases whose name contains PATTERN (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub only: Vec<String>,
    /// List the selected names and exit without running them.
    #[arg(long)]
    pub list: bool,
    /// Where the primary plugins are [default: $CNI_PLUGINS_DIR, else /usr/lib/cni].
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// The system under test: a Helm chart directory, rendered with `helm
    /// template` (helm on PATH) for each scenario [default: the project's
    /// manifests, `istio-cni-agent manifest`].
    #[arg(long, value_name = "DIR", help_heading = "System under test")]
    pub chart: Option<PathBuf>,
    /// A values file for --chart (repeatable, in order).
    #[arg(long = "values", value_name = "FILE", help_heading = "System under test")]
    pub values: Vec<PathBuf>,
    /// A value for --chart in helm's --set syntax (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", help_heading = "System under test")]
    pub set: Vec<String>,
    /// The system under test: manifest files applied as they are (repeatable);
    /// scenarios that install with values of their own are skipped.
    #[arg(long, value_name = "FILE", help_heading = "System under test")]
    pub manifests: Vec<PathBuf>,
    /// An image of the embedded cluster: REF runs the executable, or from
    /// the image directory (repeatable; ahead of the runner's own images).
    #[arg(long, value_name = "REF=DIR|EXECUTABLE", help_heading = "System under test")]
    pub image: Vec<String>,
    /// The image the project's manifests run [default: the project's agent
    /// image as the cluster names it].
    #[arg(long, value_name = "REF", help_heading = "System under test")]
    pub agent_image: Option<String>,
}

/// `list`'s arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The suite to list.
    #[arg(long, value_enum, default_value_t = SuiteName::All)]
    pub suite: SuiteName,
    /// Only what matches: a substring of the name, `*` wildcards (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Vec<String>,
    /// Spec versions of the version-driven cases.
    #[arg(long, value_name = "LIST", default_value = "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0")]
    pub versions: String,
}

/// The `istio-cni` next to this runner (`target/<profile>/`).
pub fn default_plugin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let mut dir = exe.parent()?.to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            Some(dir.join("istio-cni"))
        })
        .unwrap_or_else(|| PathBuf::from("istio-cni"))
}

impl RunArgs {
    /// The suite options these arguments describe.
    pub fn options(&self) -> Result<SuiteOptions, OptionsError> {
        let plugin = self.plugin.clone().unwrap_or_else(default_plugin);
        let mut opts = SuiteOptions::new(&plugin);
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
        let is_istio_cni = plugin.file_name().is_some_and(|n| n == "istio-cni");
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
        if let Some(dir) = &self.plugins_dir {
            opts.plugins_dir = dir.clone();
        }
        opts.validate()?;
        Ok(opts)
    }
}

impl RunArgs {
    /// The suite: `--suite`, else `cni` with `--plugin` (every invocation
    /// before the runner had one), else `all`.
    pub fn suite(&self) -> SuiteName {
        self.suite.unwrap_or(if self.plugin.is_some() {
            SuiteName::Cni
        } else {
            SuiteName::All
        })
    }

    /// Checks the cluster arguments and returns the scenario targets'
    /// backends: one per `--cni` on kind.
    pub fn targets(&self) -> Result<Vec<(Option<String>, Target)>, ArgsError> {
        if self.cluster != ClusterKind::Existing && self.kubeconfig.is_some() {
            return Err(ArgsError::KubeconfigWithoutExisting);
        }
        if self.cluster != ClusterKind::Kind && !self.cni.is_empty() {
            return Err(ArgsError::CniWithoutKind);
        }
        if self.jobs == Some(0) {
            return Err(ArgsError::NoJobs);
        }
        match self.cluster {
            ClusterKind::Local => Ok(vec![(None, Target::Local)]),
            ClusterKind::Existing => match &self.kubeconfig {
                Some(kubeconfig) => Ok(vec![(
                    None,
                    Target::Existing {
                        kubeconfig: kubeconfig.clone(),
                    },
                )]),
                None => Err(ArgsError::NoKubeconfig),
            },
            ClusterKind::Kind => {
                let mut cnis: Vec<String> = Vec::new();
                for cni in &self.cni {
                    let parsed = parse_cni(cni)?;
                    let name = parsed.to_string();
                    if !cnis.contains(&name) {
                        cnis.push(name);
                    }
                }
                if cnis.is_empty() {
                    cnis.push(PrimaryCni::Kindnet.to_string());
                }
                let several = cnis.len() > 1;
                Ok(cnis
                    .into_iter()
                    .map(|cni| (several.then(|| cni.clone()), Target::Kind { cni }))
                    .collect())
            }
        }
    }

    /// The system under test the arguments describe, checked: one of
    /// --chart and --manifests, --values and --set with --chart only,
    /// --image on the embedded cluster only, every file there.
    pub fn system(&self) -> Result<System, ArgsError> {
        let source = match (&self.chart, self.manifests.is_empty()) {
            (Some(_), false) => return Err(ArgsError::ChartAndManifests),
            (Some(dir), true) => Source::Chart {
                dir: dir.clone(),
                values: self.values.clone(),
                set: self.set.clone(),
            },
            (None, _) if !self.values.is_empty() || !self.set.is_empty() => {
                return Err(ArgsError::ValuesWithoutChart);
            }
            (None, false) => Source::Manifests(self.manifests.clone()),
            (None, true) => Source::Project,
        };
        if !self.image.is_empty() && self.cluster != ClusterKind::Local {
            return Err(ArgsError::ImageOffLocal { cluster: self.cluster });
        }
        if let Some(set) = self.set.iter().find(|set| !set.contains('=')) {
            return Err(ArgsError::BadSet { set: set.clone() });
        }
        let system = System {
            source,
            images: self.image.clone(),
            agent_image: self.agent_image.clone(),
        };
        system.check()?;
        Ok(system)
    }

    /// Worker threads: `--jobs`, else the CPUs (at least 1).
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
            .max(1)
    }
}

/// `--cni NAME` as kind's primary CNI.
fn parse_cni(cni: &str) -> Result<PrimaryCni, ArgsError> {
    cni.parse().map_err(|reason| ArgsError::Cni { reason })
}

/// Runs the command line; returns the exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Run(args) => run_cmd(&args),
        Command::List(args) => list_cmd(&args),
    }
}

fn usage(e: impl std::fmt::Display) -> i32 {
    eprintln!("istio-cni-conformance: {e}");
    EXIT_USAGE
}

/// The exit status of a finished run.
pub fn exit_code(results: &RunResults) -> i32 {
    if results.success() { 0 } else { EXIT_FAILED }
}

fn list_cmd(args: &ListArgs) -> i32 {
    let mut opts = SuiteOptions::new("istio-cni");
    match parse_versions(&args.versions) {
        Ok(v) if !v.is_empty() => opts.versions = v,
        Ok(_) => return usage("no spec versions to list"),
        Err(e) => return usage(e),
    }
    let scenarios = if args.suite == SuiteName::Cni {
        Vec::new()
    } else {
        catalog::all()
    };
    let items = suites::plan(args.suite, &[], &opts, scenarios);
    if let Err(e) = check_filters(&args.filter, &items, &format!("suite {:?}", args.suite).to_lowercase()) {
        return usage(e);
    }
    let mut out = std::io::stdout().lock();
    for item in items.iter().filter(|i| suites::selected(&i.name(), &args.filter)) {
        let _ = writeln!(out, "{}\t{}", item.name(), item.summary());
    }
    0
}

/// Refuses a `--filter` pattern that keeps none of `items`, naming the
/// closest names (`scope` says which items were looked at).
fn check_filters(filters: &[String], items: &[Planned], scope: &str) -> Result<(), String> {
    let names: Vec<String> = items.iter().map(Planned::name).collect();
    match suites::unmatched_filter(filters, &names) {
        None => Ok(()),
        Some((pattern, near)) if near.is_empty() => {
            Err(format!("--filter {pattern:?} selects nothing: {scope} has no items"))
        }
        Some((pattern, near)) => Err(format!(
            "--filter {pattern:?} selects nothing in {scope}; the closest names: {} \
             (`istio-cni-conformance list` prints them all)",
            near.join(", ")
        )),
    }
}

fn run_cmd(args: &RunArgs) -> i32 {
    let mut opts = match args.options() {
        Ok(opts) => opts,
        Err(e) => return usage(e),
    };
    let suite = args.suite();
    let targets = match args.targets() {
        Ok(targets) => targets,
        Err(e) => return usage(e),
    };
    let system = match args.system() {
        Ok(system) => system,
        Err(e) => return usage(e),
    };
    if suite.has_spec() && !opts.only.is_empty() && cases::selected_names(&opts).is_empty() {
        return usage(format!("--only {:?} selects no case", opts.only));
    }
    let scenarios = if suite == SuiteName::Cni {
        Vec::new()
    } else {
        catalog::all()
    };
    let mut items = suites::plan(suite, &[], &opts, scenarios);
    // Real-cluster scenarios are planned on their targets only.
    items.retain(|item| match item {
        Planned::Scenario(s) => targets.iter().any(|(_, target)| s.runs_on(target)),
        Planned::Spec { .. } => true,
    });
    let scope = format!("suite {:?} on cluster {:?}", suite, args.cluster).to_lowercase();
    if let Err(e) = check_filters(&args.filter, &items, &scope) {
        return usage(e);
    }
    items.retain(|item| suites::selected(&item.name(), &args.filter));
    let legacy = suite == SuiteName::Cni;
    if args.list {
        let mut out = std::io::stdout().lock();
        for item in &items {
            let _ = match item {
                Planned::Spec { case } if legacy => writeln!(out, "{case}"),
                _ => writeln!(out, "{}\t{}", item.name(), item.summary()),
            };
        }
        return 0;
    }
    let has_spec = items.iter().any(|i| matches!(i, Planned::Spec { .. }));
    let has_scenarios = items.iter().any(|i| matches!(i, Planned::Scenario(_)));
    let local = args.cluster == ClusterKind::Local;
    // The spec cases and the embedded cluster use this machine.
    let uses_machine = has_spec || (has_scenarios && local);

    if has_scenarios && args.cluster == ClusterKind::Kind {
        for (_, target) in &targets {
            if let Target::Kind { cni } = target
                && let Err(e) = kind_preflight(cni)
            {
                eprintln!("istio-cni-conformance: {e}");
                return EXIT_FAILED;
            }
        }
    }
    if uses_machine && !args.no_setup && !userns::inside() {
        if let Err(e) = prepare::prepare() {
            eprintln!("istio-cni-conformance: {e}");
            return EXIT_FAILED;
        }
        if args.plugins_dir.is_none() {
            opts.plugins_dir = istio_cni_kind::node::plugins::default_plugins_dir();
        }
    }
    if has_scenarios && let Err(e) = system.check_tools() {
        eprintln!("istio-cni-conformance: {e}");
        return EXIT_FAILED;
    }
    // Binaries first (Env::new builds missing ones), then the namespace.
    let envs: Vec<TargetEnv> = if has_scenarios {
        targets
            .into_iter()
            .map(|(suffix, target)| TargetEnv {
                suffix,
                serial: !matches!(target, Target::Local),
                env: Env::new(target.clone())
                    .and_then(|env| env.with_system(system.clone()))
                    .map_err(Arc::new),
                target,
            })
            .collect()
    } else {
        Vec::new()
    };
    if uses_machine && local && userns::needed() {
        // Returns only when the namespace cannot be had: run as we are, and
        // let what needs root fail saying so.
        let why = userns::reexec();
        eprintln!("istio-cni-conformance: {why}; running without it");
    }

    let plan = RunPlan {
        items,
        spec: opts,
        targets: envs,
        jobs: args.jobs(),
        timeout: Duration::from_secs(args.scenario_timeout.max(1)),
    };
    let total = plan.names().len();
    let mode = if legacy {
        Mode::Cases
    } else if std::io::stdout().is_terminal() {
        Mode::Bar
    } else {
        Mode::Lines
    };
    let mut stdout = std::io::stdout().lock();
    let results = {
        let mut progress = Progress::new(&mut stdout, mode, total);
        runner::run(plan, &mut progress)
    };
    if !legacy {
        let _ = write!(stdout, "{}", table::render(&results));
    }
    let mut code = exit_code(&results);
    if let Err(e) = write_outputs(args, &results) {
        eprintln!("istio-cni-conformance: {e}");
        code = EXIT_FAILED;
    }
    let _ = writeln!(stdout, "{}", results.summary());
    let _ = stdout.flush();
    code
}

/// Fails fast, with the kind backend's message, when docker or kind is
/// missing or the Docker engine does not answer.
fn kind_preflight(cni: &str) -> Result<(), PreflightError> {
    let spec = KindSpec::new("istio-cni").with_cni(parse_cni(cni)?);
    preflight::preflight("kind", &spec.required_tools(), preflight::path_lookup).map_err(StartError::from)?;
    preflight::engine("kind", "docker").map_err(StartError::from)?;
    Ok(())
}

/// `--junit` and `--report`.
fn write_outputs(args: &RunArgs, results: &RunResults) -> Result<(), OutputError> {
    let writing = |path: &PathBuf| {
        let path = path.clone();
        move |source| OutputError { path, source }
    };
    if let Some(path) = &args.junit {
        junit::write(path, results).map_err(writing(path))?;
        eprintln!("JUnit XML: {}", path.display());
    }
    if let Some(dir) = &args.report {
        let system = args.system().map(|s| s.describe()).unwrap_or_default();
        let context = format!(
            "suite {:?}, cluster {:?}{}, {} job(s); spec cases against {}",
            args.suite(),
            args.cluster,
            if args.cni.is_empty() {
                String::new()
            } else {
                format!(" ({})", args.cni.join(", "))
            },
            args.jobs(),
            args.plugin.clone().unwrap_or_else(default_plugin).display()
        )
        .to_lowercase();
        let context = format!("{context}; system under test: {system}");
        let path = html::write(dir, results, &context).map_err(writing(dir))?;
        eprintln!("HTML report: {}", path.display());
    }
    Ok(())
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
        let Command::Run(args) = cli.command else { panic!("run") };
        let opts = args.options().unwrap();
        assert_eq!(opts.primary, Primary::Ptp);
        assert_eq!(opts.versions, ["0.4.0", "1.1.0"]);
        assert_eq!(opts.config_extra["exclude_namespaces"][0], "kube-system");
        assert_eq!(opts.pod_namespace, "kube-system");
        assert_eq!(opts.only, ["add/"]);
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["run", "--plugin", "p", "--primary", "macvlan"]).is_err());
        let cli = parse(&["run", "--plugin", "p", "--versions", "0.2.0"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert!(args.options().unwrap_err().to_string().contains("no chaining"));
        let cli = parse(&["run", "--plugin", "p", "--config-extra", r#"{"name":"x"}"#]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert!(args.options().unwrap_err().to_string().contains("\"name\""));
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Run(args) => *args,
            Command::List(_) => panic!("run"),
        }
    }

    #[test]
    fn the_suite_defaults_to_all_and_to_cni_with_a_plugin() {
        assert_eq!(run_args(&[]).suite(), SuiteName::All);
        assert_eq!(run_args(&["--plugin", "/x/p"]).suite(), SuiteName::Cni);
        assert_eq!(
            run_args(&["--plugin", "/x/p", "--suite", "all"]).suite(),
            SuiteName::All
        );
        assert_eq!(run_args(&["--suite", "install"]).suite(), SuiteName::Install);
        let opts = run_args(&[]).options().unwrap();
        assert!(opts.plugin.ends_with("istio-cni"), "the istio-cni next to the runner");
        assert_eq!(opts.pod_namespace, "kube-system", "istio-cni's profile");
    }

    #[test]
    fn cluster_arguments_become_targets() {
        let targets = run_args(&[]).targets().unwrap();
        assert!(matches!(targets.as_slice(), [(None, Target::Local)]));
        let targets = run_args(&["--cluster", "kind"]).targets().unwrap();
        assert!(matches!(targets.as_slice(), [(None, Target::Kind { cni })] if cni == "kindnet"));
        let targets = run_args(&[
            "--cluster",
            "kind",
            "--cni",
            "calico",
            "--cni",
            "Cilium",
            "--cni",
            "calico",
        ])
        .targets()
        .unwrap();
        let names: Vec<Option<String>> = targets.into_iter().map(|(suffix, _)| suffix).collect();
        assert_eq!(names, [Some("calico".to_owned()), Some("cilium".to_owned())]);
        let targets = run_args(&["--cluster", "existing", "--kubeconfig", "/k"])
            .targets()
            .unwrap();
        assert!(matches!(targets.as_slice(), [(None, Target::Existing { kubeconfig })] if kubeconfig.ends_with("k")));
    }

    #[test]
    fn unusable_cluster_arguments_are_refused() {
        for (args, needle) in [
            (&["--cluster", "existing"][..], "needs --kubeconfig"),
            (&["--kubeconfig", "/k"][..], "goes with --cluster existing"),
            (&["--cni", "calico"][..], "goes with --cluster kind"),
            (&["--cluster", "kind", "--cni", "weave"][..], "unknown primary CNI"),
            (&["--jobs", "0"][..], "at least 1"),
        ] {
            let err = run_args(args).targets().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert!(parse(&["run", "--cluster", "gke"]).is_err());
        assert!(parse(&["run", "--suite", "nope"]).is_err());
        assert!(run_args(&[]).jobs() >= 1);
        assert_eq!(run_args(&["--jobs", "3"]).jobs(), 3);
    }

    #[test]
    fn exit_codes() {
        use crate::results::ItemResult;
        use istio_cni_scenarios::scenario::Verdict;
        let mut results = RunResults::default();
        assert_eq!(exit_code(&results), 0, "nothing ran, nothing failed");
        results
            .items
            .push(ItemResult::new("a/b", Verdict::Skip("n/a".into()), Duration::ZERO));
        results
            .items
            .push(ItemResult::new("a/c", Verdict::Pass, Duration::ZERO));
        assert_eq!(exit_code(&results), 0);
        results
            .items
            .push(ItemResult::new("a/d", Verdict::Fail("x".into()), Duration::ZERO));
        assert_eq!(exit_code(&results), EXIT_FAILED);
        assert_eq!(usage("bad"), EXIT_USAGE);
        let err = parse(&["run", "--jobs", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE, "clap's usage errors exit 2 too");
    }
}
