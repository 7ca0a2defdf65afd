//! A container's environment as kubelet builds it: `envFrom` sources in
//! order (with their prefix), then `env` in order (`value` with `$(VAR)`
//! expansion, `valueFrom` fieldRef / resourceFieldRef / configMapKeyRef /
//! secretKeyRef), then the API server's service variables unless set; and
//! `$(VAR)` expansion of `command` and `args`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::downward::{self, PodFacts};

/// ConfigMaps and Secrets of the pod's namespace, fetched by name (`None`:
/// not found). Values are bytes (a Secret's, or a ConfigMap's
/// `binaryData`).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

/// Why the environment cannot be built (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// The ConfigMaps and Secrets `c`'s environment reads.
pub fn sources(c: &Container) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for from in c.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else { continue };
        if let Some(r) = &from.config_map_key_ref {
            cms.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    cms.dedup();
    secrets.dedup();
    (cms, secrets)
}

/// A C identifier-like name kubelet accepts from `envFrom` (printable
/// ASCII without `=`, not starting with a digit).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_graphic() && c != '=')
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Key `key` of the `kind` (`ConfigMap`, `Secret`) `ns/name` among
/// `objects`, as text; `None` when it is missing and the reference optional.
fn key_value(
    objects: &HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, EnvError> {
    match objects.get(name).and_then(Option::as_ref) {
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(text(v))),
            None if optional => Ok(None),
            None => Err(EnvError(format!("couldn't find key {key} in {kind} {ns}/{name}"))),
        },
        None if optional => Ok(None),
        None => Err(EnvError(format!("{} \"{name}\" not found", kind.to_ascii_lowercase()))),
    }
}

/// The environment of `c`, in order. `service_env` (the API server's
/// `KUBERNETES_SERVICE_*`) comes last, for names the spec does not set.
pub fn build(
    pod: &Pod,
    c: &Container,
    facts: &PodFacts,
    objects: &Objects,
    service_env: &[(String, String)],
) -> Result<Vec<(String, String)>, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| match env.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (data, what, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                objects.config_maps.get(&r.name),
                "configmap",
                &r.name,
                r.optional == Some(true),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                objects.secrets.get(&r.name),
                "secret",
                &r.name,
                r.optional == Some(true),
            )
        } else {
            continue;
        };
        match data.cloned().flatten() {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    // kubelet skips (and reports) keys that are no env names.
                    if valid_name(&key) {
                        set(&mut env, key, text(&v));
                    }
                }
            }
            None if optional => {}
            None => return Err(EnvError(format!("{what} \"{name}\" not found"))),
        }
    }
    for var in c.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                downward::field(pod, facts, &f.field_path, true).map_err(EnvError)?
            } else if let Some(r) = &from.resource_field_ref {
                downward::resource(pod, &c.name, r, facts).map_err(EnvError)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional == Some(true);
                match key_value(&objects.config_maps, "ConfigMap", ns, &r.name, &r.key, optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional == Some(true);
                match key_value(&objects.secrets, "Secret", ns, &r.name, &r.key, optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                String::new()
            }
        } else {
            let raw = var.value.clone().unwrap_or_default();
            let known: HashMap<&str, &str> = service_env
                .iter()
                .chain(env.iter())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            expand(&raw, &known)
        };
        set(&mut env, var.name.clone(), value);
    }
    for (k, v) in service_env {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    Ok(env)
}

/// The variables kubelet gives every pod for the `kubernetes` Service in
/// `default`, pointing at `api` (the address pods reach the API server on).
pub fn service_env(api: Option<std::net::SocketAddr>) -> Vec<(String, String)> {
    let Some(addr) = api else { return Vec::new() };
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let url = format!("tcp://{addr}");
    let key = format!("KUBERNETES_PORT_{port}_TCP");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (key.clone(), url),
        (format!("{key}_PROTO"), "tcp".into()),
        (format!("{key}_PORT"), port),
        (format!("{key}_ADDR"), host),
    ]
}

/// `command` and `args` with `$(VAR)` expanded against the environment.
pub fn expand_all(words: &[String], env: &[(String, String)]) -> Vec<String> {
    let known: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    words.iter().map(|w| expand(w, &known)).collect()
}

