//! The `platform/...` scenarios: the agent's DaemonSet deployed with a
//! distribution's value profile (`--platform`; for a chart under test the
//! same profile as a values file), on embedded nodes laid out like that
//! distribution's (`Layout`), installs into the distribution's CNI dirs, a
//! meshed pod there gets its rules and passes validation, and deleting the
//! DaemonSet gives the dirs back byte for byte.
//!
//! `platform/default` is kind/kubeadm's layout with the chart defaults.
//! `platform/openshift` is Multus-based and not chained: the agent writes a
//! standalone `istio-cni.conf` into Multus's `/etc/cni/multus/net.d`, while
//! the runtime's own network (in `/etc/kubernetes/cni/net.d`) stays
//! untouched. The embedded runtime has no Multus, so the scenario plays it
//! (an ADD of `istio-cni.conf` on each sandbox after the primary's, as for a
//! pod asking for the `istio-cni` network) — and asserts only that: the
//! file works when delegated to, the runtime's config is never edited.

use istio_cni_agent::manifest::Manifest;
use istio_cni_agent::manifest::platform::Platform;
use istio_cni_kind::cluster::{Cluster, ClusterSpec};
use istio_cni_kind::node::Layout;
use serde_json::Value;

use crate::cni::{
    Answer, Delegate, client_container, create_pod, diag_failure, echo_container, expect_answer, expect_chains,
    meshed_pod, plain_pod, pod_ip, validation_passed, wait_running,
};
use crate::daemonset::DaemonSetAgent;
use crate::ensure;
use crate::env::Env;
use crate::scenario::{Record, Scenario, Step, Stop, skip};
use crate::system::{Install, Source};

use crate::daemonset::{KUBECONFIG, RUN_DIR};

/// OpenShift's standalone file (the chart's `cniConfFileName` there).
const OPENSHIFT_FILE: &str = "istio-cni.conf";

/// Every platform with its node layout (`default`: no `--platform`).
pub const PLATFORMS: [(Layout, Option<Platform>); 7] = [
    (Layout::Default, None),
    (Layout::Gke, Some(Platform::Gke)),
    (Layout::K3d, Some(Platform::K3d)),
    (Layout::K3s, Some(Platform::K3s)),
    (Layout::Microk8s, Some(Platform::Microk8s)),
    (Layout::Minikube, Some(Platform::Minikube)),
    (Layout::Openshift, Some(Platform::Openshift)),
];

/// Every `platform/...` scenario.
pub fn scenarios() -> Vec<Scenario> {
    PLATFORMS
        .into_iter()
        .map(|(layout, platform)| {
            let summary = match platform {
                Some(Platform::Openshift) => {
                    "openshift: standalone istio-cni.conf for Multus; delegated to, a meshed pod is captured; restored"
                        .to_string()
                }
                _ => {
                    format!("{layout}: the agent installs into {layout}'s CNI dirs; a meshed pod is captured; restored")
                }
            };
            Scenario::new(format!("platform/{layout}"), summary, move |env, record| {
                run(env, record, layout, platform)
            })
        })
        .collect()
}

fn run(env: &Env, record: &mut Record, layout: Layout, platform: Option<Platform>) -> Step {
    if !env.is_local() {
        return skip(format!(
            "platform layouts are the embedded cluster's; a {} cluster's paths are its own",
            env.target.name()
        ));
    }
    if env.system.source == Source::Project {
        check_manifest_paths(&Manifest::for_platform(platform)?, layout)?;
    }
    let cluster = env.cluster(ClusterSpec {
        nodes: 2,
        layout,
        ..ClusterSpec::default()
    })?;
    record.mark(format!("cluster up ({layout} layout)"));
    let agent = DaemonSetAgent::deploy(env, &cluster, &Install::platform(platform), record)?;
    let multus = platform == Some(Platform::Openshift);
    let result = (|| -> Step {
        check_installed(&cluster, &agent, multus)?;
        meshed_pod_is_captured(&cluster, record, multus.then_some(Delegate { file: OPENSHIFT_FILE }))
    })();
    diag_failure(&result, &agent, &cluster, record);
    result?;
    agent.uninstall(record)
}

/// The DaemonSet's hostPath mounts are the layout's dirs.
fn check_manifest_paths(manifest: &Manifest, layout: Layout) -> Step {
    let mounts = manifest.host_mounts();
    let host = |volume: &str| mounts.iter().find(|m| m.volume == volume).map(|m| m.host_path.clone());
    let bin = layout.bin_dirs().first().copied().unwrap_or_default();
    ensure!(
        host("cni-net-dir").as_deref() == Some(layout.conf_dir()) && manifest.host_conf_dir() == layout.conf_dir(),
        "{layout}: the manifest mounts {:?} as the config dir, the node keeps it in {}",
        host("cni-net-dir"),
        layout.conf_dir()
    );
    ensure!(
        host("cni-bin-dir").as_deref() == Some(bin),
        "{layout}: the manifest mounts {:?} as the bin dir, the node keeps plugins in {bin}",
        host("cni-bin-dir")
    );
    ensure!(
        host("cni-socket-dir").as_deref() == Some("/var/run/istio-cni"),
        "{layout}: the run dir mount is {:?}",
        host("cni-socket-dir")
    );
    Ok(())
}

