//! `istio-cni render` as a user runs it: the binary, its output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn render(args: &[&str], stdin: &str) -> Output {
    render_in(&[], args, stdin)
}

/// `istio-cni render ARGS` fed `stdin`, on a node whose environment sets
/// only `env` of the variables that shape the rules.
fn render_in(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_istio-cni"))
        .arg("render")
        .args(args)
        .env_remove("ISTIO_OUTBOUND_OWNER_GROUPS")
        .env_remove("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")
        .env_remove("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The rules printed by a successful render.
fn rendered(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out)
}

/// Exit code 2 (bad input) with `expected` in the error; `what` names the input.
fn assert_refused(out: &Output, expected: &str, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}");
    assert!(stderr(out).contains(expected), "{what}: {}", stderr(out));
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

const MESHED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {sidecar.istio.io/status: "{}"}
spec:
  containers:
  - {name: web, image: nginx}
  - {name: istio-proxy, image: proxyv2, args: [proxy, sidecar]}
"#;

#[test]
fn a_single_pod_prints_exactly_the_restore_payload() {
    let out = render(&["-f", &fixture("istio-plugin/basic.yaml")], "");
    let text = rendered(&out);
    assert!(text.starts_with("* nat\n-N ISTIO_INBOUND\n"), "{text}");
    assert!(text.ends_with("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n"), "{text}");
    assert!(!text.contains('#'), "no headers for one IPv4 pod: {text}");
}

#[test]
fn stdin_and_ipv6_and_nftables() {
    let v6 = render(&["-f", "-", "--ipv6"], MESHED_POD);
    let text = rendered(&v6);
    assert!(text.contains("# iptables-restore (IPv4)\n* nat\n"), "{text}");
    assert!(text.contains("# ip6tables-restore (IPv6)\n* nat\n"), "{text}");
    assert!(text.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"), "{text}");

    let nft = render(&["-f", "-", "--backend", "nftables"], MESHED_POD);
    let text = rendered(&nft);
    assert!(text.starts_with("add table inet istio-proxy-nat\nflush table inet istio-proxy-nat\n"));
}

#[test]
fn several_documents_get_a_header_each_and_skips_say_why() {
    let manifest = format!(
        "{MESHED_POD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: plain}}\nspec:\n  template:\n    spec:\n      containers: [{{name: app, image: app}}]\n---\n"
    );
    let out = render(&["-f", "-"], &manifest);
    let text = rendered(&out);
    assert!(text.starts_with("# Pod/web\n* nat\n"), "{text}");
    assert!(
        text.ends_with("# Deployment/plain\n# skip: pod has no istio-proxy container\n"),
        "{text}"
    );
}

#[test]
fn every_workload_kind_with_a_pod_template_is_read() {
    let template = "metadata:\n      annotations: {sidecar.istio.io/status: '{}', traffic.sidecar.istio.io/includeInboundPorts: '8080'}\n    spec:\n      containers: [{name: istio-proxy, image: proxyv2}]";
    let mut manifest = String::new();
    for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"] {
        manifest.push_str(&format!(
            "---\nkind: {kind}\nmetadata: {{name: w}}\nspec:\n  template:\n    {template}\n"
        ));
    }
    let cron_template = template.replace("\n    ", "\n        ");
    manifest.push_str(&format!(
        "---\nkind: CronJob\nmetadata: {{name: w}}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        {cron_template}\n"
    ));
    let out = render(&["-f", "-"], &manifest);
    let text = rendered(&out);
    for kind in ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"] {
        let block = text
            .split(&format!("# {kind}/w\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {kind} block in {text}"));
        assert!(block.starts_with("* nat\n"), "{kind}: {block}");
    }
    assert_eq!(
        text.matches("-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT")
            .count(),
        6
    );
}

#[test]
fn json_lists_are_read() {
    let pod: serde_json::Value = serde_yaml::from_str(MESHED_POD).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [pod.clone(), pod]});
    let out = render(&["-f", "-"], &list.to_string());
    let text = rendered(&out);
    assert_eq!(text.matches("# Pod/web\n* nat\n").count(), 2);
}

