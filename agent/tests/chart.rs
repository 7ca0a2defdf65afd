//! The project's Helm chart (`agent/chart`) renders exactly what
//! `istio-cni-agent manifest` renders, for the same values: one set of
//! objects, two ways to get it (`helm install ... agent/chart`, or
//! `istio-cni-agent manifest | kubectl apply -f -`). Needs helm (ci/setup
//! installs helm 4); skipped without it, except in CI.

mod daemonset_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/chart");

/// `kind/name` → object, from a multi-document YAML stream.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).expect("YAML document");
            (!value.is_null()).then_some(value)
        })
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                ),
                o,
            )
        })
        .collect()
}

fn helm_template(helm: &Path, sets: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "istio-cni", CHART, "--namespace", "istio-system"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("running helm");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn helm() -> Option<std::path::PathBuf> {
    let found = testkit::helm_path();
    if found.is_none() {
        testkit::skip("chart", "helm not found in PATH (ci/setup installs it)");
    }
    found
}

#[test]
fn the_chart_renders_what_the_manifest_command_renders() {
    let Some(helm) = helm() else { return };
    let cases: &[&[&str]] = &[
        &[],
        &["repair.repairPods=false", "repair.deletePods=true"],
        &["repair.repairPods=false", "repair.labelPods=true"],
        &["repair.enabled=false"],
        &["global.logAsJson=true", "logging.level=debug"],
        &["global.logging.level=warn"],
        &["hub=registry.example/istio", "tag=1.2.3", "variant=distroless"],
        &["image=docker.io/someone/install-cni:1.30.0"],
        &[
            "excludeNamespaces={kube-system,ops}",
            "cniConfFileName=10-calico.conflist",
            "env.FOO=bar",
        ],
        &["excludeNamespaces=null"],
        &["resources.requests.cpu=200m", "resources.limits.memory=1Gi"],
        &[
            "resources.requests.cpu=",
            "resources.requests.memory=",
            "global.defaultResources.requests.cpu=50m",
        ],
        &["global.resourceScope=namespace"],
        &["global.resourceScope=cluster"],
        &["useAppArmorAnnotation=false", "seccompProfile.type=RuntimeDefault"],
        &[
            "podLabels.team=net",
            "podAnnotations.owner=me",
            "daemonSetLabels.tier=node",
        ],
        &["tolerations=null", "terminationGracePeriodSeconds=5"],
        &["global.imagePullSecrets={regcred}", "pullPolicy=IfNotPresent"],
        &["global.imagePullPolicy=Always"],
        &["cniBinDir=/home/kubernetes/bin", "cniConfDir=/etc/cni/custom.d"],
        &["revision=canary", "ownerName=installer"],
        &[
            "updateStrategy.rollingUpdate.maxUnavailable=2",
            "global.nativeNftables=true",
            "chained=false",
        ],
        &["taint.enabled=true"],
        &["taint.enabled=true", "taint.name=example.com/cni-not-ready"],
        &["safeUpgrade.enabled=true"],
        &["taint.enabled=true", "safeUpgrade.enabled=true", "repair.enabled=false"],
        &[
            "taint.enabled=true",
            "safeUpgrade.enabled=true",
            "global.resourceScope=namespace",
        ],
        &[
            "taint.enabled=true",
            "safeUpgrade.enabled=true",
            "global.resourceScope=cluster",
        ],
        &[
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ],
    ];
    let mut failures = Vec::new();
    for sets in cases {
        let chart = match helm_template(&helm, sets) {
            Ok(yaml) => objects(&yaml),
            Err(e) => {
                failures.push(format!("{sets:?}: helm template failed: {e}"));
                continue;
            }
        };
        let ours = objects(&String::from_utf8_lossy(&daemonset_support::manifest(sets)));
        if chart.keys().ne(ours.keys()) {
            failures.push(format!(
                "{sets:?}: objects differ: chart {:?}, manifest {:?}",
                chart.keys().collect::<Vec<_>>(),
                ours.keys().collect::<Vec<_>>()
            ));
            continue;
        }
        for (name, object) in &chart {
            if object != &ours[name] {
                failures.push(format!(
                    "{sets:?}: {name} differs:\nchart:    {}\nmanifest: {}",
                    serde_json::to_string(object).unwrap_or_default(),
                    serde_json::to_string(&ours[name]).unwrap_or_default()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_chart_refuses_what_it_does_not_render() {
    let Some(helm) = helm() else { return };
    for (set, named) in [
        ("resourceQuotas.enabled=true", "resourceQuotas.enabled"),
        ("global.networkPolicy.enabled=true", "global.networkPolicy.enabled"),
        ("provider=multus", "provider multus"),
        ("ambient.enabled=true", "ambient"),
        ("platform=gke", "platform gke"),
        ("global.resourceScope=some", "global.resourceScope some"),
    ] {
        let err = helm_template(&helm, &[set]).expect_err(set);
        assert!(err.contains(named), "{set}: {err}");
    }
}

#[test]
fn the_chart_defaults_are_the_manifest_defaults() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap()).unwrap();
    assert_eq!(values, istio_cni_agent::manifest::values::chart_defaults());
}

#[test]
fn the_chart_lints_clean() {
    let Some(helm) = helm() else { return };
    let out = Command::new(helm)
        .args(["lint", "--strict", CHART])
        .output()
        .expect("running helm lint");
    assert!(
        out.status.success(),
        "helm lint --strict:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
