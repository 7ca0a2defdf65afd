//! Whether the plugin redirects a pod's traffic, in Istio's exact filter order
//! (reference: istio-cni-plugin.md §2 step 11).

use std::fmt;

use super::{INIT_CONTAINER, PROXY_CONTAINER, PodInfo};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectSource {
    Label,
    Annotation,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::HasIstioInit => write!(
                f,
                "pod has an {INIT_CONTAINER} container (it programs its own rules)"
            ),
            SkipReason::ProxyDisabled => write!(f, "DISABLE_ENVOY is true on {PROXY_CONTAINER}"),
            SkipReason::NoSidecar => write!(f, "pod has no {PROXY_CONTAINER} container"),
            SkipReason::NotSidecarProxy { proxy_type } => write!(
                f,
                "{PROXY_CONTAINER} runs as proxy type {proxy_type:?}, not a sidecar"
            ),
            SkipReason::InjectionDisabled { source, value } => {
                let what = match source {
                    InjectSource::Label => "label",
                    InjectSource::Annotation => "annotation",
                };
                write!(f, "{what} {INJECT_KEY}={value:?} disables injection")
            }
            SkipReason::NotInjected => write!(f, "pod has no {STATUS_ANNOTATION} annotation"),
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
        None => pod
            .annotations
            .get(INJECT_KEY)
            .map(|v| (InjectSource::Annotation, v)),
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
    Decision::Redirect
}
