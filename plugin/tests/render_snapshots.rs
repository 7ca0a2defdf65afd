//! The rules rendered for realistic injected pods under many annotation sets,
//! for iptables (IPv4, and IPv6 where the case says so) and nftables. Each
//! case is one reviewed insta snapshot named after it.

use istio_cni::capture::NodeEnv;
use istio_cni::cli::{Backend, RenderOptions, render_manifest};
use serde_json::{Value, json};

#[derive(Clone, Copy)]
enum Base {
    /// istio-proxy in containers (Istio ≤ 1.26 and clusters without native sidecars).
    Classic,
    /// istio-proxy as a native sidecar in initContainers (Istio ≥ 1.27 on k8s ≥ 1.33).
    Native,
}

struct Case {
    name: &'static str,
    base: Base,
    annotations: Vec<(&'static str, &'static str)>,
    labels: Vec<(&'static str, &'static str)>,
    env: Vec<(&'static str, &'static str)>,
    run_as: Option<(i64, i64)>,
    ipv6: bool,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        base: Base::Classic,
        annotations: vec![],
        labels: vec![],
        env: vec![],
        run_as: None,
        ipv6: false,
    }
}

impl Case {
    fn native(mut self) -> Self {
        self.base = Base::Native;
        self
    }
    fn ann(mut self, k: &'static str, v: &'static str) -> Self {
        self.annotations.push((k, v));
        self
    }
    fn label(mut self, k: &'static str, v: &'static str) -> Self {
        self.labels.push((k, v));
        self
    }
    fn env(mut self, k: &'static str, v: &'static str) -> Self {
        self.env.push((k, v));
        self
    }
    fn run_as(mut self, uid: i64, gid: i64) -> Self {
        self.run_as = Some((uid, gid));
        self
    }
    fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    fn manifest(&self) -> String {
        let text = match self.base {
            Base::Classic => testkit::fixtures::INJECTED_CLASSIC,
            Base::Native => testkit::fixtures::INJECTED_NATIVE,
        };
        let mut pod: Value = serde_yaml::from_str(text).unwrap();
        for (k, v) in &self.annotations {
            pod["metadata"]["annotations"][*k] = json!(v);
        }
        for (k, v) in &self.labels {
            pod["metadata"]["labels"][*k] = json!(v);
        }
        let list = match self.base {
            Base::Classic => "containers",
            Base::Native => "initContainers",
        };
        let proxy = pod["spec"][list]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == "istio-proxy")
            .unwrap();
        for (k, v) in &self.env {
            proxy["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": k, "value": v}));
        }
        if let Some((uid, gid)) = self.run_as {
            proxy["securityContext"]["runAsUser"] = json!(uid);
            proxy["securityContext"]["runAsGroup"] = json!(gid);
        }
        serde_json::to_string_pretty(&pod).unwrap()
    }

    fn render(&self) -> String {
        let manifest = self.manifest();
        let mut out = String::new();
        for (title, backend) in [("iptables", Backend::Iptables), ("nftables", Backend::Nftables)] {
            let opts = RenderOptions {
                ipv6: self.ipv6,
                backend,
                node: NodeEnv::default(),
            };
            let rules = render_manifest(&manifest, &opts).unwrap_or_else(|e| panic!("render failed: {e}"));
            out.push_str(&format!("## {title}\n{rules}"));
        }
        out
    }
}

const INCLUDE_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
const EXCLUDE_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
const INCLUDE_IN: &str = "traffic.sidecar.istio.io/includeInboundPorts";
const EXCLUDE_IN: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const INCLUDE_OUT: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
const EXCLUDE_OUT: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
const EXCLUDE_IF: &str = "traffic.sidecar.istio.io/excludeInterfaces";
const REROUTE: &str = "istio.io/reroute-virtual-interfaces";
const KUBEVIRT: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
const MODE: &str = "sidecar.istio.io/interceptionMode";
const DNS: &str = "ISTIO_META_DNS_CAPTURE";

