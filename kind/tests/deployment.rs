//! Deployments, ReplicaSets, PriorityClasses, Leases and DaemonSet history
//! on a 2-node local cluster, driven with the real kubectl where a user
//! would use it: `apply`, `rollout status|restart|history`, `scale`,
//! `get priorityclass`.
//!
//! Needs root (an ordinary user's run re-runs itself as root of a user
//! namespace: `testkit::gate_or_userns`), the CNI plugins and kubectl
//! (`. ci/env`); skips with `SKIP:` otherwise, and panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`.

use std::collections::BTreeSet;

use istio_cni_kind::cluster::Cluster;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Resource, ResourceExt};
use serde_json::json;
use testkit::{Kubectl, Need, Scratch};

mod workload_support;
use workload_support::{WAIT, ready, record_pods, two_node_cluster, wait_live_pods, wait_object};

fn setup(test: &str) -> Option<(Cluster, Kubectl, Scratch)> {
    if !testkit::gate_or_userns(test, &[Need::Root, Need::Tool("ip"), Need::CniPlugins]) {
        return None;
    }
    let cluster = two_node_cluster();
    let home = Scratch::new(test);
    let kubectl = Kubectl::new(test, cluster.kubeconfig_path(), home.path())?;
    Some((cluster, kubectl, home))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: echo
        image: mesh-probe
        args: [echo, --port, "8080"]
"#;

/// The Deployment's status says the rollout of its latest generation is
/// complete with `want` pods (what `kubectl rollout status` waits for).
fn complete(want: i32) -> impl Condition<Deployment> {
    move |d: Option<&Deployment>| {
        let Some(d) = d else { return false };
        let Some(s) = &d.status else { return false };
        s.observed_generation == d.meta().generation
            && s.replicas == Some(want)
            && s.updated_replicas == Some(want)
            && s.available_replicas == Some(want)
    }
}

/// `kubectl rollout status` of Deployment `web` says it rolled out, and
/// its status agrees: complete with 3 pods.
fn rolled_out(cluster: &Cluster, kubectl: &Kubectl, deploys: &Api<Deployment>) -> Deployment {
    let out = kubectl.ok(&["-n", "default", "rollout", "status", "deploy/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_object(cluster, deploys, "web", "complete", complete(3))
}

/// `kubectl rollout history` of `object` lists exactly the revisions `want`.
fn assert_revisions(kubectl: &Kubectl, object: &str, want: &[&str]) {
    let history = kubectl.ok(&["-n", "default", "rollout", "history", object]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, want, "{history}");
}

fn replicasets(cluster: &Cluster, api: &Api<ReplicaSet>) -> Vec<ReplicaSet> {
    let mut all = cluster
        .block_on(api.list(&ListParams::default().labels("app=web")))
        .unwrap()
        .items;
    all.sort_by_key(|rs| rs.annotations().get("deployment.kubernetes.io/revision").cloned());
    all
}

#[test]
fn a_deployment_rolls_out_restarts_scales_and_replaces_pods() {
    let Some((cluster, kubectl, _home)) = setup(testkit::test_name!()) else {
        return;
    };
    let client = cluster.client();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    kubectl
        .run_with_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT.as_bytes()))
        .ok();
    let d = rolled_out(&cluster, &kubectl, &deploys);
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(
        (spec.revision_history_limit, spec.progress_deadline_seconds),
        (Some(10), Some(600))
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let progressing = d.status.as_ref().unwrap().conditions.clone().unwrap_or_default();
    assert!(
        progressing
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")),
        "{progressing:?}"
    );
    let first_rs = replicasets(&cluster, &rss);
    assert_eq!(first_rs.len(), 1);
    let rs = &first_rs[0];
    let hash = rs.labels().get("pod-template-hash").cloned().unwrap();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "web", Some(true))
    );
    let running = cluster.block_on(wait_live_pods(pods.clone(), "app=web", |ps| {
        ps.len() == 3 && ps.iter().all(ready)
    }));
    for p in &running {
        let owner = &p.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("ReplicaSet", rs.name_any().as_str())
        );
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(p.labels().get("pod-template-hash"), Some(&hash));
        assert_eq!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
    }
    let row = kubectl.ok(&["-n", "default", "get", "deploy", "web", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["web", "3/3", "3", "3"],
        "{row}"
    );

    // A template change: a new ReplicaSet, never more than 3 + 1 (maxSurge
    // 25% rounded up) live pods, never fewer than 3 Ready (maxUnavailable
    // 25% rounded down is 0), the old ReplicaSet at 0.
    let (seen, recorder) = record_pods(&cluster, pods.clone(), "app=web");
    let change = json!({"spec": {"template": {"spec": {"containers": [{"name": "echo", "image": "mesh-probe",
        "args": ["echo", "--port", "9090"]}]}}}});
    cluster
        .block_on(deploys.patch("web", &PatchParams::default(), &Patch::Strategic(change)))
        .unwrap();
    rolled_out(&cluster, &kubectl, &deploys);
    let second = cluster.block_on(wait_live_pods(pods.clone(), "app=web", |ps| {
        ps.len() == 3
            && ps
                .iter()
                .all(|p| ready(p) && p.labels().get("pod-template-hash") != Some(&hash))
    }));
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    eprintln!("(live pods, ready) at each event of the rollout: {seen:?}");
    assert!(seen.len() > 6, "the recorder saw the rollout: {seen:?}");
    assert!(
        seen.iter().all(|m| m.live <= 4),
        "more than replicas + maxSurge: {seen:?}"
    );
    assert!(
        seen.iter().all(|m| m.ready >= 3),
        "fewer than replicas - maxUnavailable Ready: {seen:?}"
    );
    for p in &second {
        let args = p.spec.as_ref().unwrap().containers[0].args.clone().unwrap_or_default();
        assert!(args.contains(&"9090".to_string()), "{args:?}");
    }
    let after = replicasets(&cluster, &rss);
    assert_eq!(after.len(), 2);
    let old = after.iter().find(|r| r.name_any() == rs.name_any()).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let new = after.iter().find(|r| r.name_any() != rs.name_any()).unwrap();
    assert_eq!(
        new.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );

    // `rollout restart` changes the template's annotations: a third ReplicaSet.
    kubectl.ok(&["-n", "default", "rollout", "restart", "deploy/web"]);
    rolled_out(&cluster, &kubectl, &deploys);
    let restarted = cluster.block_on(wait_live_pods(pods.clone(), "app=web", |ps| {
        ps.len() == 3
            && ps
                .iter()
                .all(|p| ready(p) && p.annotations().contains_key("kubectl.kubernetes.io/restartedAt"))
    }));
    assert_eq!(restarted.len(), 3);
    assert_revisions(&kubectl, "deploy/web", &["1", "2", "3"]);

    // `kubectl scale` through the scale subresource.
    kubectl.ok(&["-n", "default", "scale", "deploy/web", "--replicas=1"]);
    wait_object(&cluster, &deploys, "web", "complete", complete(1));
    let one = cluster.block_on(wait_live_pods(pods.clone(), "app=web", |ps| {
        ps.len() == 1 && ps.iter().all(ready)
    }));

    // A deleted pod is replaced.
    let victim = one[0].name_any();
    cluster
        .block_on(pods.delete(&victim, &DeleteParams::default()))
        .unwrap();
    let again = cluster.block_on(wait_live_pods(pods.clone(), "app=web", |ps| {
        ps.len() == 1 && ps.iter().all(|p| ready(p) && p.name_any() != victim)
    }));
    assert_eq!(again.len(), 1);
    let row = kubectl.ok(&["-n", "default", "get", "rs", "--no-headers"]);
    assert_eq!(row.lines().count(), 3, "{row}");
    cluster.delete().unwrap();
}

