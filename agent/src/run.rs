//! The agent process (docs/agent.md#process): metrics, log socket and health
//! servers; the repair controller; the install/watch loop; cleanup when a
//! signal arrives or the loop fails.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::{InstallSettings, Settings};
use crate::install::Installer;
use crate::metrics::Metrics;
use crate::server::logsock::LogSocket;
use crate::server::pods::PodSocket;
use crate::server::{self, Readiness};
use crate::shutdown::Shutdown;
use crate::watch::{WatchError, WatchLoop};

/// Why the agent exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Server(std::io::Error),
    #[error("repair controller: {0}")]
    Repair(String),
    #[error("{0}")]
    Watch(#[from] WatchError),
    #[error("{0}")]
    Config(String),
}

/// What ended the agent's wait: a termination request, or the install loop
/// itself (an error; `None` when its thread died).
enum End {
    Requested(Signal),
    Loop(Option<Box<LoopResult>>),
}

type LoopResult = (Installer, Result<(), WatchError>);

/// Runs the agent until `shutdown` is requested (Ok) or a fatal error.
/// Cleanup runs in both cases, also when the request came before anything
/// was installed (a predecessor's entry is ours to remove too); a cleanup
/// failure is logged and does not change the result, as in Istio. Every wait
/// here (the first install, the repair controller's start, the steady
/// state) ends on the request.
pub async fn run(settings: Settings, mut shutdown: Shutdown) -> Result<(), RunError> {
    check_node_features(&settings).map_err(RunError::Config)?;
    let metrics = Metrics::new();
    let ready = Readiness::default();
    log_settings(&settings);

    let mut servers = Vec::new();
    if settings.monitoring_port > 0 {
        let port = u16::try_from(settings.monitoring_port).unwrap_or(15014);
        // As Istio: a metrics listen failure is not fatal.
        match server::serve_tcp(
            settings.listen_address,
            port,
            server::metrics_router(metrics.clone()),
            "metrics",
        )
        .await
        {
            Ok((_, task)) => servers.push(task),
            Err(e) => tracing::error!(target: "cni-agent", "{e}"),
        }
    }
    let log_socket = LogSocket::bind(&settings.install.cni_agent_run_dir)
        .await
        .map_err(RunError::Server)?;
    let pod_socket = start_pod_cache(&settings).await;
    let (_, task) = server::serve_tcp(
        settings.listen_address,
        settings.health_port,
        server::health_router(ready.clone()),
        "health",
    )
    .await
    .map_err(RunError::Server)?;
    servers.push(task);

    let installer = Installer::new(
        settings.install.clone(),
        plugin_log_level(&settings.log.output_level),
        metrics.clone(),
    );
    let watch = WatchLoop::new(
        installer,
        settings.install.mounted_cni_net_dir.clone(),
        ready.clone(),
        metrics.clone(),
    );
    let stop = watch.stop_handle();
    // A request that came before the loop starts stops it before its first pass.
    if shutdown.requested().is_some() {
        stop.stop();
    }
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("install-watch".into())
        .spawn(move || {
            let _ = done_tx.send(watch.run());
        })
        .map_err(RunError::Server)?;

    // The repair controller starts once the plugin is installed (Istio starts
    // it first): deleting or labelling a broken pod before the plugin is in
    // the chain only makes its replacement race again.
    let mut repair = None;
    let mut taint = None;
    let mut end = tokio::select! {
        signal = shutdown.wait() => Some(End::Requested(signal)),
        r = &mut done_rx => Some(End::Loop(r.ok().map(Box::new))),
        () = installed(&ready) => None,
    };
    if end.is_none() && settings.node.not_ready_taint_enabled {
        // Readiness just turned true: the plugin is in the chain, so pods
        // may come. Runs on its own, retrying, until done or SIGTERM.
        taint = Some(tokio::spawn(crate::taint::remove_own_taint(
            settings.install.clone(),
            settings.node.node_name.clone(),
            settings.node.not_ready_taint_name.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    if end.is_none() {
        let started = tokio::select! {
            signal = shutdown.wait() => Err(End::Requested(signal)),
            r = &mut done_rx => Err(End::Loop(r.ok().map(Box::new))),
            started = start_repair(&settings, &metrics) => Ok(started),
        };
        match started {
            Err(e) => end = Some(e),
            Ok(Ok(controller)) => repair = controller,
            Ok(Err(e)) => {
                // Fatal, as in Istio; but the plugin is installed by now, so
                // take it out again before exiting.
                stop.stop();
                if let Some(task) = taint.take() {
                    task.abort();
                }
                if let Ok((mut installer, _)) = done_rx.await
                    && let Err(c) = installer.cleanup()
                {
                    tracing::error!(target: "cni-agent", "cleanup failed: {c}");
                }
                log_socket.close();
                if let Some(pods) = pod_socket {
                    pods.close();
                }
                return Err(e);
            }
        }
    }
    let end = match end {
        Some(end) => end,
        None => tokio::select! {
            signal = shutdown.wait() => End::Requested(signal),
            r = &mut done_rx => End::Loop(r.ok().map(Box::new)),
        },
    };
    let mut keep = false;
    let (mut installer, result) = match end {
        End::Loop(Some(r)) => *r,
        End::Loop(None) => return Err(RunError::Repair("install loop thread died".into())),
        End::Requested(signal) => {
            stop.stop();
            let decision = crate::upgrade::on_termination(&settings).await;
            keep = decision.keeps();
            if keep {
                tracing::info!(target: "cni-agent", "{signal}: leaving the plugin installed for the next agent: {}", decision.reason());
            } else if settings.node.safe_upgrade_enabled {
                tracing::info!(target: "cni-agent", "{signal}: cleaning up: {}", decision.reason());
            } else {
                tracing::info!(target: "cni-agent", "{signal}: cleaning up");
            }
            match done_rx.await {
                Ok(r) => r,
                Err(_) => return Err(RunError::Repair("install loop thread died".into())),
            }
        }
    };
    ready.set(false);
    if let Some(task) = taint {
        task.abort();
    }
    if keep {
        tracing::info!(target: "cni-agent", "safe upgrade: plugin binary, kubeconfig and CNI config entry left in place");
    } else {
        match installer.cleanup() {
            Ok(()) => tracing::info!(target: "cni-agent", "cleanup done"),
            Err(e) => tracing::error!(target: "cni-agent", "cleanup failed: {e}"),
        }
    }
    if let Some(repair) = repair {
        repair.shutdown().await;
    }
    log_socket.close();
    if let Some(pods) = pod_socket {
        pods.close();
    }
    for task in servers {
        task.abort();
    }
    result.map_err(RunError::from)
}

/// The opt-in features need the downward API's names: refused at start,
/// naming the setting, rather than failing at the moment they act.
fn check_node_features(settings: &Settings) -> Result<(), String> {
    let n = &settings.node;
    if n.not_ready_taint_enabled && n.node_name.is_empty() {
        return Err("NOT_READY_TAINT_ENABLED=true needs NODE_NAME (the downward API's spec.nodeName)".into());
    }
    if n.safe_upgrade_enabled && (n.pod_name.is_empty() || settings.install.pod_namespace.is_empty()) {
        return Err(
            "SAFE_UPGRADE_ENABLED=true needs POD_NAME and POD_NAMESPACE (the downward API's metadata.name and metadata.namespace)"
                .into(),
        );
    }
    Ok(())
}

/// The pod cache the plugin asks first, when the agent knows its node and
/// can reach the API server. Without it every ADD asks the API server, as
/// Istio's plugin does, so a failure here is logged and not fatal.
async fn start_pod_cache(settings: &Settings) -> Option<PodSocket> {
    let node = [&settings.node.node_name, &settings.repair.repair_node_name]
        .into_iter()
        .find(|n| !n.is_empty())?;
    let client = match kube_client(&settings.install) {
        Ok(client) => client,
        Err(e) => {
            tracing::info!(target: "cni-agent", "pod cache off, the plugin asks the API server: {e}");
            return None;
        }
    };
    match PodSocket::start(&settings.install.cni_agent_run_dir, client, node).await {
        Ok(socket) => {
            tracing::info!(target: "cni-agent", "pod cache for node {node} on {}", socket.path().display());
            Some(socket)
        }
        Err(e) => {
            tracing::warn!(target: "cni-agent", "pod cache off, the plugin asks the API server: {e}");
            None
        }
    }
}

/// Resolves once the install loop reports ready.
async fn installed(ready: &Readiness) {
    while !ready.get() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the repair controller for the configured mode, if any.
async fn start_repair(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<Option<crate::repair::RepairController>, RunError> {
    let controller = match settings.repair.mode() {
        None => {
            tracing::info!(target: "cni-agent", "repair controller disabled");
            None
        }
        Some(mode) => {
            tracing::info!(target: "cni-agent", "starting CNI sidecar repair controller (mode {})", mode.as_str());
            let client = kube_client(&settings.install).map_err(RunError::Repair)?;
            let controller = crate::repair::start(
                client,
                settings.repair.clone(),
                settings.install.native_nftables,
                metrics.clone(),
            )
            .await
            .map_err(|e| RunError::Repair(e.to_string()))?;
            Some(controller)
        }
    };
    Ok(controller)
}

/// The repair controller's client: the API server from KUBERNETES_SERVICE_*,
/// the CA and a token file from the service-account dir (re-read on rotation).
pub fn kube_client(install: &InstallSettings) -> Result<kube::Client, String> {
    let url = install.api_server_url()?;
    let cluster_url = url.parse().map_err(|e| format!("API server URL {url:?}: {e}"))?;
    let mut config = kube::Config::new(cluster_url);
    if install.skip_tls_verify {
        config.accept_invalid_certs = true;
    } else {
        let ca_file = install.ca_file();
        let pem = istio_cni::bounded::read(&ca_file, istio_cni::bounded::Limits::CONFIG)
            .map_err(|e| format!("reading CA {e}"))?;
        config.root_cert = Some(pem_certificates(&pem).map_err(|e| format!("CA {}: {e}", ca_file.display()))?);
    }
    let token_file = install.service_account_dir.join("token");
    // kube re-reads the file itself; this proves at start that it is a
    // regular file of sane size (never logged: only the error is used).
    istio_cni::bounded::read(&token_file, istio_cni::bounded::Limits::CONFIG)
        .map_err(|e| format!("service-account token {e}"))?;
    config.auth_info.token_file = Some(token_file.to_string_lossy().into_owned());
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).map_err(|e| format!("kube client: {e}"))
}

/// DER certificates from a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        match line {
            "-----BEGIN CERTIFICATE-----" => body = Some(String::new()),
            "-----END CERTIFICATE-----" => {
                let b64 = body.take().ok_or("END without BEGIN")?;
                let der = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("bad base64: {e}"))?;
                certs.push(der);
            }
            other => {
                if let Some(b) = body.as_mut() {
                    b.push_str(other);
                }
            }
        }
    }
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// `plugin_log_level`: the `cni-plugin` scope's level after Istio's scope
/// rules (`info` unless `cni-plugin:<level>` or `all:<level>` is given).
pub fn plugin_log_level(spec: &str) -> String {
    crate::logging::ScopeLevels::parse(spec)
        .map(|l| l.plugin.as_str())
        .unwrap_or("info")
        .to_string()
}

fn log_settings(settings: &Settings) {
    tracing::info!(target: "cni-agent", "istio-cni-agent {}", env!("CARGO_PKG_VERSION"));
    tracing::info!(target: "cni-agent", "install settings: {:?}", settings.install);
    tracing::info!(target: "cni-agent", "repair settings: {:?}", settings.repair);
    tracing::info!(target: "cni-agent", "node features: {:?}", settings.node);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_level_is_the_cni_plugin_scopes() {
        assert_eq!(plugin_log_level("info"), "info");
        // A bare level is the default scope's, not the plugin's (Istio's rule).
        assert_eq!(plugin_log_level("debug"), "info");
        assert_eq!(plugin_log_level("cni-plugin:debug,cni-agent:warn"), "debug");
        assert_eq!(plugin_log_level("cni-agent:warn"), "info");
        assert_eq!(plugin_log_level("all:warn"), "warn");
    }

    #[test]
    fn features_refuse_to_start_without_their_downward_api_names() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).unwrap();
        assert!(check_node_features(&parse(&[]).settings).is_ok());
        let err = check_node_features(&parse(&["--not-ready-taint-enabled"]).settings).unwrap_err();
        assert!(err.contains("NODE_NAME"), "{err}");
        assert!(check_node_features(&parse(&["--not-ready-taint-enabled", "--node-name=n1"]).settings).is_ok());
        let err = check_node_features(&parse(&["--safe-upgrade-enabled", "--pod-namespace=ns"]).settings).unwrap_err();
        assert!(err.contains("POD_NAME"), "{err}");
        let ok = parse(&["--safe-upgrade-enabled", "--pod-namespace=ns", "--pod-name=p"]);
        assert!(check_node_features(&ok.settings).is_ok());
    }

    #[tokio::test]
    async fn safe_upgrade_off_decides_to_clean_without_asking_the_api() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        // No API server is configured: a lookup would fail with another reason.
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        let decision = crate::upgrade::on_termination(&cli.settings).await;
        assert_eq!(
            decision,
            crate::upgrade::Decision::Clean("safe upgrade is disabled".into())
        );
        let cli =
            Cli::try_parse_from(["agent", "--safe-upgrade-enabled", "--pod-name=p", "--pod-namespace=ns"]).unwrap();
        let decision = crate::upgrade::on_termination(&cli.settings).await;
        assert!(!decision.keeps());
        assert!(decision.reason().contains("cleaning up to be safe"), "{decision:?}");
    }

    #[test]
    fn pem_bundle_decodes() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem.as_bytes()).unwrap(), vec![vec![0, 1, 2, 3]]);
        assert!(pem_certificates(b"nothing").is_err());
    }
}
