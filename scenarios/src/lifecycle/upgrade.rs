//! `upgrade/...`: the agent's DaemonSet upgraded under load.
//!
//! * `upgrade/in-place/<mode>` (repairPods, deletePods, labelPods): the
//!   DaemonSet rolled by a pod-template change while a meshed Deployment
//!   scales up and a bare meshed pod is created every 100 ms. In sidecar
//!   mode the old agent's SIGTERM cleanup removes the plugin before the new
//!   one installs it, so pods created in that window race. End state: every
//!   meshed pod Running has rules in its netns, and each raced pod is where
//!   the mode leaves it; the notes count raced and repaired pods.
//! * `upgrade/in-place/safe-upgrade`: the same with `safeUpgrade.enabled`
//!   (the old agent leaves the plugin in place during a roll): no pod races.
//!   Skipped, naming the key, when the agent under test lacks the value.
//! * `upgrade/independent`: the CNI upgraded on its own, the control plane
//!   untouched: `helm upgrade` of `agent/chart` with changed values when
//!   helm is on PATH (embedded cluster), else the manifests re-applied with
//!   them; the record says which. Pods injected by Istio 1.28, 1.29 and 1.30
//!   (classic and native sidecars) keep running with their rules, and new
//!   ones start with rules first time.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use istio_cni_kind::cluster::Cluster;

use super::watch::watching;
use super::{Mode, Tally, check_end_state, create_deployment, manifest, meshed_deployment, scale_deployment, settle};
use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::fixtures::{self, POD_VERSIONS};
use crate::race::{
    app_restarts, create, get, has_rules, netns_rules, pod_summary, race_cluster, running, validation_exits, wait,
    wait_pod,
};
use crate::scenario::{Record, Scenario, Step, Stop};

/// The agent's chart in this repository.
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/chart");
/// The meshed Deployment scaled through the roll.
const WEB: &str = "web";
/// At most this many bare pods and Deployment replicas during a roll.
const MAX_BARE: usize = 40;
const MAX_REPLICAS: i32 = 8;

pub fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for mode in [Mode::RepairPods, Mode::DeletePods, Mode::LabelPods] {
        out.push(Scenario::new(
            format!("upgrade/in-place/{}", mode.name()),
            format!(
                "the agent's DaemonSet rolled while meshed pods are created: every Running pod has rules, raced pods end as {} leaves them",
                mode.name()
            ),
            move |env, rec| in_place(env, rec, mode, false),
        ));
    }
    out.push(Scenario::new(
        "upgrade/in-place/safe-upgrade",
        "with safeUpgrade.enabled the plugin stays installed through the roll: no pod created meanwhile races",
        |env, rec| in_place(env, rec, Mode::RepairPods, true),
    ));
    out.push(Scenario::new(
        "upgrade/independent",
        "the CNI upgraded on its own (helm upgrade or manifests): Istio 1.28-1.30 injected pods keep their rules, new ones start with rules",
        independent,
    ));
    out
}

