//! The downward API: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef`) as env values and volume files, formatted as
//! kubelet formats them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceFieldSelector};

use super::quantity::{ceil_div, parse_nanos};

/// What the kubelet knows about the pod beyond its object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub node: String,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    /// The node's allocatable CPU and memory, in nano-units: what a limit
    /// that is not set reports.
    pub allocatable_cpu: i128,
    pub allocatable_memory: i128,
}

impl PodFacts {
    /// Allocatable CPU and memory of this machine (nodes share it); the
    /// rest empty.
    pub fn for_this_machine() -> PodFacts {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i128>().ok())
            })
            .unwrap_or(0);
        PodFacts {
            allocatable_cpu: cpus as i128 * 1_000_000_000,
            allocatable_memory: memory_kib * 1024 * 1_000_000_000,
            ..PodFacts::default()
        }
    }
}

/// `labels['k']` / `annotations['k']` → the key.
fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(field)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// `key="value"` lines, sorted, values quoted with Go's `%q` escapes (the
/// downward API's labels and annotations files).
pub fn map_file(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}\n", go_quote(v)))
        .collect::<String>()
        .trim_end_matches('\n')
        .to_string()
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of `fieldRef.fieldPath`. `for_env` allows the fields only
/// env may use (spec and status ones); volumes get metadata only.
pub fn field(pod: &Pod, facts: &PodFacts, path: &str, for_env: bool) -> Result<String, String> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let spec = pod.spec.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" if !for_env => map_file(labels),
        "metadata.annotations" if !for_env => map_file(annotations),
        "spec.nodeName" if for_env => facts.node.clone(),
        "spec.serviceAccountName" if for_env => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.hostIP" if for_env => facts.host_ip.clone(),
        "status.hostIPs" if for_env => facts.host_ip.clone(),
        "status.podIP" if for_env => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" if for_env => facts.pod_ips.join(","),
        other => {
            if let Some(k) = subscript(other, "metadata.labels") {
                labels.get(k).cloned().unwrap_or_default()
            } else if let Some(k) = subscript(other, "metadata.annotations") {
                annotations.get(k).cloned().unwrap_or_default()
            } else {
                let place = if for_env { "env" } else { "a downwardAPI volume" };
                return Err(format!("unsupported fieldPath {other:?} in {place}"));
            }
        }
    };
    Ok(value)
}

/// The value of a `resourceFieldRef` for `container` (its own when the
/// selector names none): the limit or request divided by `divisor`,
/// rounded up; an unset limit is the node's allocatable, an unset request
/// is 0 (CPU requests report at least 1 when a limit applies).
pub fn resource(pod: &Pod, container: &str, sel: &ResourceFieldSelector, facts: &PodFacts) -> Result<String, String> {
    let name = sel
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(container);
    let spec = pod.spec.as_ref();
    let c = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .find(|c| c.name == name)
        .ok_or_else(|| format!("resourceFieldRef: no container {name:?} in the pod"))?;
    let (kind, res) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {:?}", sel.resource))?;
    let resources = c.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let given = set.and_then(|m| m.get(res)).map(|q| parse_nanos(&q.0)).transpose()?;
    let allocatable = match res {
        "cpu" => facts.allocatable_cpu,
        "memory" => facts.allocatable_memory,
        "ephemeral-storage" => 0,
        _ => return Err(format!("unsupported resource {:?}", sel.resource)),
    };
    let value = match (kind, given) {
        (_, Some(v)) => v,
        ("limits", None) => allocatable,
        _ => 0,
    };
    // A zero divisor is the unset one (the API server and kubelet both
    // compare it with the zero Quantity): Istio's injector writes "0".
    let divisor = match &sel.divisor {
        Some(d) if !d.0.is_empty() => parse_nanos(&d.0)?,
        _ => 0,
    };
    let divisor = if divisor == 0 { parse_nanos("1")? } else { divisor };
    if divisor < 0 {
        return Err(format!("divisor {:?} must be positive", sel.divisor));
    }
    Ok(ceil_div(value, divisor).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"app": "web", "tier": "a\"b"}, "annotations": {"note": "x"}},
            "spec": {"serviceAccountName": "agent", "containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}}]}
        }))
        .unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            node: "node-0".into(),
            host_ip: "10.0.0.2".into(),
            pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
            allocatable_cpu: 4_000_000_000,
            allocatable_memory: 8 << 30,
        }
    }

    #[test]
    fn fields_for_env_and_volumes() {
        let (p, f) = (pod(), facts());
        let env = |path| field(&p, &f, path, true).unwrap();
        assert_eq!(env("metadata.name"), "p");
        assert_eq!(env("metadata.uid"), "u-1");
        assert_eq!(env("metadata.labels['app']"), "web");
        assert_eq!(env("metadata.annotations['note']"), "x");
        assert_eq!(env("spec.nodeName"), "node-0");
        assert_eq!(env("spec.serviceAccountName"), "agent");
        assert_eq!(env("status.podIPs"), "10.1.0.5,fd00::5");
        assert!(field(&p, &f, "metadata.labels", true).is_err());
        assert!(field(&p, &f, "spec.nodeName", false).is_err());
        assert_eq!(
            field(&p, &f, "metadata.labels", false).unwrap(),
            "app=\"web\"\ntier=\"a\\\"b\""
        );
    }

    #[test]
    fn resources_divide_and_default_to_allocatable() {
        let (p, f) = (pod(), facts());
        let sel = |r: &str, d: Option<&str>| ResourceFieldSelector {
            resource: r.into(),
            divisor: d.map(|d| Quantity(d.into())),
            container_name: None,
        };
        assert_eq!(resource(&p, "c", &sel("limits.cpu", Some("1m")), &f).unwrap(), "250");
        assert_eq!(resource(&p, "c", &sel("limits.cpu", None), &f).unwrap(), "1");
        assert_eq!(resource(&p, "c", &sel("limits.cpu", Some("0")), &f).unwrap(), "1");
        assert!(resource(&p, "c", &sel("limits.cpu", Some("-1")), &f).is_err());
        assert_eq!(resource(&p, "c", &sel("limits.memory", Some("1Mi")), &f).unwrap(), "64");
        assert_eq!(resource(&p, "c", &sel("requests.memory", None), &f).unwrap(), "0");
        let mut no_limits = p.clone();
        no_limits.spec.as_mut().unwrap().containers[0].resources = None;
        assert_eq!(resource(&no_limits, "c", &sel("limits.cpu", None), &f).unwrap(), "4");
        assert!(resource(&p, "c", &sel("limits.gpu", None), &f).is_err());
        assert!(resource(&p, "nope", &sel("limits.cpu", None), &f).is_err());
    }
}
