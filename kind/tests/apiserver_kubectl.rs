//! The embedded API server against the real `kubectl`, through a kubeconfig
//! written by `ApiServer::write_kubeconfig`.

mod apiserver_support;

use std::sync::Arc;

use apiserver_support::{ServerKubectl, controllers, node, server};
use istio_cni_kind::apiserver::MemoryLogs;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::Value;
use testkit::Need;

const POD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: app
    image: nginx:1.27
    ports:
    - containerPort: 80
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_round_trip() {
    testkit::gate_or_return!(&[Need::Tool("kubectl")]);
    let s = server().await;
    let _controllers = controllers(&s).await;
    let logs = Arc::new(MemoryLogs::new());
    logs.set("default", "web", "app", "hello from web\nsecond line\n");
    s.set_log_source(logs);
    let client = s.client().await;
    let mut n = node("node-1");
    n.metadata.labels = Some([("node-role.kubernetes.io/control-plane".to_string(), String::new())].into());
    n.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
    let k = ServerKubectl::new(&s, &s.admin_token(), "admin");

    // Discovery and a Table for nodes.
    let out = k.ok(&["get", "nodes"]).await;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{out}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["node-1", "Ready", "control-plane"], "{out}");

    // apply (kubectl validates by default, through the server): create,
    // then no change, then a change.
    let manifest = k.dir.join("pod.yaml");
    std::fs::write(&manifest, POD_YAML).unwrap();
    let manifest = manifest.to_str().unwrap();
    assert_eq!(k.ok(&["apply", "-f", manifest]).await.trim(), "pod/web created");
    assert_eq!(k.ok(&["apply", "-f", manifest]).await.trim(), "pod/web unchanged");
    let changed = k.dir.join("pod2.yaml");
    std::fs::write(
        &changed,
        POD_YAML.replace("    app: web\n", "    app: web\n    tier: front\n"),
    )
    .unwrap();
    assert_eq!(
        k.ok(&["apply", "-f", changed.to_str().unwrap()]).await.trim(),
        "pod/web configured"
    );

    // get -o json.
    let json: Value = serde_json::from_str(&k.ok(&["get", "pod", "web", "-o", "json"]).await).unwrap();
    assert_eq!(json["kind"], "Pod");
    assert_eq!(json["metadata"]["namespace"], "default");
    assert_eq!(json["metadata"]["labels"]["tier"], "front");
    assert_eq!(json["spec"]["containers"][0]["image"], "nginx:1.27");
    assert!(
        json["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .is_some_and(|a| a.contains("tier")),
        "{json}"
    );

    // logs.
    assert_eq!(k.ok(&["logs", "web"]).await, "hello from web\nsecond line\n");
    assert_eq!(k.ok(&["logs", "web", "-c", "app", "--tail=1"]).await, "second line\n");

    // label and patch (strategic merge by default).
    assert_eq!(k.ok(&["label", "pod", "web", "a=b"]).await.trim(), "pod/web labeled");
    let patch = r#"{"metadata":{"annotations":{"note":"patched"}},"spec":{"containers":[{"name":"app","image":"nginx:1.28"}]}}"#;
    assert_eq!(
        k.ok(&["patch", "pod", "web", "-p", patch]).await.trim(),
        "pod/web patched"
    );
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    assert_eq!(pod.labels()["a"], "b");
    assert_eq!(pod.annotations()["note"], "patched");
    assert_eq!(pod.spec.as_ref().unwrap().containers.len(), 1);
    assert_eq!(
        pod.spec.as_ref().unwrap().containers[0].image.as_deref(),
        Some("nginx:1.28")
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap()[0].container_port,
        80,
        "the strategic merge kept the rest of the container"
    );
    let out = k
        .ok(&[
            "patch",
            "pod",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"a":null}}}"#,
        ])
        .await;
    assert_eq!(out.trim(), "pod/web patched");
    let out = k
        .ok(&[
            "patch",
            "pod",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/j","value":"1"}]"#,
        ])
        .await;
    assert_eq!(out.trim(), "pod/web patched");

    // get pods -A with the NAMESPACE column; -l selectors and field selectors.
    let out = k.ok(&["get", "pods", "-A"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{out}"
    );
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["default", "web", "0/1", "Pending"], "{out}");
    let out = k.ok(&["get", "pods", "-l", "j=1", "-o", "name"]).await;
    assert_eq!(out.trim(), "pod/web");
    let out = k
        .ok(&["get", "pods", "--field-selector", "status.phase=Running", "-o", "name"])
        .await;
    assert_eq!(out.trim(), "");
    let out = k.ok(&["get", "pods", "-o", "wide"]).await;
    assert!(out.lines().next().unwrap().contains("NODE"), "{out}");

    // Other kinds, by short name.
    let cm = k.dir.join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  k: v\n",
    )
    .unwrap();
    assert_eq!(
        k.ok(&["create", "--validate=false", "-f", cm.to_str().unwrap()])
            .await
            .trim(),
        "configmap/settings created"
    );
    assert!(k.ok(&["get", "cm"]).await.contains("settings"));
    assert!(k.ok(&["get", "ns"]).await.contains("kube-system"));
    assert!(k.ok(&["get", "sa", "-n", "kube-system"]).await.contains("default"));

    // delete (kubectl waits for the object to be gone).
    assert_eq!(k.ok(&["delete", "pod", "web"]).await.trim(), "pod \"web\" deleted");
    let out = k.run(&["get", "pod", "web"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("NotFound"), "{out:?}");

    // Access reviews (kubectl sends these as protobuf).
    assert_eq!(k.ok(&["auth", "can-i", "delete", "nodes"]).await.trim(), "yes");
    assert!(k.ok(&["auth", "whoami"]).await.contains("system:masters"));

    // Impersonation (--as) is for those allowed to impersonate (the admin).
    let sa = "--as=system:serviceaccount:default:nobody";
    let out = k.run(&["auth", "can-i", "get", "pods", sa]).await;
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    let as_master = [
        "auth",
        "can-i",
        "get",
        "pods",
        "--as=someone",
        "--as-group=system:masters",
    ];
    assert_eq!(k.ok(&as_master).await.trim(), "yes");

    // A service account without permissions is forbidden.
    let restricted = ServerKubectl::new(&s, &s.mint_token("default", "nobody"), "restricted");
    let out = restricted.run(&["auth", "can-i", "list", "pods"]).await;
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    let out = restricted.run(&["get", "pods"]).await;
    assert!(!out.status.success());
    let stderr = &out.stderr;
    assert!(
        stderr.contains("Forbidden") && stderr.contains("system:serviceaccount:default:nobody"),
        "{stderr}"
    );
    let out = restricted.run(&["get", "pods", "--as=kubernetes-admin"]).await;
    assert!(out.stderr.contains("cannot impersonate"), "{out:?}");
    // And a bad token is unauthorized.
    let bad = ServerKubectl::new(&s, "bogus", "bad");
    let out = bad.run(&["get", "pods"]).await;
    assert!(!out.status.success());
    let stderr = &out.stderr;
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("provide credentials"),
        "{stderr}"
    );
}

