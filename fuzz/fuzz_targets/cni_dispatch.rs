#![no_main]
//! One CNI invocation as the runtime makes it: `CNI_*` variables, `CNI_ARGS`
//! and the config on stdin, through the plugin's own request parsing and
//! `dispatch`, with the real ADD flow behind a handler that does no I/O (the
//! API returns a fixed injected pod; programming only renders the rules).
//!
//! Input: `KEY=VALUE` lines (the environment), an empty line, then stdin.
//! Without an empty line everything is environment and stdin is empty.
//!
//! Invariants: no panic; the reply is exit 0 or 1; every error reply is a
//! CNI error document (cniVersion, numeric code, non-empty msg); VERSION
//! answers the supported versions; ADD prints the result in the config's
//! version, and that result reads back and prints identically in every
//! version of its family; DEL, CHECK, GC and STATUS print nothing on success.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use istio_cni::capture::{CaptureConfig, NodeEnv};
use istio_cni::cni::add::{ApiError, FetchPolicy, NoCache, PodApi, Programmer, cmd_add};
use istio_cni::cni::args;
use istio_cni::cni::config::NetConf;
use istio_cni::cni::error::{CniError, Code};
use istio_cni::cni::result::CniResult;
use istio_cni::cni::skel::{Command, Handler, Request, dispatch};
use istio_cni::cni::version::{CURRENT, Family, SUPPORTED};
use istio_cni::nftables::apply::{Method, NftReport};
use istio_cni::program::{Applied, Backend, Payload, ProgramError, Programmed, RouteReport};
use istio_cni::redirect::Redirect;
use istio_cni::{iptables, nftables};
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let (env, stdin) = split(data);
    let lookup = |k: &str| env.get(k).cloned();
    // The CNI_ARGS grammar on its own: any string, an answer, code 4 on error.
    if let Some(raw) = env.get("CNI_ARGS")
        && let Err(e) = args::parse(raw)
    {
        assert_eq!(e.code, Code::InvalidEnvironment as u32, "{e}");
    }
    let request = match Request::from_env(lookup) {
        Ok(Some(request)) => request,
        Ok(None) => return, // no CNI_COMMAND: the binary runs its CLI instead
        Err(e) => {
            // The binary prints this document and exits 1.
            check_error_document(&e.to_json(CURRENT));
            return;
        }
    };
    let reply = dispatch(&request, stdin, &mut NoIo);
    match reply.exit_code {
        1 => check_error_document(&reply.stdout),
        0 => check_success(&request, stdin, &reply.stdout),
        other => panic!("exit code {other}: {}", reply.stdout),
    }
});

/// The environment lines and stdin. Lines that are not UTF-8 or have no `=`
/// are left out, as `std::env::var` would not return them.
fn split(data: &[u8]) -> (HashMap<String, String>, &[u8]) {
    let (head, stdin) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &data[data.len()..]),
    };
    let env = head
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (env, stdin)
}

fn check_error_document(stdout: &str) {
    let doc: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("error reply is not JSON ({e}): {stdout}"));
    let obj = doc
        .as_object()
        .unwrap_or_else(|| panic!("error reply is not an object: {stdout}"));
    let version = obj.get("cniVersion").and_then(Value::as_str);
    assert!(
        version.is_some_and(|v| SUPPORTED.contains(&v)),
        "error reply needs a supported cniVersion: {stdout}"
    );
    let code = obj.get("code").and_then(Value::as_u64);
    assert!(
        code.is_some_and(|c| c > 0),
        "error reply needs a non-zero code: {stdout}"
    );
    let msg = obj.get("msg").and_then(Value::as_str);
    assert!(msg.is_some_and(|m| !m.is_empty()), "error reply needs a msg: {stdout}");
    if let Some(details) = obj.get("details") {
        assert!(details.is_string(), "details must be a string: {stdout}");
    }
    for key in obj.keys() {
        assert!(
            ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
            "unexpected key {key:?} in the error reply: {stdout}"
        );
    }
}