#[test]
fn an_invalid_annotation_exits_2_with_one_line_and_no_rules() {
    let bad = MESHED_POD.replace(
        "annotations: {",
        "annotations: {traffic.sidecar.istio.io/excludeOutboundPorts: '443,*', ",
    );
    // One good pod first: nothing may be printed when any pod is invalid.
    let out = render(&["-f", "-"], &format!("{MESHED_POD}---\n{bad}"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "", "no partial output");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("Pod/web")
            && err.contains("traffic.sidecar.istio.io/excludeOutboundPorts")
            && err.contains("\"443,*\""),
        "{err}"
    );
}

#[test]
fn proxy_ids_outside_kubernetes_range_exit_2_naming_the_field() {
    let cases = [
        ("runAsUser: -5", "securityContext.runAsUser: invalid value \"-5\""),
        ("runAsGroup: -1", "securityContext.runAsGroup: invalid value \"-1\""),
        (
            "runAsUser: 4294967296",
            "securityContext.runAsUser: invalid value \"4294967296\"",
        ),
        (
            "runAsUser: 2147483648",
            "securityContext.runAsUser: invalid value \"2147483648\"",
        ),
    ];
    for (field, expected) in cases {
        let pod = MESHED_POD.replace(
            "args: [proxy, sidecar]",
            &format!("args: [proxy, sidecar], securityContext: {{{field}}}"),
        );
        assert_ne!(pod, MESHED_POD);
        let out = render(&["-f", "-"], &pod);
        assert_eq!(out.status.code(), Some(2), "{field}: {}", stdout(&out));
        assert_eq!(stdout(&out), "", "{field}: no rules");
        let err = stderr(&out);
        assert!(
            err.contains("Pod/web: istio-proxy container ")
                && err.contains(expected)
                && err.contains("must be between 0 and 2147483647"),
            "{field}: {err}"
        );
    }
    let pod = MESHED_POD.replace(
        "args: [proxy, sidecar]",
        "args: [proxy, sidecar], securityContext: {runAsUser: 2147483647, runAsGroup: 5}",
    );
    let out = render(&["-f", "-"], &pod);
    let text = rendered(&out);
    assert!(text.contains("--uid-owner 2147483647"), "{text}");
    assert!(stdout(&out).contains("--gid-owner 5"), "{}", stdout(&out));
}

#[test]
fn bad_manifests_exit_2_naming_the_problem() {
    let cases = [
        ("kind: Service\nmetadata: {name: s}\n", "unsupported kind \"Service\""),
        ("metadata: {name: s}\n", "missing `kind`"),
        ("kind: Pod\nspec: [1, 2\n", "not valid YAML or JSON"),
        ("kind: Deployment\nmetadata: {name: d}\n", "missing the pod template"),
        ("", "no Kubernetes objects found"),
    ];
    for (manifest, expected) in cases {
        let out = render(&["-f", "-"], manifest);
        assert_refused(&out, expected, manifest);
    }
    let missing = render(&["-f", "/nonexistent/pod.yaml"], "");
    assert_refused(&missing, "cannot read /nonexistent/pod.yaml", "a missing file");
}

#[test]
fn node_environment_shapes_the_rules_like_the_plugin() {
    let basic = fixture("istio-plugin/basic.yaml");
    let out = render_in(
        &[
            ("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8"),
            ("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888"),
        ],
        &["-f", &basic],
        "",
    );
    let text = rendered(&out);
    assert!(text.contains("-A ISTIO_OUTPUT -d 127.0.0.1/8 -j RETURN"), "{text}");
    assert!(
        text.contains("-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN"),
        "{text}"
    );

    let bad = render_in(
        &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.1/8")],
        &["-f", &basic],
        "",
    );
    assert_refused(
        &bad,
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
        "a loopback CIDR not in 127/8",
    );
}

#[test]
fn help_and_version() {
    let help = Command::new(env!("CARGO_BIN_EXE_istio-cni"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = stdout(&help);
    assert!(text.contains("render") && text.contains("validate"), "{text}");
    let version = Command::new(env!("CARGO_BIN_EXE_istio-cni"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&version).trim(),
        format!("istio-cni {}", env!("CARGO_PKG_VERSION"))
    );
}