fn in_place(env: &Env, rec: &mut Record, mode: Mode, safe: bool) -> Step {
    let mut set = mode.values().to_vec();
    if safe {
        set.push("safeUpgrade.enabled=true");
    }
    let from = manifest(env, &[set.as_slice(), &["podAnnotations.upgrade=from"]].concat(), false)?;
    let to = manifest(env, &[set.as_slice(), &["podAnnotations.upgrade=to"]].concat(), false)?;
    let label = if safe {
        "upgrade/in-place/safe-upgrade".to_string()
    } else {
        format!("upgrade/in-place/{}", mode.name())
    };
    let cluster = race_cluster(env, rec)?;
    let agent = DaemonSetAgent::deploy(env, &cluster, &from.install, rec)?;
    create_deployment(&cluster, &meshed_deployment(WEB, 2, None)?)?;
    wait("the Deployment's 2 pods Running", Duration::from_secs(60), || {
        let pods = super::app_pods(&cluster)?;
        Ok((pods.len() == 2 && pods.iter().all(running)).then_some(()))
    })?;
    rec.mark("meshed Deployment web Running (2 replicas)");

    let mut rolled = None;
    let (outcome, seen) = watching(&cluster, &from.namespace, |_| {
        // Bare pods every 100 ms; the Deployment one replica up every
        // 500 ms; both capped so a slow roll on a loaded machine does not
        // bury the node (the window opens at the roll's start).
        let (agent, roll, created) = super::roll_under_load(env, &cluster, &to.install, rec, |stop| {
            let (mut bare, mut replicas) = (0, 2);
            while !stop.load(Ordering::SeqCst) && bare < MAX_BARE {
                create(&cluster, &super::meshed_pod(&format!("u-{bare}"), None)?)?;
                bare += 1;
                if bare % 5 == 0 && replicas < MAX_REPLICAS {
                    replicas += 1;
                    scale_deployment(&cluster, WEB, replicas)?;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((bare, replicas))
        });
        rolled = agent;
        let (bare, replicas) = roll.and(created)?;
        rec.mark(format!("load stopped: {bare} bare pods, web at {replicas} replicas"));
        let pods = settle(&cluster, rec, mode, Duration::from_secs(240))?;
        Ok::<_, Stop>((bare, replicas, pods))
    });
    seen.to_timeline(rec);
    let tally = Tally::of(&seen);
    rec.note(tally.line(&label));
    let result = outcome.and_then(|(bare, replicas, pods)| {
        rec.note(format!(
            "{label}: load during the roll: {bare} bare meshed pods created every 100 ms (at most {MAX_BARE}), Deployment web scaled 2 → {replicas}"
        ));
        check_end_state(&cluster, mode, &pods, &tally)?;
        tally.check_raced(mode, safe.then_some("safe upgrade"), "the roll")?;
        rec.mark("end state checked");
        Ok(())
    });
    match &rolled {
        Some(a) => a.diag(rec),
        None => agent.diag(rec),
    }
    rec.diag("pod events", crate::race::all_events(&cluster));
    result
}

// ---- independent upgrade ------------------------------------------------------

/// How the CNI is installed and upgraded.
enum Installer {
    /// helm with its own home directory (removed on drop).
    Helm { helm: testkit::Kubectl, home: PathBuf },
    /// The project's manifests applied through the API.
    Manifests,
}

impl Drop for Installer {
    fn drop(&mut self) {
        if let Installer::Helm { home, .. } = self {
            let _ = std::fs::remove_dir_all(home);
        }
    }
}

fn run_helm(helm: &testkit::Kubectl, args: &[&str]) -> Step {
    let out = helm
        .command(args)
        .output()
        .map_err(|e| Stop::Fail(format!("running helm {}: {e}", args.join(" "))))?;
    ensure!(
        out.status.success(),
        "helm {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn helm_installer(env: &Env, cluster: &Cluster) -> Result<Installer, Stop> {
    if !env.is_local() || testkit::on_path("helm").is_none() || !Path::new(CHART).is_dir() {
        return Ok(Installer::Manifests);
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let home = std::env::temp_dir().join(format!("istio-cni-upgrade-helm-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| Stop::Fail(format!("creating {}: {e}", home.display())))?;
    match testkit::Kubectl::helm("upgrade/independent", cluster.kubeconfig_path(), &home) {
        Some(helm) => Ok(Installer::Helm { helm, home }),
        None => {
            let _ = std::fs::remove_dir_all(&home);
            Ok(Installer::Manifests)
        }
    }
}

/// The injected pods of the skew window, classic and native, named `<shape>-1-28-<suffix>`.
fn injected(suffix: &str) -> Result<Vec<k8s_openapi::api::core::v1::Pod>, Stop> {
    let mut pods = Vec::new();
    for v in POD_VERSIONS {
        for shape in ["classic", "native"] {
            let mut pod = fixtures::pod(v, shape)?;
            pod.metadata.name = Some(format!("{shape}-{}-{suffix}", v.replace('.', "-")));
            pods.push(pod);
        }
    }
    Ok(pods)
}

/// Creates `pods` and checks each runs, validated first time, with rules.
fn start_injected(cluster: &Cluster, rec: &mut Record, pods: &[k8s_openapi::api::core::v1::Pod]) -> Step {
    for pod in pods {
        create(cluster, pod)?;
    }
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let p = wait_pod(cluster, &name, "Running", Duration::from_secs(60), running)?;
        ensure!(
            validation_exits(&p) == (Some(0), None, 0),
            "{name}: validation passed the first time: {}",
            pod_summary(&p)
        );
        ensure!(has_rules(&netns_rules(cluster, &name)?), "{name} has no rules");
    }
    rec.mark(format!("{} injected pods Running with rules", pods.len()));
    Ok(())
}

fn independent(env: &Env, rec: &mut Record) -> Step {
    let cluster = race_cluster(env, rec)?;
    let installer = helm_installer(env, &cluster)?;
    let upgrade_values = ["logging.level=debug", "podAnnotations.upgrade=independent"];
    let base = manifest(env, &[], false)?;
    let mut applied = None;
    match &installer {
        Installer::Helm { helm, .. } => {
            rec.note("upgrade/independent: installed and upgraded with helm (agent/chart)");
            run_helm(
                helm,
                &[
                    "install",
                    "istio-cni",
                    CHART,
                    "-n",
                    &base.namespace,
                    "--create-namespace",
                    // The embedded cluster's value (see `super::EMBEDDED_VALUES`).
                    "--set-string",
                    "env.ALLOW_SWITCH_TO_HOST_NS=false",
                    "--wait",
                    "--timeout",
                    "3m",
                ],
            )?;
            rec.mark("helm install: DaemonSet ready");
        }
        Installer::Manifests => {
            rec.note("upgrade/independent: helm not usable here, installed and upgraded by re-applying the manifests");
            applied = Some(DaemonSetAgent::deploy(env, &cluster, &base.install, rec)?);
        }
    }
    let result = (|| {
        let old = injected("old")?;
        start_injected(&cluster, rec, &old)?;
        let before: Vec<_> = old
            .iter()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                get(&cluster, &name).map(|p| (name, p.and_then(|p| p.metadata.uid)))
            })
            .collect::<Result<_, _>>()?;

        match &installer {
            Installer::Helm { helm, .. } => {
                let mut args = vec!["upgrade", "istio-cni", CHART, "-n", &base.namespace, "--reuse-values"];
                for v in upgrade_values {
                    args.extend(["--set", v]);
                }
                args.extend(["--wait", "--timeout", "3m"]);
                run_helm(helm, &args)?;
                rec.mark("helm upgrade: DaemonSet rolled");
            }
            Installer::Manifests => {
                let next = manifest(env, &upgrade_values, false)?;
                let again = DaemonSetAgent::apply(env, &cluster, &next.install, rec)?;
                let took = again.wait_rolled_out(Duration::from_secs(120))?;
                rec.mark(format!(
                    "manifests re-applied: DaemonSet rolled ({} ms)",
                    took.as_millis()
                ));
                applied = Some(again);
            }
        }
        let ready = wait("the upgraded agent Ready", Duration::from_secs(60), || {
            let pod = crate::race::agent_pod_on(&cluster, &base.namespace, crate::race::NODE)?;
            Ok(pod.filter(|p| {
                super::pod_ready(p)
                    && p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("upgrade"))
                        .is_some_and(|v| v == "independent")
            }))
        })?;
        rec.mark(format!(
            "upgraded agent {} Ready",
            ready.metadata.name.unwrap_or_default()
        ));

        for (name, uid) in &before {
            let p = get(&cluster, name)?.ok_or_else(|| Stop::Fail(format!("{name} is gone after the upgrade")))?;
            ensure!(&p.metadata.uid == uid, "{name} was replaced by the upgrade");
            ensure!(
                running(&p) && app_restarts(&p) == 0 && validation_exits(&p) == (Some(0), None, 0),
                "{name} after the upgrade: {}",
                pod_summary(&p)
            );
            ensure!(
                has_rules(&netns_rules(&cluster, name)?),
                "{name} lost its rules in the upgrade"
            );
        }
        rec.mark("pods from before the upgrade still Running with rules");
        start_injected(&cluster, rec, &injected("new")?)?;
        Ok(())
    })();
    match &applied {
        Some(a) => a.diag(rec),
        None => {
            rec.diag(
                "agent log",
                crate::race::agent_log(&cluster, &base.namespace, crate::race::NODE),
            );
        }
    }
    if let Installer::Helm { helm, .. } = &installer {
        let _ = run_helm(helm, &["uninstall", "istio-cni", "-n", &base.namespace, "--wait"]);
    }
    result
}