#[test]
fn priority_classes_leases_and_daemonset_history() {
    let Some((cluster, kubectl, _home)) = setup(testkit::test_name!()) else {
        return;
    };
    let client = cluster.client();

    // The built-in classes, as kubectl lists them.
    let out = kubectl.ok(&["get", "priorityclass", "--no-headers"]);
    let rows: BTreeSet<Vec<String>> = out
        .lines()
        .map(|l| l.split_whitespace().take(3).map(str::to_string).collect())
        .collect();
    for (name, value) in [
        ("system-node-critical", "2000001000"),
        ("system-cluster-critical", "2000000000"),
    ] {
        assert!(
            rows.contains(&vec![name.to_string(), value.to_string(), "false".to_string()]),
            "{out}"
        );
    }

    // A pod's priority comes from its class; an unknown class is refused.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, class: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"priorityClassName": class,
            "containers": [{"name": "c", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}}))
        .unwrap()
    };
    let critical = cluster
        .block_on(pods.create(&PostParams::default(), &pod("critical", "system-node-critical")))
        .unwrap();
    assert_eq!(critical.spec.as_ref().and_then(|s| s.priority), Some(2_000_001_000));
    let refused = cluster
        .block_on(pods.create(&PostParams::default(), &pod("nobody", "gold")))
        .unwrap_err();
    match refused {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert!(
                s.message.contains("no PriorityClass with name gold was found"),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }

    // A Lease round-trips and its changes are watched (not a node's: the
    // kubelets keep `node-<i>` renewed).
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "round-trip"},
        "spec": {"holderIdentity": "node-0", "leaseDurationSeconds": 40}}))
    .unwrap();
    cluster.block_on(leases.create(&PostParams::default(), &lease)).unwrap();
    let renewed = await_condition(leases.clone(), "round-trip", |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .is_some()
    });
    let renew = json!({"spec": {"renewTime": "2025-01-01T00:00:00.000000Z"}});
    cluster
        .block_on(leases.patch("round-trip", &PatchParams::default(), &Patch::Merge(renew)))
        .unwrap();
    let got = cluster
        .block_on(async { tokio::time::timeout(WAIT, renewed).await })
        .unwrap()
        .unwrap()
        .unwrap();
    let spec = got.spec.unwrap();
    assert_eq!(
        (spec.holder_identity.as_deref(), spec.lease_duration_seconds),
        (Some("node-0"), Some(40))
    );

    // A DaemonSet's templates become ControllerRevisions: `rollout history`.
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": {"metadata": {"labels": {"app": "probe"}},
            "spec": {"containers": [{"name": "echo", "image": "mesh-probe", "args": ["echo", "--port", "8081"]}]}}}}))
    .unwrap();
    cluster.block_on(dss.create(&PostParams::default(), &ds)).unwrap();
    kubectl.ok(&["-n", "default", "rollout", "status", "ds/probe", "--timeout=90s"]);
    let change = json!({"spec": {"template": {"spec": {"containers": [{"name": "echo", "image": "mesh-probe",
        "args": ["echo", "--port", "8082"]}]}}}});
    cluster
        .block_on(dss.patch("probe", &PatchParams::default(), &Patch::Strategic(change)))
        .unwrap();
    kubectl.ok(&["-n", "default", "rollout", "status", "ds/probe", "--timeout=90s"]);
    assert_revisions(&kubectl, "ds/probe", &["1", "2"]);
    let crs: Api<ControllerRevision> = Api::namespaced(client.clone(), "default");
    let listed = cluster.block_on(crs.list(&ListParams::default())).unwrap().items;
    let ds_uid = cluster.block_on(dss.get("probe")).unwrap().uid();
    assert!(
        listed
            .iter()
            .all(|r| r.owner_references()[0].uid == ds_uid.clone().unwrap())
    );
    let live = cluster.block_on(wait_live_pods(pods.clone(), "app=probe", |ps| {
        ps.len() == 2 && ps.iter().all(ready)
    }));
    let newest = listed.iter().max_by_key(|r| r.revision).unwrap();
    for p in &live {
        assert_eq!(
            p.labels().get("controller-revision-hash"),
            newest.labels().get("controller-revision-hash"),
            "the pods run the newest revision"
        );
    }
    cluster.delete().unwrap();
}

