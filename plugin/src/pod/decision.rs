//! Whether the plugin redirects a pod's traffic, in Istio's exact filter order
//! (docs/plugin.md#skip-filters).

use std::fmt;

use super::{INIT_CONTAINER, PROXY_CONTAINER, PodInfo};
use crate::redirect::keys;
use crate::redirect::values::parse_go_bool;

/// The inject switch Istio honours, as a label (preferred) or an annotation.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// Added by the injector; its presence marks an injected pod.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Redirect,
    Skip(SkipReason),
}

/// Why a pod is left untouched. Each is a silent success for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The pod has `istio-init`, so it programs its own rules (CNI not in use).
    HasIstioInit,
    /// `DISABLE_ENVOY` on istio-proxy is true.
    ProxyDisabled,
    /// No `istio-proxy` container at all.
    NoSidecar,
    /// istio-proxy runs as another proxy type, e.g. a gateway (`proxy router`).
    NotSidecarProxy { proxy_type: String },
    /// `sidecar.istio.io/inject` is false on the label or annotation.
    InjectionDisabled { source: InjectSource, value: String },
    /// No `sidecar.istio.io/status` annotation: the injector did not run.
    NotInjected,
    /// `sidecar.istio.io/interceptionMode: NONE`: the pod asked for no
    /// capture. (Istio fails the ADD here; skipping is what the pod asked for.)
    InterceptionNone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectSource {
    Label,
    Annotation,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::HasIstioInit => write!(f, "pod has an {INIT_CONTAINER} container (it programs its own rules)"),
            SkipReason::ProxyDisabled => write!(f, "DISABLE_ENVOY is true on {PROXY_CONTAINER}"),
            SkipReason::NoSidecar => write!(f, "pod has no {PROXY_CONTAINER} container"),
            SkipReason::NotSidecarProxy { proxy_type } => {
                write!(f, "{PROXY_CONTAINER} runs as proxy type {proxy_type:?}, not a sidecar")
            }
            SkipReason::InjectionDisabled { source, value } => {
                let what = match source {
                    InjectSource::Label => "label",
                    InjectSource::Annotation => "annotation",
                };
                write!(f, "{what} {INJECT_KEY}={value:?} disables injection")
            }
            SkipReason::NotInjected => write!(f, "pod has no {STATUS_ANNOTATION} annotation"),
            SkipReason::InterceptionNone => write!(
                f,
                "annotation {}=NONE disables traffic capture",
                keys::INTERCEPTION_MODE
            ),
        }
    }
}

