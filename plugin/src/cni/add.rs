//! The ADD flow for sidecar pods (docs/plugin.md#add-flow, with
//! the namespace exclusion moved before any API access): who is skipped,
//! the pod lookup with bounded retries, the skip decision and redirect from
//! the engine, and programming the pod's netns. API access and programming
//! sit behind traits so the flow is tested without a cluster.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::args::K8sArgs;
use super::config::NetConf;
use super::error::{CniError, Code};
use super::skel::Request;
use crate::pod::{Decision, PodInfo, decide};
use crate::program::{Backend, ProgramError, Programmed};
use crate::redirect::Redirect;

/// Pods of the node agent's DaemonSet are never touched.
pub const AGENT_POD_PREFIX: &str = "istio-cni-node-";

/// A failed pod lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub message: String,
}

/// Reads pods from the Kubernetes API.
pub trait PodApi {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError>;
}

/// A node-local copy of the pods (the agent's watch cache), asked before
/// the API server. A miss is never an error: the API is asked instead.
pub trait PodCache {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, String>;
}

/// No cache: every lookup goes to the API server.
pub struct NoCache;

impl PodCache for NoCache {
    fn get_pod(&self, _: &str, _: &str) -> Result<Pod, String> {
        Err("no node-local pod cache".into())
    }
}

/// Programs a pod netns (the real one is [`crate::program::program`]).
pub trait Programmer {
    fn program(&self, netns: &Path, redirect: &Redirect, backend: Backend) -> Result<Programmed, ProgramError>;
}

/// How hard to try the API: `attempts` GETs, `retry_delay` apart, each bounded
/// by `request_timeout` (enforced by the [`PodApi`]). The defaults bound the
/// lookup to about 25 s, well inside kubelet's 2-minute sandbox timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    pub attempts: u32,
    pub retry_delay: Duration,
    pub request_timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            attempts: 10,
            retry_delay: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// What ADD did for the pod, for the log line and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    OwnAgentPod,
    NotKubernetesPod,
    ExcludedNamespace(String),
    Skipped(String),
    Programmed { applied: bool },
}

/// Runs ADD for one sandbox: decide, look up the pod, program its netns.
/// Errors fail the sandbox (fail closed) and name the pod and the cause.
pub fn cmd_add(
    request: &Request,
    conf: &NetConf,
    cache: &dyn PodCache,
    api: &dyn Fn() -> Result<Box<dyn PodApi>, CniError>,
    programmer: &dyn Programmer,
    policy: FetchPolicy,
    sleep: &dyn Fn(Duration),
) -> Result<AddOutcome, CniError> {
    let args = request.k8s_args()?;
    let (ns, name) = (args.pod_namespace.as_str(), args.pod_name.as_str());
    if is_agent_pod(name, ns, conf) {
        return Ok(AddOutcome::OwnAgentPod);
    }
    if name.is_empty() || ns.is_empty() {
        return Ok(AddOutcome::NotKubernetesPod);
    }
    // Before any API access: kube-system pods must start even while the
    // kubeconfig is missing (the agent may not have written it yet).
    if conf.exclude_namespaces.iter().any(|e| e == ns) {
        return Ok(AddOutcome::ExcludedNamespace(ns.to_string()));
    }
    let pod = match cached(cache, &args) {
        Some(pod) => pod,
        None => fetch_pod(api()?.as_ref(), ns, name, policy, sleep)?,
    };
    let info = PodInfo::from_pod(&pod);
    if let Decision::Skip(reason) = decide(&info) {
        return Ok(AddOutcome::Skipped(reason.to_string()));
    }
    let redirect =
        Redirect::from_pod(&info).map_err(|e| CniError::new(Code::Internal, format!("pod {ns}/{name}: {e}")))?;
    for warning in &redirect.warnings {
        tracing::warn!(pod = %format!("{ns}/{name}"), "{warning}");
    }
    let netns = request.netns.as_deref().unwrap_or_default();
    let backend = if conf.native_nftables {
        Backend::Nftables
    } else {
        Backend::Iptables
    };
    let programmed = programmer.program(Path::new(netns), &redirect, backend).map_err(|e| {
        let err = CniError::new(Code::Internal, format!("pod {ns}/{name}: {e}"));
        match e.stderr() {
            Some(stderr) => err.with_details(stderr.trim().to_string()),
            None => err,
        }
    })?;
    Ok(AddOutcome::Programmed {
        applied: programmed.applied,
    })
}

fn is_agent_pod(name: &str, ns: &str, conf: &NetConf) -> bool {
    name.starts_with(AGENT_POD_PREFIX) && ns == conf.pod_namespace
}

