//! Shared helpers for the netns integration tests: privilege gate, throw-away
//! pinned network namespaces, pods from annotations, and (in [`net`]) a
//! pod/peer veth topology with fake proxy, app and peer servers.
#![allow(dead_code)]

pub mod net;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use istio_cni::pod::PodInfo;
use istio_cni::redirect::Redirect;
use k8s_openapi::api::core::v1::Pod;
use linux_ns::Netns;
use serde_json::json;

#[allow(unused_imports)] // not every suite uses each
pub use testkit::{Need, Scratch, gate};

/// The plugin as a container runtime calls it: only `PATH` and `env` in its
/// environment, stdin, stdout and stderr piped.
pub fn plugin_command<V: AsRef<OsStr>>(env: &[(&str, V)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_istio-cni"));
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// One `ADD` as the runtime sends it, for pod `default/web` in a netns that
/// does not exist, with `K8S_POD_UID` when `uid` is given and `conf` on stdin.
pub fn add_web_pod(conf: &serde_json::Value, uid: Option<&str>) -> Output {
    let mut args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web".to_string();
    if let Some(uid) = uid {
        args.push_str(&format!(";K8S_POD_UID={uid}"));
    }
    let mut child = plugin_command(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_NETNS", "/var/run/netns/does-not-exist"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args.as_str()),
    ])
    .spawn()
    .expect("spawn istio-cni");
    let _ = std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), conf.to_string().as_bytes());
    child.wait_with_output().expect("istio-cni")
}

/// What the netns tests need: root, `ip`, both iptables backends and `nft`.
pub const NETNS: &[Need] = &[
    Need::Root,
    Need::Tool("ip"),
    Need::Tool("iptables-legacy"),
    Need::Tool("iptables-nft"),
    Need::Tool("nft"),
];

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace pinned to a file in the temp dir (`linux-ns`),
/// unpinned on drop, even when the test panics. Names are unique per process
/// and call (`icni<pid>-<n>`), so tests can run in parallel threads and
/// processes.
#[derive(Debug)]
pub struct TestNetns {
    /// A short name for messages.
    pub name: String,
    /// The pin file (what `CNI_NETNS` and `ip ... netns <path>` take).
    pub path: PathBuf,
    ns: Netns,
}

impl TestNetns {
    /// Creates a fresh, empty netns with `lo` up.
    pub fn new() -> Self {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("icni{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(format!("istio-cni-netns-{name}"));
        let ns = Netns::create(&path).unwrap_or_else(|e| panic!("creating netns {name}: {e}"));
        let ns = Self { name, path, ns };
        ns.ip("link set lo up");
        ns
    }

    /// `ip <args>` inside the netns; panics with stderr on failure.
    pub fn ip(&self, args: &str) {
        let mut argv = vec!["ip"];
        argv.extend(args.split_whitespace());
        self.exec_ok(&argv);
    }

    /// Runs `argv` inside the netns, returning its output.
    pub fn exec(&self, argv: &[&str]) -> Output {
        self.ns
            .command(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {}: {e}", self.name))
    }

    /// Runs `argv` inside the netns and returns stdout; panics on failure.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        assert!(
            out.status.success(),
            "{argv:?} in {} failed ({}): {}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs a host command; panics with its stderr on failure.
pub fn run(argv: &[&str]) -> String {
    testkit::run_ok(Command::new(argv[0]).args(&argv[1..]))
}

/// What goes into a test pod: annotations, `istio-proxy` env and
/// securityContext. Every pod is injected (`sidecar.istio.io/status`).
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// Pod annotations (besides the status annotation).
    pub annotations: BTreeMap<String, String>,
    /// `istio-proxy` container env.
    pub env: BTreeMap<String, String>,
    /// `istio-proxy` securityContext runAsUser / runAsGroup.
    pub run_as: Option<(i64, i64)>,
}

impl PodSpec {
    /// Adds an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an `istio-proxy` env var.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets runAsUser/runAsGroup on `istio-proxy`.
    pub fn run_as(mut self, uid: i64, gid: i64) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    /// The Kubernetes object, built the way the API server would return it.
    pub fn pod(&self) -> Pod {
        let mut annotations = self.annotations.clone();
        annotations.insert("sidecar.istio.io/status".to_owned(), "{}".to_owned());
        let env: Vec<_> = self.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
        let security = match self.run_as {
            Some((uid, gid)) => json!({"runAsUser": uid, "runAsGroup": gid}),
            None => json!({}),
        };
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app-0", "namespace": "default", "annotations": annotations},
            "spec": {"containers": [
                {"name": "app", "image": "app"},
                {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"],
                 "env": env, "securityContext": security}
            ]}
        }))
        .expect("valid pod JSON")
    }

    /// The validated redirect for this pod.
    pub fn redirect(&self) -> Redirect {
        Redirect::from_pod(&PodInfo::from_pod(&self.pod())).expect("valid redirect")
    }
}