/// Kubernetes' expansion: `$(NAME)` becomes the variable's value when it is
/// defined and stays as written otherwise; `$$` is a literal `$` (so
/// `$$(NAME)` stays `$(NAME)`); any other `$` is kept.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_follows_kubernetes() {
        let vars: HashMap<&str, &str> = [("A", "1"), ("B", "two")].into_iter().collect();
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y$(B)", "x1ytwo"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("cost: 5$", "cost: 5$"),
            ("$()", "$()"),
        ] {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    fn bytes(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Vec<u8>>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn pod_and_container(env: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let mut c: Container = serde_json::from_value(json!({"name": "c", "image": "i"})).unwrap();
        let spec: Container =
            serde_json::from_value(json!({"name": "c", "image": "i", "env": env["env"], "envFrom": env["envFrom"]}))
                .unwrap();
        c.env = spec.env;
        c.env_from = spec.env_from;
        (pod, c)
    }

    #[test]
    fn sources_are_layered_in_kubelet_order() {
        let (pod, c) = pod_and_container(json!({
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "sec"}}],
            "env": [
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "GREETING", "value": "hi $(NODE) at $(KUBERNETES_SERVICE_HOST) $$(NODE)"},
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": true}}},
                {"name": "password", "value": "overridden"}
            ]
        }));
        let objects = Objects {
            config_maps: [("cfg".to_string(), bytes(&[("level", "debug"), ("bad-name=", "x")]))].into(),
            secrets: [
                ("sec".to_string(), bytes(&[("password", "s3cret")])),
                ("absent".to_string(), None),
            ]
            .into(),
        };
        let facts = PodFacts {
            node: "node-1".into(),
            ..Default::default()
        };
        let service = vec![("KUBERNETES_SERVICE_HOST".to_string(), "10.0.0.1".to_string())];
        let env = build(&pod, &c, &facts, &objects, &service).unwrap();
        let got: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "CFG_level=debug",
                "password=overridden",
                "NODE=node-1",
                "GREETING=hi node-1 at 10.0.0.1 $(NODE)",
                "LEVEL=debug",
                "PASS=s3cret",
                "KUBERNETES_SERVICE_HOST=10.0.0.1",
            ]
        );
        assert_eq!(
            expand_all(&["echo".into(), "$(NODE)".into()], &env),
            vec!["echo", "node-1"]
        );
    }

    #[test]
    fn the_api_server_is_announced_as_the_kubernetes_service() {
        assert!(service_env(None).is_empty());
        let env = service_env(Some("10.250.0.1:6443".parse().unwrap()));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.250.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get("KUBERNETES_PORT_6443_TCP_ADDR"), Some("10.250.0.1"));
        // An IPv6 API server: the bare literal in HOST and ADDR (clients
        // bracket it), a bracketed one in the tcp:// URLs, as Kubernetes writes them.
        let env = service_env(Some("[fd0b:96::1]:6443".parse().unwrap()));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("fd0b:96::1"));
        assert_eq!(get("KUBERNETES_PORT_6443_TCP_ADDR"), Some("fd0b:96::1"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://[fd0b:96::1]:6443"));
    }

    #[test]
    fn missing_required_sources_are_config_errors() {
        let objects = Objects {
            config_maps: [("cfg".to_string(), bytes(&[("a", "1")])), ("gone".to_string(), None)].into(),
            secrets: [("gone".to_string(), None)].into(),
        };
        for (env, want) in [
            (
                json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}),
                "configmap \"gone\" not found",
            ),
            (
                json!({"envFrom": [{"secretRef": {"name": "gone"}}]}),
                "secret \"gone\" not found",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}}}]}),
                "couldn't find key b in ConfigMap ns/cfg",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}),
                "unsupported fieldPath \"spec.bogus\" in env",
            ),
        ] {
            let (pod, c) = pod_and_container(env.clone());
            let e = build(&pod, &c, &PodFacts::default(), &objects, &[]).unwrap_err();
            assert_eq!(e.0, want, "{env}");
        }
        let (pod, c) = pod_and_container(json!({"envFrom": [{"configMapRef": {"name": "gone", "optional": true}}]}));
        assert!(build(&pod, &c, &PodFacts::default(), &objects, &[]).unwrap().is_empty());
    }
}