/// kubectl's default `--validate=strict` is answered the way kube-apiserver
/// answers it: through the OpenAPI v3 documents kubectl asks the server to
/// check (`?fieldValidation=Strict`), an unknown field is refused naming it;
/// `--validate=warn` creates the object and prints the server's warning;
/// `--validate=false` creates it silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_field_validation_is_the_servers() {
    testkit::gate_or_return!(&[Need::Tool("kubectl")]);
    let s = server().await;
    let k = ServerKubectl::new(&s, &s.admin_token(), "validate");
    let manifest = k.dir.join("cm.yaml");
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\ndta:\n  x: y\n")
    };
    std::fs::write(&manifest, cm("strict")).unwrap();
    let out = k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    let stderr = &out.stderr;
    assert!(!out.status.success(), "an unknown field was accepted");
    assert!(
        stderr.contains(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"dta\""
        ),
        "{stderr}"
    );

    std::fs::write(&manifest, cm("warned")).unwrap();
    let out = k
        .run(&["apply", "--validate=warn", "-f", manifest.to_str().unwrap()])
        .await;
    let stderr = &out.stderr;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Warning: unknown field \"dta\""), "{stderr}");

    std::fs::write(&manifest, cm("quiet")).unwrap();
    let out = k
        .run(&["create", "--validate=false", "-f", manifest.to_str().unwrap()])
        .await;
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    let names = k.ok(&["get", "configmaps", "-o", "name"]).await;
    let ours: Vec<&str> = names.lines().filter(|n| *n != "configmap/kube-root-ca.crt").collect();
    assert_eq!(ours, ["configmap/quiet", "configmap/warned"]);
}