/// The cache's copy of the sandbox's pod: the same name, and the same uid
/// when the runtime sent one (a pod deleted and created again under its
/// name is another pod; the API decides then).
fn cached(cache: &dyn PodCache, args: &K8sArgs) -> Option<Pod> {
    let (ns, name) = (args.pod_namespace.as_str(), args.pod_name.as_str());
    let pod = match cache.get_pod(ns, name) {
        Ok(pod) => pod,
        Err(why) => {
            tracing::debug!(pod = %format!("{ns}/{name}"), "not from the node agent's cache: {why}");
            return None;
        }
    };
    let meta = &pod.metadata;
    let same_name = meta.name.as_deref() == Some(name) && meta.namespace.as_deref() == Some(ns);
    let same_uid = args.pod_uid.is_empty() || meta.uid.as_deref() == Some(args.pod_uid.as_str());
    if same_name && same_uid {
        tracing::debug!(pod = %format!("{ns}/{name}"), "pod read from the node agent's cache");
        return Some(pod);
    }
    tracing::debug!(
        pod = %format!("{ns}/{name}"),
        "the node agent's cache holds {}/{} uid {}, not this sandbox's pod (uid {}); asking the API",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
        args.pod_uid,
    );
    None
}

fn fetch_pod(
    api: &dyn PodApi,
    ns: &str,
    name: &str,
    policy: FetchPolicy,
    sleep: &dyn Fn(Duration),
) -> Result<Pod, CniError> {
    let mut last = None;
    for attempt in 1..=policy.attempts.max(1) {
        match api.get_pod(ns, name) {
            Ok(pod) => return Ok(pod),
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), attempt, "getting the pod failed: {}", e.message);
                last = Some(e);
            }
        }
        if attempt < policy.attempts {
            sleep(policy.retry_delay);
        }
    }
    let cause = last.map(|e| e.message).unwrap_or_default();
    Err(CniError::new(
        Code::TryAgainLater,
        format!(
            "pod {ns}/{name}: cannot read it from the Kubernetes API after {} attempts: {cause}",
            policy.attempts
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::skel::Command;
    use serde_json::json;
    use std::cell::{Cell, RefCell};

    struct Api {
        pod: Option<Pod>,
        failures_first: Cell<u32>,
        calls: Cell<u32>,
    }

    impl PodApi for Api {
        fn get_pod(&self, _: &str, _: &str) -> Result<Pod, ApiError> {
            self.calls.set(self.calls.get() + 1);
            if self.failures_first.get() > 0 {
                self.failures_first.set(self.failures_first.get() - 1);
                return Err(ApiError {
                    message: "connection refused".into(),
                });
            }
            self.pod.clone().ok_or(ApiError {
                message: "pods \"web\" not found".into(),
            })
        }
    }

    #[derive(Default)]
    struct Recorder(RefCell<Vec<(String, Backend)>>);

    impl Programmer for Recorder {
        fn program(&self, netns: &Path, _: &Redirect, backend: Backend) -> Result<Programmed, ProgramError> {
            self.0.borrow_mut().push((netns.display().to_string(), backend));
            Err(ProgramError::Config(crate::capture::CaptureError::LoopbackCidr {
                value: "x".into(),
                reason: "test".into(),
            }))
        }
    }

    fn request(pod: &str, ns: &str) -> Request {
        Request {
            command: Command::Add,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/cni-1".into()),
            ifname: "eth0".into(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID=c1"),
            path: "/opt/cni/bin".into(),
            netns_override: false,
        }
    }

    fn conf(extra: serde_json::Value) -> NetConf {
        let mut v = json!({"cniVersion": "1.0.0", "name": "net", "type": "istio-cni", "exclude_namespaces": ["kube-system"], "pod_namespace": "istio-system"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    fn meshed(annotations: serde_json::Value) -> Pod {
        let mut ann = json!({"sidecar.istio.io/status": "{}"});
        ann.as_object_mut()
            .unwrap()
            .extend(annotations.as_object().unwrap().clone());
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default", "annotations": ann},
            "spec": {"containers": [{"name": "web"}, {"name": "istio-proxy", "args": ["proxy", "sidecar"]}]}}),
        )
        .unwrap()
    }

    fn run(req: &Request, conf: &NetConf, api: Option<Api>, rec: &Recorder) -> Result<AddOutcome, CniError> {
        run_cached(req, conf, &NoCache, api, rec)
    }

    fn run_cached(
        req: &Request,
        conf: &NetConf,
        cache: &dyn PodCache,
        api: Option<Api>,
        rec: &Recorder,
    ) -> Result<AddOutcome, CniError> {
        let api = RefCell::new(api);
        let factory = || -> Result<Box<dyn PodApi>, CniError> {
            api.borrow_mut()
                .take()
                .map(|a| Box::new(a) as Box<dyn PodApi>)
                .ok_or_else(|| {
                    CniError::new(
                        Code::Internal,
                        "kubeconfig /var/run/istio-cni/istio-cni-kubeconfig: not found",
                    )
                })
        };
        let policy = FetchPolicy {
            attempts: 3,
            retry_delay: Duration::from_millis(1),
            request_timeout: Duration::from_secs(1),
        };
        cmd_add(req, conf, cache, &factory, rec, policy, &|_| {})
    }

    fn api(pod: Option<Pod>) -> Api {
        Api {
            pod,
            failures_first: Cell::new(0),
            calls: Cell::new(0),
        }
    }

    #[test]
    fn the_agent_pod_and_excluded_namespaces_need_no_api_at_all() {
        let rec = Recorder::default();
        // No API available (kubeconfig missing): these still succeed.
        assert_eq!(
            run(
                &request("istio-cni-node-x7k", "istio-system"),
                &conf(json!({})),
                None,
                &rec
            )
            .unwrap(),
            AddOutcome::OwnAgentPod
        );
        assert_eq!(
            run(&request("coredns-1", "kube-system"), &conf(json!({})), None, &rec).unwrap(),
            AddOutcome::ExcludedNamespace("kube-system".into())
        );
        // An agent-looking name elsewhere is an ordinary pod.
        let e = run(&request("istio-cni-node-x7k", "default"), &conf(json!({})), None, &rec).unwrap_err();
        assert!(e.msg.contains("kubeconfig"), "{e}");
        assert!(rec.0.borrow().is_empty());
    }

    #[test]
    fn pods_without_kubernetes_args_are_left_alone() {
        let mut req = request("web", "default");
        req.args = "IgnoreUnknown=1".into();
        assert_eq!(
            run(&req, &conf(json!({})), None, &Recorder::default()).unwrap(),
            AddOutcome::NotKubernetesPod
        );
    }

    #[test]
    fn skipped_pods_are_not_programmed() {
        let rec = Recorder::default();
        let mut plain = meshed(json!({}));
        plain.metadata.annotations = None;
        let out = run(
            &request("web", "default"),
            &conf(json!({})),
            Some(api(Some(plain))),
            &rec,
        )
        .unwrap();
        assert!(matches!(out, AddOutcome::Skipped(reason) if reason.contains("sidecar.istio.io/status")));
        assert!(rec.0.borrow().is_empty());
    }

    #[test]
    fn meshed_pods_are_programmed_with_the_configured_backend() {
        for (extra, backend) in [
            (json!({}), Backend::Iptables),
            (json!({"native_nftables": true}), Backend::Nftables),
        ] {
            let rec = Recorder::default();
            let e = run(
                &request("web", "default"),
                &conf(extra),
                Some(api(Some(meshed(json!({}))))),
                &rec,
            )
            .unwrap_err();
            assert_eq!(*rec.0.borrow(), vec![("/var/run/netns/cni-1".to_string(), backend)]);
            // Programming errors fail the sandbox and name the pod.
            assert!(e.msg.starts_with("pod default/web: build capture config"), "{e}");
        }
    }

    #[test]
    fn invalid_annotations_fail_the_sandbox_before_programming() {
        let rec = Recorder::default();
        let pod = meshed(json!({"traffic.sidecar.istio.io/excludeOutboundPorts": "*"}));
        let e = run(&request("web", "default"), &conf(json!({})), Some(api(Some(pod))), &rec).unwrap_err();
        assert!(
            e.msg.contains("pod default/web") && e.msg.contains("excludeOutboundPorts"),
            "{e}"
        );
        assert!(rec.0.borrow().is_empty(), "never half-applied");
    }

    #[test]
    fn a_negative_proxy_uid_fails_the_sandbox_before_programming() {
        let rec = Recorder::default();
        let mut pod = meshed(json!({}));
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[1].security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            run_as_user: Some(-5),
            ..Default::default()
        });
        let e = run(&request("web", "default"), &conf(json!({})), Some(api(Some(pod))), &rec).unwrap_err();
        assert_eq!(
            e.msg,
            "pod default/web: istio-proxy container securityContext.runAsUser: invalid value \"-5\": must be between 0 and 2147483647"
        );
        assert!(rec.0.borrow().is_empty(), "no rules for a bad uid");
    }

    #[test]
    fn invalid_pod_names_never_reach_the_api() {
        for args in [
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web?x",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web#frag",
            "K8S_POD_NAMESPACE=de/fault;K8S_POD_NAME=web",
            // Even where the namespace would be excluded: the value is garbage.
            "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=Web",
        ] {
            let mut req = request("web", "default");
            req.args = format!("IgnoreUnknown=1;{args}");
            let calls = api(Some(meshed(json!({}))));
            let e = run(&req, &conf(json!({})), Some(calls), &Recorder::default()).unwrap_err();
            assert_eq!(e.code, 4, "{args}: {e}");
            assert!(e.msg.contains("is not a valid Kubernetes name"), "{args}: {e}");
        }
    }

    #[test]
    fn api_errors_are_retried_then_fail_closed() {
        let rec = Recorder::default();
        let flaky = Api {
            pod: Some(meshed(json!({}))),
            failures_first: Cell::new(2),
            calls: Cell::new(0),
        };
        let _ = run(&request("web", "default"), &conf(json!({})), Some(flaky), &rec);
        assert_eq!(rec.0.borrow().len(), 1, "succeeded on the third attempt");

        let down = Api {
            pod: Some(meshed(json!({}))),
            failures_first: Cell::new(99),
            calls: Cell::new(0),
        };
        let e = run(&request("web", "default"), &conf(json!({})), Some(down), &rec).unwrap_err();
        assert_eq!(e.code, 11);
        assert!(
            e.msg.contains("pod default/web")
                && e.msg.contains("after 3 attempts")
                && e.msg.contains("connection refused"),
            "{e}"
        );
    }

    /// A cache holding one pod, counting its lookups.
    struct Cache(Option<Pod>, Cell<u32>);

    impl PodCache for Cache {
        fn get_pod(&self, _: &str, _: &str) -> Result<Pod, String> {
            self.1.set(self.1.get() + 1);
            self.0
                .clone()
                .ok_or_else(|| "pods.sock: connect: No such file or directory".into())
        }
    }

    fn with_uid(mut pod: Pod, uid: &str) -> Pod {
        pod.metadata.uid = Some(uid.into());
        pod
    }

    /// A pod without a sidecar (so ADD skips it) with `uid`, and a sandbox
    /// request for it naming that uid.
    fn plain_sandbox(uid: &str) -> (Pod, Request) {
        let mut plain = with_uid(meshed(json!({})), uid);
        plain.metadata.annotations = None;
        let mut req = request("web", "default");
        req.args.push_str(&format!(";K8S_POD_UID={uid}"));
        (plain, req)
    }

    #[test]
    fn a_cache_hit_needs_no_api() {
        let (plain, req) = plain_sandbox("u-1");
        let cache = Cache(Some(plain), Cell::new(0));
        // No API available at all: the kubeconfig is never read.
        let out = run_cached(&req, &conf(json!({})), &cache, None, &Recorder::default()).unwrap();
        assert!(matches!(out, AddOutcome::Skipped(_)), "{out:?}");
        assert_eq!(cache.1.get(), 1);

        // A runtime that sends no uid: the name decides.
        let rec = Recorder::default();
        let cache = Cache(Some(with_uid(meshed(json!({})), "u-1")), Cell::new(0));
        let _ = run_cached(&request("web", "default"), &conf(json!({})), &cache, None, &rec);
        assert_eq!(rec.0.borrow().len(), 1, "programmed from the cached pod");
    }

    #[test]
    fn a_miss_or_another_pod_in_the_cache_goes_to_the_api() {
        let (plain, req) = plain_sandbox("u-new");
        let mut renamed = with_uid(meshed(json!({})), "u-new");
        renamed.metadata.name = Some("other".into());
        for cache in [
            Cache(None, Cell::new(0)),
            // The pod was deleted and created again: the cache has the old one.
            Cache(Some(with_uid(meshed(json!({})), "u-old")), Cell::new(0)),
            Cache(Some(renamed), Cell::new(0)),
        ] {
            let api = api(Some(plain.clone()));
            let rec = Recorder::default();
            let out = run_cached(&req, &conf(json!({})), &cache, Some(api), &rec).unwrap();
            // The API's copy (not meshed) decided, not the cache's (meshed).
            assert!(matches!(out, AddOutcome::Skipped(_)), "{out:?}");
            assert!(rec.0.borrow().is_empty());
            assert_eq!(cache.1.get(), 1);
        }
        // And a miss with the API down fails closed as before.
        let e = run_cached(
            &req,
            &conf(json!({})),
            &Cache(None, Cell::new(0)),
            None,
            &Recorder::default(),
        )
        .unwrap_err();
        assert!(e.msg.contains("kubeconfig"), "{e}");
    }

    #[test]
    fn excluded_pods_never_ask_the_cache() {
        let cache = Cache(None, Cell::new(0));
        let out = run_cached(
            &request("coredns-1", "kube-system"),
            &conf(json!({})),
            &cache,
            None,
            &Recorder::default(),
        )
        .unwrap();
        assert_eq!(out, AddOutcome::ExcludedNamespace("kube-system".into()));
        assert_eq!(cache.1.get(), 0);
    }
}