/// Each node's agent wrote into the layout's dirs: binary, kubeconfig, and
/// its entry (chained into the primary, or OpenShift's standalone file with
/// the runtime's config untouched).
fn check_installed(cluster: &Cluster, agent: &DaemonSetAgent, multus: bool) -> Step {
    let local = cluster.local()?;
    for (before, now) in agent.before()?.iter().zip(agent.files_now()?) {
        let node = local
            .node(&now.node)
            .ok_or_else(|| Stop::Fail(format!("no node {}", now.node)))?;
        let name = node.name();
        let layout = node.layout();
        let listed = |dir: &str| now.listed.iter().find(|(d, _)| d == dir).map(|(_, names)| names);
        let bin = layout.bin_dirs().first().copied().unwrap_or_default();
        ensure!(
            listed(bin).is_some_and(|names| names.contains("istio-cni")),
            "{name}: no istio-cni in {bin}"
        );
        ensure!(
            listed(RUN_DIR).is_some_and(|names| names.contains(KUBECONFIG)),
            "{name}: no plugin kubeconfig in {RUN_DIR}"
        );
        if multus {
            let conf = now.conf_dir(layout.conf_dir()).cloned().unwrap_or_default();
            let text = conf
                .get(OPENSHIFT_FILE)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            ensure!(
                value["type"] == "istio-cni",
                "{name}: no standalone {OPENSHIFT_FILE} of type istio-cni in {}:\n{text}",
                layout.conf_dir()
            );
            let runtime = layout.runtime_conf_dir();
            ensure!(
                now.conf_dir(runtime).is_some() && now.conf_dir(runtime) == before.conf_dir(runtime),
                "{name}: the runtime's config dir {runtime} changed"
            );
        } else {
            // What the runtime would run for a pod: our entry in it.
            let chosen = node.select_network()?.network;
            let types: Vec<&str> = chosen.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
            ensure!(
                types.last() == Some(&"istio-cni"),
                "{name}: the runtime's network {:?} runs {types:?}, not ending in istio-cni",
                chosen.source
            );
        }
    }
    Ok(())
}

/// A meshed pod on node-0 passes validation, has Istio's chains, and its
/// outbound to an app on node-1 lands on its proxy.
fn meshed_pod_is_captured(cluster: &Cluster, record: &mut Record, delegate: Option<Delegate>) -> Step {
    let conf_dir_of = |node: &str| cluster.local().ok()?.node(node).map(|n| n.conf_dir());
    create_pod(
        cluster,
        &plain_pod("echo", "default", "node-1", vec![echo_container(&[8080])]),
    )?;
    if let Some(d) = delegate {
        d.add(cluster, conf_dir_of, "default", "echo")?;
    }
    let target = format!("{}:8080", pod_ip(&wait_running(cluster, record, "default", "echo")?));
    let hello = meshed_pod(
        "hello",
        "default",
        "node-0",
        &[],
        vec![client_container(std::slice::from_ref(&target))],
        true,
    )?;
    create_pod(cluster, &hello)?;
    if let Some(d) = delegate {
        d.add(cluster, conf_dir_of, "default", "hello")?;
        record.mark(format!("default/hello: delegated ADD of {}", d.file));
    }
    validation_passed(&wait_running(cluster, record, "default", "hello")?)?;
    record.mark("default/hello: istio-validation passed");
    expect_chains(cluster, record, "default", "hello", true)?;
    expect_chains(cluster, record, "default", "echo", false)?;
    let captured = Answer::Proxy {
        listener: 15001,
        orig_dst: target.clone(),
    };
    expect_answer(cluster, record, "default", "hello", &target, &captured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_and_layout_is_covered_with_matching_paths() {
        let names: Vec<String> = scenarios().into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), Layout::ALL.len());
        for layout in Layout::ALL {
            assert!(names.contains(&format!("platform/{layout}")), "{layout}");
        }
        for p in Platform::ALL {
            assert!(
                PLATFORMS.iter().any(|(l, q)| *q == Some(p) && l.name() == p.name()),
                "{p}"
            );
        }
        // The chart's paths match the harness's layouts (a mismatch fails here, without root).
        for (layout, platform) in PLATFORMS {
            let manifest = Manifest::for_platform(platform).unwrap();
            check_manifest_paths(&manifest, layout).unwrap();
        }
        let mismatched = Manifest::for_platform(Some(Platform::K3s)).unwrap();
        assert!(check_manifest_paths(&mismatched, Layout::Default).is_err());
    }
}
