//! The `cni/...` scenarios on the embedded cluster: every local primary
//! profile × install mode (see `istio_cni_scenarios::cni`). Needs root: an ordinary user's
//! test re-runs itself in a user namespace or fails saying why (see
//! `istio_cni_scenarios::harness`).

use istio_cni_agent::manifest::Manifest;
use istio_cni_kind::cluster::ClusterSpec;
use istio_cni_scenarios::daemonset::DaemonSetAgent;
use istio_cni_scenarios::env::{Env, Target};
use istio_cni_scenarios::harness::{as_root, assert_passes_locally};
use istio_cni_scenarios::scenario::{Record, Stop};
use istio_cni_scenarios::system::Install;
use rstest::rstest;

#[rstest]
fn cni(
    #[values("bridge", "ptp", "macvlan", "ipvlan")] profile: &str,
    #[values("chained", "single-conf", "standalone")] mode: &str,
) {
    let name = format!("cni/{profile}/{mode}");
    // Only ipvlan may skip, and only where the kernel lacks it.
    assert_passes_locally(&name, |_| profile == "ipvlan");
}

/// The restore check is real: a file the agents did not write back fails it.
#[test]
fn uninstall_fails_on_a_file_left_behind() {
    if !as_root("uninstall_fails_on_a_file_left_behind") {
        return;
    }
    let env = Env::new(Target::Local).unwrap();
    let cluster = env.cluster(ClusterSpec::default()).unwrap();
    let mut record = Record::default();
    let agent = DaemonSetAgent::deploy(&env, &cluster, &Install::defaults(), &mut record).unwrap();
    let node = cluster.local().unwrap().node("node-0").unwrap();
    std::fs::write(node.conf_dir().join("99-stray.conf"), "{}").unwrap();
    match agent.uninstall(&mut record) {
        Err(Stop::Fail(message)) => assert!(
            message.contains("node-0: /etc/cni/net.d: 99-stray.conf was left behind"),
            "{message}"
        ),
        other => panic!("uninstall passed with a stray file: {other:?}"),
    }
    // The body of the first diagnostics block whose title starts so.
    let block = |prefix: &str| {
        record
            .diagnostics
            .iter()
            .find(|(title, _)| title.starts_with(prefix))
            .map(|(_, body)| body.as_str())
            .unwrap_or_default()
    };
    let log = block("agent and plugin log (node-0");
    assert!(
        !log.is_empty(),
        "the agent's log, read from its pod: {:?}",
        record.diagnostics
    );
    // The config is shown as a diff naming the stray file, not as two dumps.
    let diff = block("CNI config diff");
    assert!(
        diff.contains("/etc/cni/net.d/99-stray.conf (before: absent)") && diff.contains("\n+{}"),
        "{diff}"
    );
}

/// `cni/cluster/chained` deploys the agent from its manifests. Here the
/// embedded cluster, reached as an `existing` cluster, gets them applied
/// (created, then replaced); its DaemonSet controller rolls the agent out
/// from the agent's image directory, and dropping the deployment deletes
/// every object.
#[test]
fn daemonset_manifests_apply_and_are_removed_again() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    use kube::api::Api;

    if !as_root("daemonset_manifests_apply_and_are_removed_again") {
        return;
    }
    let local = Env::new(Target::Local)
        .unwrap()
        .cluster(ClusterSpec::default())
        .unwrap();
    let existing = Env::new(Target::Existing {
        kubeconfig: local.kubeconfig_path().to_path_buf(),
    })
    .unwrap();
    let cluster = existing.cluster(ClusterSpec::default()).unwrap();
    let manifest = Manifest::for_platform(None).unwrap();
    let mut record = Record::default();
    let first = DaemonSetAgent::apply(&existing, &cluster, &Install::defaults(), &mut record).unwrap();
    assert!(
        record.notes.iter().any(|n| n.contains("node files are not checked")),
        "{:?}",
        record.notes
    );
    // Applying again replaces what exists.
    let second = DaemonSetAgent::apply(&existing, &cluster, &Install::defaults(), &mut record).unwrap();
    let daemonsets: Api<DaemonSet> = Api::namespaced(local.client(), &manifest.namespace);
    let ds = local.block_on(daemonsets.get("istio-cni-node")).unwrap();
    let image = ds.spec.unwrap().template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some(istio_cni_kind::backend::images::AGENT_IMAGE));
    let roles: Api<ClusterRole> = Api::all(local.client());
    assert!(local.block_on(roles.get_opt("istio-cni")).unwrap().is_some());

    if let Err(e) = second.wait_rolled_out(std::time::Duration::from_secs(90)) {
        panic!("the agent's DaemonSet did not roll out: {e:?}");
    }
    drop(second);
    drop(first);
    assert!(local.block_on(daemonsets.get_opt("istio-cni-node")).unwrap().is_none());
    assert!(local.block_on(roles.get_opt("istio-cni")).unwrap().is_none());
}
