//! `istio-cni` as the container runtime runs it: the real [`Handler`] (pod
//! lookup through the agent's kubeconfig, programming through
//! [`crate::program`]) and the process entry point.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tracing_subscriber::filter::LevelFilter;

use super::add::{AddOutcome, FetchPolicy, PodApi, Programmer, cmd_add};
use super::config::NetConf;
use super::error::{CniError, Code};
use super::logsink::LogBuffer;
use super::result::CniResult;
use super::skel::{Handler, Request, dispatch, read_config};
use crate::api::node_cache::NodeCache;
use crate::api::{Client, Target};
use crate::capture::NodeEnv;
use crate::iptables::apply::{VersionCache, cache};
use crate::program::{Backend, ProgramError, ProgramOptions, Programmed, program_with};
use crate::redirect::Redirect;

/// Programs with the default options, remembering iptables versions in the
/// agent's run dir.
struct RealProgrammer {
    cache: VersionCache,
}

impl Programmer for RealProgrammer {
    fn program(&self, netns: &Path, redirect: &Redirect, backend: Backend) -> Result<Programmed, ProgramError> {
        let options = ProgramOptions {
            cache: self.cache.clone(),
            ..ProgramOptions::default()
        };
        program_with(netns, redirect, &NodeEnv::from_env(), backend, &options)
    }
}

/// The plugin behind the CNI protocol.
pub struct IstioCni {
    pub policy: FetchPolicy,
}

impl Handler for IstioCni {
    fn add(&mut self, request: &Request, conf: &NetConf, _prev: Option<&CniResult>) -> Result<(), CniError> {
        let timeout = self.policy.request_timeout;
        let api = || -> Result<Box<dyn PodApi>, CniError> {
            let target = Target::load(&conf.kubeconfig_path())
                .map_err(|e| CniError::new(Code::TryAgainLater, format!("cannot reach the Kubernetes API: {e}")))?;
            let client = Client::new(target, timeout).map_err(|e| {
                CniError::new(
                    Code::Internal,
                    format!("kubeconfig {}: {e}", conf.kubeconfig_path().display()),
                )
            })?;
            Ok(Box::new(client))
        };
        let programmer = RealProgrammer {
            cache: VersionCache::at(conf.agent_run_dir.join(cache::DIR_NAME)),
        };
        let cache = NodeCache::in_run_dir(&conf.agent_run_dir);
        let outcome = cmd_add(
            request,
            conf,
            &cache,
            &api,
            &programmer,
            self.policy,
            &std::thread::sleep,
        )?;
        let pod = request
            .k8s_args()
            .map(|a| format!("{}/{}", a.pod_namespace, a.pod_name))
            .unwrap_or_default();
        match outcome {
            AddOutcome::OwnAgentPod => tracing::info!(%pod, "looks like our own agent pod, skipping"),
            AddOutcome::NotKubernetesPod => tracing::info!("not a kubernetes pod, skipping"),
            AddOutcome::ExcludedNamespace(ns) => tracing::info!(%pod, "pod namespace {ns} excluded"),
            AddOutcome::Skipped(reason) => tracing::info!(%pod, "skipping: {reason}"),
            AddOutcome::Programmed { applied } => tracing::info!(%pod, applied, "traffic redirection programmed"),
        }
        Ok(())
    }

    /// Ready once the node agent has written the plugin's kubeconfig.
    fn status(&mut self, conf: &NetConf) -> Result<(), CniError> {
        let path = conf.kubeconfig_path();
        Target::load(&path).map(|_| ()).map_err(|e| {
            CniError::new(
                Code::NotAvailable,
                format!("the istio-cni node agent is not ready: {e}"),
            )
        })
    }

    fn is_own_netns(&self, netns: &str) -> bool {
        let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        matches!((id(netns), id("/proc/self/ns/net")), (Some(a), Some(b)) if a == b)
    }
}

/// Runs one CNI invocation from the process environment and stdin; returns
/// the exit code. Stdout carries exactly the reply document. The log records
/// in `logs` go to the agent's socket at the end, also after an error.
pub fn main(request: &Request, logs: &LogBuffer, set_level: &dyn Fn(LevelFilter)) -> i32 {
    let stdin = if request.command == super::skel::Command::Version {
        Vec::new()
    } else {
        match read_config(std::io::stdin().lock()) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!("{e}");
                print!("{}", e.to_json(super::version::CURRENT));
                return 1;
            }
        }
    };
    // Parsed once here for the log level and the log socket; dispatch
    // parses it again itself, reporting errors as the CNI reply.
    let conf = NetConf::parse(&stdin).ok();
    if let Some(level) = conf.as_ref().and_then(|c| c.log_level.as_deref()).and_then(log_level) {
        set_level(level);
    }
    let mut plugin = IstioCni {
        policy: FetchPolicy::default(),
    };
    let reply = dispatch(request, &stdin, &mut plugin);
    if reply.exit_code != 0 {
        tracing::error!("{}", reply.stdout.replace('\n', " "));
    }
    if let Some(conf) = &conf {
        let socket = conf.log_socket();
        if let Err(e) = logs.flush_to(&socket) {
            // Only stderr is left to say so; the reply is unaffected.
            eprintln!(
                "istio-cni: could not send logs to the node agent at {}: {e}",
                socket.display()
            );
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(reply.stdout.as_bytes());
    let _ = out.flush();
    reply.exit_code
}

/// Istio's level names for `plugin_log_level`; anything else keeps `info`.
fn log_level(name: &str) -> Option<LevelFilter> {
    match name.to_ascii_lowercase().as_str() {
        "none" => Some(LevelFilter::OFF),
        "error" => Some(LevelFilter::ERROR),
        "warn" | "warning" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        _ => None,
    }
}