/// Applies Istio's sidecar filters in order; the first that matches wins.
pub fn decide(pod: &PodInfo) -> Decision {
    use Decision::Skip;
    if pod.has_container(INIT_CONTAINER) {
        return Skip(SkipReason::HasIstioInit);
    }
    let proxy = pod.proxy.as_ref();
    let disabled = proxy
        .and_then(|p| p.env.get("DISABLE_ENVOY"))
        .and_then(|v| parse_go_bool(v));
    if disabled == Some(true) {
        return Skip(SkipReason::ProxyDisabled);
    }
    let Some(proxy) = proxy else {
        return Skip(SkipReason::NoSidecar);
    };
    if let Some(kind) = proxy.proxy_type()
        && !kind.is_empty()
        && kind != "sidecar"
    {
        return Skip(SkipReason::NotSidecarProxy {
            proxy_type: kind.to_string(),
        });
    }
    let inject = match pod.labels.get(INJECT_KEY) {
        Some(v) => Some((InjectSource::Label, v)),
        None => pod.annotations.get(INJECT_KEY).map(|v| (InjectSource::Annotation, v)),
    };
    if let Some((source, value)) = inject
        && parse_go_bool(value) == Some(false)
    {
        return Skip(SkipReason::InjectionDisabled {
            source,
            value: value.clone(),
        });
    }
    if !pod.annotations.contains_key(STATUS_ANNOTATION) {
        return Skip(SkipReason::NotInjected);
    }
    if pod.annotations.get(keys::INTERCEPTION_MODE).map(String::as_str) == Some("NONE") {
        return Skip(SkipReason::InterceptionNone);
    }
    Decision::Redirect
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::ProxyContainer;

    fn injected() -> PodInfo {
        PodInfo {
            name: "app".into(),
            namespace: "default".into(),
            containers: vec!["istio-validation".into(), "app".into(), "istio-proxy".into()],
            annotations: [(STATUS_ANNOTATION.to_string(), "{}".to_string())].into(),
            proxy: Some(ProxyContainer {
                args: vec!["proxy".into(), "sidecar".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_injected_sidecar_pod_is_redirected() {
        assert_eq!(decide(&injected()), Decision::Redirect);
    }

    #[test]
    fn istio_init_wins_over_everything() {
        let mut pod = injected();
        pod.containers.push("istio-init".into());
        pod.annotations.clear();
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::HasIstioInit));
    }

    #[test]
    fn disable_envoy_uses_go_bools() {
        for (value, skipped) in [
            ("true", true),
            ("1", true),
            ("T", true),
            ("false", false),
            ("yes", false),
            ("", false),
        ] {
            let mut pod = injected();
            pod.proxy
                .as_mut()
                .unwrap()
                .env
                .insert("DISABLE_ENVOY".into(), value.into());
            assert_eq!(
                decide(&pod) == Decision::Skip(SkipReason::ProxyDisabled),
                skipped,
                "DISABLE_ENVOY={value:?}"
            );
        }
    }

    #[test]
    fn no_proxy_means_no_sidecar() {
        let mut pod = injected();
        pod.proxy = None;
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::NoSidecar));
    }

    #[test]
    fn gateways_are_not_sidecars() {
        let mut pod = injected();
        pod.proxy.as_mut().unwrap().args = vec!["proxy".into(), "router".into()];
        assert_eq!(
            decide(&pod),
            Decision::Skip(SkipReason::NotSidecarProxy {
                proxy_type: "router".into()
            })
        );
        // An empty type or no `proxy` verb is a sidecar.
        pod.proxy.as_mut().unwrap().args = vec!["proxy".into(), "".into()];
        assert_eq!(decide(&pod), Decision::Redirect);
        pod.proxy.as_mut().unwrap().args = vec!["router".into()];
        assert_eq!(decide(&pod), Decision::Redirect);
    }

    /// Whether `pod` is skipped because `source` disables injection.
    fn disabled_by(pod: &PodInfo, source: InjectSource) -> bool {
        matches!(decide(pod), Decision::Skip(SkipReason::InjectionDisabled { source: s, .. }) if s == source)
    }

    #[test]
    fn inject_label_beats_annotation() {
        let mut pod = injected();
        pod.annotations.insert(INJECT_KEY.into(), "false".into());
        assert!(disabled_by(&pod, InjectSource::Annotation), "{:?}", decide(&pod));
        pod.labels.insert(INJECT_KEY.into(), "true".into());
        assert_eq!(decide(&pod), Decision::Redirect);
        pod.labels.insert(INJECT_KEY.into(), "False".into());
        assert!(disabled_by(&pod, InjectSource::Label), "{:?}", decide(&pod));
        // Unparseable values do not skip.
        pod.labels.insert(INJECT_KEY.into(), "no".into());
        assert_eq!(decide(&pod), Decision::Redirect);
    }

    #[test]
    fn the_status_annotation_is_required_but_not_read() {
        let mut pod = injected();
        pod.annotations.remove(STATUS_ANNOTATION);
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::NotInjected));
        pod.annotations.insert(STATUS_ANNOTATION.into(), "garbage".into());
        assert_eq!(decide(&pod), Decision::Redirect);
    }

    #[test]
    fn interception_none_skips() {
        let mut pod = injected();
        pod.annotations.insert(keys::INTERCEPTION_MODE.into(), "NONE".into());
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::InterceptionNone));
    }

    #[test]
    fn filters_apply_in_istios_order() {
        // Disabled envoy is reported before a missing status annotation.
        let mut pod = injected();
        pod.annotations.clear();
        pod.proxy
            .as_mut()
            .unwrap()
            .env
            .insert("DISABLE_ENVOY".into(), "true".into());
        assert_eq!(decide(&pod), Decision::Skip(SkipReason::ProxyDisabled));
    }
}