fn check_success(request: &Request, stdin: &[u8], stdout: &str) {
    if request.command == Command::Version {
        let doc: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("VERSION reply ({e}): {stdout}"));
        assert_eq!(doc["cniVersion"], CURRENT, "{stdout}");
        assert_eq!(doc["supportedVersions"], json!(SUPPORTED), "{stdout}");
        return;
    }
    // Any other success needed a config that parses.
    let conf = NetConf::parse(stdin).unwrap_or_else(|e| panic!("success with an unparseable config: {e}"));
    if request.command != Command::Add {
        assert_eq!(stdout, "", "{:?} prints nothing", request.command);
        return;
    }
    let version = conf.cni_version.as_str();
    let family = Family::of(version).unwrap_or_else(|| panic!("ADD succeeded with cniVersion {version:?}"));
    let doc: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("ADD result is not JSON ({e}): {stdout}"));
    assert_eq!(
        doc["cniVersion"], version,
        "the result takes the config's version: {stdout}"
    );
    // The printed result is a fixed point, in every version of its family.
    let raw = RawValue::from_string(stdout.to_string()).unwrap_or_else(|e| panic!("ADD result ({e}): {stdout}"));
    let result = CniResult::decode(&raw, version).unwrap_or_else(|e| panic!("ADD result does not read back: {e}"));
    assert_eq!(result.print(version), stdout, "re-printing the result changed it");
    for other in family.versions() {
        let printed = result.print(other);
        let value = RawValue::from_string(printed.clone()).unwrap_or_else(|e| panic!("{other} ({e}): {printed}"));
        let again = CniResult::decode(&value, other).unwrap_or_else(|e| panic!("{other} does not read back: {e}"));
        assert_eq!(again.print(other), printed, "{other}: the conversion is not stable");
        assert_eq!(again.addresses(), result.addresses(), "{other}: addresses changed");
    }
}

/// The plugin's ADD flow with the API and the netns replaced.
struct NoIo;

impl Handler for NoIo {
    fn add(&mut self, request: &Request, conf: &NetConf, _prev: Option<&CniResult>) -> Result<(), CniError> {
        let api = || -> Result<Box<dyn PodApi>, CniError> { Ok(Box::new(FixedPod)) };
        let policy = FetchPolicy {
            attempts: 2,
            retry_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(1),
        };
        cmd_add(request, conf, &NoCache, &api, &RenderOnly, policy, &|_| {}).map(|_| ())
    }

    fn status(&mut self, conf: &NetConf) -> Result<(), CniError> {
        // Ready or not, decided by the input so both replies are reached.
        if conf.name.len().is_multiple_of(2) {
            Ok(())
        } else {
            Err(CniError::new(
                Code::NotAvailable,
                "the istio-cni node agent is not ready",
            ))
        }
    }

    fn is_own_netns(&self, netns: &str) -> bool {
        netns == "/proc/self/ns/net"
    }
}

/// The API: an injected sidecar pod by any name, except `missing`.
struct FixedPod;

impl PodApi for FixedPod {
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        if name == "missing" {
            return Err(ApiError {
                message: format!("pods {name:?} not found"),
            });
        }
        let pod = json!({
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {
                    "sidecar.istio.io/status": "{\"initContainers\":[\"istio-validation\"],\"containers\":[\"istio-proxy\"]}",
                    "traffic.sidecar.istio.io/excludeInboundPorts": "15020",
                    "traffic.sidecar.istio.io/includeOutboundIPRanges": "*"
                }
            },
            "spec": {"containers": [
                {"name": "app"},
                {"name": "istio-proxy", "args": ["proxy", "sidecar"], "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}
            ]}
        });
        serde_json::from_value(pod).map_err(|e| ApiError { message: e.to_string() })
    }
}

/// Programming that only renders: the rules for the redirect, no netns.
struct RenderOnly;

impl Programmer for RenderOnly {
    fn program(&self, _netns: &Path, redirect: &Redirect, backend: Backend) -> Result<Programmed, ProgramError> {
        let cfg = CaptureConfig::new(redirect, &NodeEnv::default(), false)?;
        let payload = match backend {
            Backend::Iptables => Payload::Iptables(iptables::render(&cfg)),
            Backend::Nftables => Payload::Nftables(nftables::render(&cfg)),
        };
        Ok(Programmed {
            backend,
            binary: "none (fuzz)".into(),
            enable_ipv6: false,
            applied: true,
            payload,
            // ADD reads only `applied`.
            outcome: Applied::Nftables(NftReport {
                method: Method::Netlink { messages: 0 },
                applied: true,
            }),
            routes: RouteReport::default(),
        })
    }
}
