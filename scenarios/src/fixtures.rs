//! Pods and configs the scenarios deploy: injected pods as Istio's injector
//! shapes them per version, and the `istio-cni` conflist entries Istio's
//! installers wrote per version.
//!
//! The data lives in `scenarios/fixtures/` (written from
//! docs/repair.md#the-validation-container, docs/repair.md#version-skew) and is compiled in, so the
//! runner and the tests need no files at run time:
//!
//! * `pods/istio-1.<v>-<shape>.yaml`: [`POD_VERSIONS`] × [`POD_SHAPES`];
//! * `skew/istio-1.<v>.json`: [`CONFLIST_VERSIONS`].

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use serde_json::Value;

use crate::scenario::Stop;

/// Istio minors with pod fixtures (the skew window around 1.29, see `skew`).
pub const POD_VERSIONS: [&str; 3] = ["1.28", "1.29", "1.30"];

/// Injected pod shapes, each a fixture per version.
pub const POD_SHAPES: [&str; 6] = [
    "classic",
    "native",
    "kubevirt",
    "reroute-virtual",
    "custom-uid",
    "tproxy",
];

/// Istio installer generations with a conflist entry fixture.
pub const CONFLIST_VERSIONS: [&str; 4] = ["1.20", "1.23", "1.27", "1.29"];

macro_rules! pods {
    ($($v:literal: $($shape:literal),+;)+) => {
        &[$($((concat!("istio-", $v, "-", $shape), include_str!(concat!("../fixtures/pods/istio-", $v, "-", $shape, ".yaml")))),+),+]
    };
}

static PODS: &[(&str, &str)] = pods! {
    "1.28": "classic", "native", "kubevirt", "reroute-virtual", "custom-uid", "tproxy";
    "1.29": "classic", "native", "kubevirt", "reroute-virtual", "custom-uid", "tproxy";
    "1.30": "classic", "native", "kubevirt", "reroute-virtual", "custom-uid", "tproxy";
};

static ENTRIES: &[(&str, &str)] = &[
    ("1.20", include_str!("../fixtures/skew/istio-1.20.json")),
    ("1.23", include_str!("../fixtures/skew/istio-1.23.json")),
    ("1.27", include_str!("../fixtures/skew/istio-1.27.json")),
    ("1.29", include_str!("../fixtures/skew/istio-1.29.json")),
];

/// The YAML of the pod Istio `version`'s injector makes for `shape`.
pub fn pod_yaml(version: &str, shape: &str) -> Result<&'static str, Stop> {
    let key = format!("istio-{version}-{shape}");
    PODS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, text)| *text)
        .ok_or_else(|| Stop::Fail(format!("no pod fixture {key}")))
}

/// [`pod_yaml`], parsed.
pub fn pod(version: &str, shape: &str) -> Result<Pod, Stop> {
    parse_pod(pod_yaml(version, shape)?)
}

pub fn parse_pod(yaml: &str) -> Result<Pod, Stop> {
    serde_yaml::from_str(yaml).map_err(|e| Stop::Fail(format!("pod fixture: {e}")))
}

/// The pod the race scenarios create: Istio 1.29's classic injected pod
/// named `name`, validating fast ([`fast_validation_pod`]).
pub fn race_pod(name: &str) -> Result<Pod, Stop> {
    fast_validation_pod("1.29", "classic", name)
}

/// Istio `version`'s injected pod of `shape` named `name`, with the
/// validator's probe timeout cut to 1 s through its env (as a mesh's
/// `proxyMetadata` can do, docs/repair.md#injection), so a failing
/// validation takes one second, not five.
pub fn fast_validation_pod(version: &str, shape: &str, name: &str) -> Result<Pod, Stop> {
    let mut pod = pod(version, shape)?;
    pod.metadata.name = Some(name.into());
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| Stop::Fail(format!("the {shape} fixture has no spec")))?;
    for c in spec.init_containers.iter_mut().flatten() {
        if c.name == "istio-validation" {
            c.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "PROBE_TIMEOUT".into(),
                value: Some("1s".into()),
                value_from: None,
            });
        }
    }
    Ok(pod)
}

/// A pod without a sidecar: what the plugin leaves alone.
pub fn plain_pod(name: &str) -> Result<Pod, Stop> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "mesh-probe", "args": ["echo", "--port", "8080"]}]}
    }))
    .map_err(|e| Stop::Fail(format!("plain pod: {e}")))
}

/// The `istio-cni` conflist entry Istio `version`'s installer wrote (its text).
pub fn conflist_entry_text(version: &str) -> Result<&'static str, Stop> {
    ENTRIES
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, text)| *text)
        .ok_or_else(|| Stop::Fail(format!("no conflist entry fixture for Istio {version}")))
}

/// [`conflist_entry_text`], parsed.
pub fn conflist_entry(version: &str) -> Result<Value, Stop> {
    serde_json::from_str(conflist_entry_text(version)?).map_err(|e| Stop::Fail(format!("entry {version}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pod_fixture_parses_and_is_injected() {
        for v in POD_VERSIONS {
            for shape in POD_SHAPES {
                let pod = pod(v, shape).unwrap();
                let spec = pod.spec.unwrap();
                let inits = spec.init_containers.unwrap_or_default();
                assert_eq!(inits[0].name, "istio-validation", "{v} {shape}: validation first");
                let proxy_is_init = inits.iter().any(|c| c.name == "istio-proxy");
                assert_eq!(proxy_is_init, shape != "classic", "{v} {shape}");
                let status = pod.metadata.annotations.unwrap()["sidecar.istio.io/status"].clone();
                let status: Value = serde_json::from_str(&status).unwrap();
                assert_eq!(
                    status["containers"].is_null(),
                    shape != "classic",
                    "{v} {shape}: {status}"
                );
            }
        }
    }

    #[test]
    fn shapes_carry_their_distinguishing_fields() {
        let yaml = pod_yaml("1.29", "custom-uid").unwrap();
        assert!(yaml.contains("\"-u\", \"1234\"") && yaml.contains("runAsGroup: 4321"));
        let yaml = pod_yaml("1.30", "tproxy").unwrap();
        assert!(yaml.contains("\"TPROXY\"") && yaml.contains("runAsUser: 0"));
        assert!(
            pod_yaml("1.28", "reroute-virtual")
                .unwrap()
                .contains("istio.io/reroute-virtual-interfaces")
        );
        assert!(
            !pod_yaml("1.30", "native").unwrap().contains("GOMAXPROCS"),
            "dropped in 1.30"
        );
        assert!(pod_yaml("1.27", "native").is_err());
    }

    #[test]
    fn race_pod_has_a_short_probe_timeout() {
        let pod = race_pod("early").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("early"));
        let v = &pod.spec.unwrap().init_containers.unwrap()[0];
        assert!(
            v.env
                .iter()
                .flatten()
                .any(|e| e.name == "PROBE_TIMEOUT" && e.value.as_deref() == Some("1s"))
        );
    }

    #[test]
    fn conflist_entries_use_each_generations_keys() {
        assert!(conflist_entry("1.20").unwrap()["log_level"].is_string());
        assert!(conflist_entry("1.23").unwrap()["kubernetes"]["kubeconfig"].is_string());
        assert!(conflist_entry("1.27").unwrap()["cni_agent_run_dir"].is_string());
        assert!(conflist_entry("1.29").unwrap()["enable_ambient_detection_retry"].is_boolean());
        for v in CONFLIST_VERSIONS {
            assert_eq!(conflist_entry(v).unwrap()["type"], "istio-cni");
        }
    }
}