#[rstest::rstest]
#[case(case("default-classic"))]
#[case(case("default-native-sidecar").native())]
#[case(case("include-outbound-ranges").ann(INCLUDE_RANGES, "10.0.0.0/8,172.16.0.0/12"))]
#[case(case("exclude-outbound-ranges").ann(EXCLUDE_RANGES, "10.96.0.0/12,169.254.169.254/32"))]
#[case(case("include-and-exclude-ranges").ann(INCLUDE_RANGES, "10.0.0.0/8").ann(EXCLUDE_RANGES, "10.96.0.1/32"))]
#[case(case("include-outbound-loopback").ann(INCLUDE_RANGES, "127.0.0.0/8"))]
#[case(case("no-outbound-ranges").ann(INCLUDE_RANGES, ""))]
#[case(case("include-inbound-ports").ann(INCLUDE_IN, "8080,9090"))]
#[case(case("no-inbound-capture").ann(INCLUDE_IN, ""))]
#[case(case("exclude-inbound-ports").ann(EXCLUDE_IN, "3306,15020"))]
#[case(case("include-outbound-ports").ann(INCLUDE_RANGES, "").ann(INCLUDE_OUT, "3306,5432"))]
#[case(case("exclude-outbound-ports").ann(EXCLUDE_OUT, "443,8443"))]
#[case(case("exclude-outbound-ports-empty").ann(EXCLUDE_OUT, ""))]
#[case(case("exclude-interfaces").ann(EXCLUDE_IF, "net1,net2"))]
#[case(case("reroute-virtual-interfaces").ann(REROUTE, "tap0,tap1"))]
#[case(case("kubevirt-interfaces-deprecated").ann(KUBEVIRT, "tap0"))]
#[case(case("reroute-with-include-ranges").ann(REROUTE, "tap0").ann(INCLUDE_RANGES, "10.0.0.0/8"))]
#[case(case("tproxy").ann(MODE, "TPROXY"))]
#[case(case("tproxy-include-inbound-ports").ann(MODE, "TPROXY").ann(INCLUDE_IN, "8080"))]
#[case(case("tproxy-no-inbound-capture").ann(MODE, "TPROXY").ann(INCLUDE_IN, ""))]
#[case(case("tproxy-exclude-interfaces").ann(MODE, "TPROXY").ann(EXCLUDE_IF, "net1"))]
#[case(case("dns-capture").env(DNS, "true"))]
#[case(case("dns-capture-ipv6").env(DNS, "true").ipv6())]
#[case(case("dns-capture-include-loopback").env(DNS, "true").ann(INCLUDE_RANGES, "127.0.0.0/8,10.0.0.0/8"))]
#[case(case("dns-capture-native-sidecar").native().env(DNS, "true"))]
#[case(case("custom-uid-gid").run_as(1000670000, 1000670001))]
#[case(case("custom-uid-tproxy").ann(MODE, "TPROXY").run_as(1000670000, 1000670001))]
#[case(case("uid-zero-falls-back-to-1337").run_as(0, 0))]
#[case(case("invalid-drop").env("INVALID_DROP", "true"))]
#[case(case("invalid-drop-tproxy").env("INVALID_DROP", "true").ann(MODE, "TPROXY"))]
#[case(case("ipv6-default").ipv6())]
#[case(case("ipv6-dual-stack-env").env("ISTIO_DUAL_STACK", "true").ipv6())]
#[case(case("ipv6-ranges").ann(INCLUDE_RANGES, "10.0.0.0/8,fd00::/8").ann(EXCLUDE_RANGES, "fd00:1::/64").ipv6())]
#[case(case("ipv6-tproxy").ann(MODE, "TPROXY").ipv6())]
#[case(case("ipv6-reroute-with-ranges").ann(REROUTE, "tap0").ann(INCLUDE_RANGES, "fd00::/8").ipv6())]
#[case(case("realistic-database-client").ann(EXCLUDE_RANGES, "10.96.0.1/32").ann(EXCLUDE_OUT, "5432").ann(EXCLUDE_IN, "9102").env(DNS, "true"))]
#[case(case("skip-inject-label-false").label("sidecar.istio.io/inject", "false"))]
#[case(case("skip-interception-none").ann(MODE, "NONE"))]
#[case(case("skip-disable-envoy").native().env("DISABLE_ENVOY", "true"))]
fn rendered_rules(#[case] case: Case) {
    insta::assert_snapshot!(case.name, case.render());
}