/// helm's `--wait` reads a Deployment's status and conditions (the
/// `Progressing` reason `NewReplicaSetAvailable`): install and upgrade
/// return once the rollout is complete.
#[test]
fn helm_waits_for_a_deployment() {
    let test = testkit::test_name!();
    let Some((cluster, _kubectl, home)) = setup(test) else {
        return;
    };
    let Some(helm) = Kubectl::helm(test, cluster.kubeconfig_path(), home.path()) else {
        return;
    };
    let chart = home.join("web");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: web\nversion: 0.1.0\n").unwrap();
    std::fs::write(chart.join("values.yaml"), "port: 8080\n").unwrap();
    let template = DEPLOYMENT
        .replace("replicas: 3", "replicas: 2")
        .replace("\"8080\"", "{{ .Values.port | quote }}");
    std::fs::write(chart.join("templates/deployment.yaml"), template).unwrap();
    let chart = chart.to_str().unwrap();
    let deploys: Api<Deployment> = Api::namespaced(cluster.client(), "default");
    helm.ok(&["install", "web", chart, "-n", "default", "--wait", "--timeout", "90s"]);
    let d = cluster.block_on(deploys.get("web")).unwrap();
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(2));
    helm.ok(&[
        "upgrade",
        "web",
        chart,
        "-n",
        "default",
        "--set",
        "port=9090",
        "--wait",
        "--timeout",
        "90s",
    ]);
    let d = cluster.block_on(deploys.get("web")).unwrap();
    assert!(complete(2).matches_object(Some(&d)), "{:?}", d.status);
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    helm.ok(&["uninstall", "web", "-n", "default", "--wait", "--timeout", "90s"]);
    assert!(cluster.block_on(deploys.get_opt("web")).unwrap().is_none());
    cluster.delete().unwrap();
}
