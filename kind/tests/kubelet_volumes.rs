//! Containers as kubelet runs them on a local cluster: each in its own mount
//! namespace with the pod's volumes (hostPath on the node's directories,
//! emptyDir, configMap, secret, downwardAPI, projected, the automatic
//! service-account token), env from every source, capabilities from the
//! securityContext, and image directories; and the TokenRequest API's
//! tokens (as the service account, refused once expired or for another
//! audience).
//!
//! Needs root (skips with `SKIP:` otherwise; panics under
//! `ISTIO_CNI_REQUIRE_PRIVILEGED=1`), the CNI plugins and iptables.

use std::time::Duration;

mod workload_support;

use istio_cni_kind::apiserver::{ApiServer, ApiServerOptions};
use istio_cni_kind::cluster::Cluster;
use istio_cni_kind::kubelet::ImageTable;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use testkit::Need;
use workload_support::{WAIT, ptp_spec, wait_pod};

fn cluster(images: ImageTable) -> Cluster {
    Cluster::create(ptp_spec(1, images)).unwrap()
}

fn shell() -> ImageTable {
    ImageTable::new().add("shell", "/bin/sh", &[])
}

fn create<K>(cluster: &Cluster, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(cluster.client(), "default");
    let typed: K = serde_json::from_value(obj).unwrap();
    cluster.block_on(api.create(&PostParams::default(), &typed)).unwrap()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn waiting(p: &Pod) -> Option<(String, String)> {
    let s = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let w = s.state.as_ref()?.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

fn logs(cluster: &Cluster, pod: &str) -> String {
    cluster.pod_logs("default", pod, "c").unwrap()
}

fn sha_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

const SCRIPT: &str = r#"
echo "arg0=$0"
echo "env NODE=$NODE POD=$POD NS=$NS SA=$SA LABEL=$LABEL CPU=$CPU MEM=$MEM LEVEL=$LEVEL PASS=$PASS CFG_greeting=$CFG_greeting ALIAS=$ALIAS"
echo "api=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
echo "configmap=$(cat /cfg/greeting) item=$(cat /cfgitem/g.txt) mode=$(stat -L -c %a /cfgitem/g.txt)"
echo "secret=$(cat /sec/password)"
echo "downward=$(cat /down/name)/$(cat /down/labels)"
echo "projected=$(cat /proj/greeting)+$(cat /proj/password)+$(cat /proj/ns)"
echo "subpath=$(cat /sub/greeting.txt)"
echo "sa-ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
echo "sa-ca=$(head -1 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)"
echo "sa-token=$(md5sum < /var/run/secrets/kubernetes.io/serviceaccount/token | cut -d' ' -f1)"
echo scratch > /scratch/file && echo "emptydir=$(cat /scratch/file)"
echo from-the-pod > /node-data/written && echo "hostpath=written"
if touch /node-ro/x 2>/dev/null; then echo "readonly=writable"; else echo "readonly=refused"; fi
if touch /cfg/new 2>/dev/null; then echo "configmap-ro=writable"; else echo "configmap-ro=refused"; fi
echo done
"#;

#[test]
fn a_pod_sees_its_volumes_env_and_service_account_token() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins]);
    let cluster = cluster(shell());
    let local = cluster.local().unwrap();
    let node = local.node("node-0").unwrap();
    let _: ConfigMap = create(
        &cluster,
        json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "level": "debug"}}),
    );
    let _: Secret = create(
        &cluster,
        json!({"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}),
    );
    let _: ServiceAccount = create(&cluster, json!({"metadata": {"name": "agent"}}));
    let pod: Pod = create(
        &cluster,
        json!({
            "metadata": {"name": "reader", "labels": {"app": "reader"}},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "agent",
                "containers": [{
                    "name": "c", "image": "shell",
                    "command": ["shell", "-c", SCRIPT, "$(POD)"],
                    "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                    "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                    "env": [
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                        {"name": "ALIAS", "value": "$(POD)-on-$(NODE)"}
                    ],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/cfg"},
                        {"name": "cfgitem", "mountPath": "/cfgitem"},
                        {"name": "sec", "mountPath": "/sec"},
                        {"name": "down", "mountPath": "/down"},
                        {"name": "proj", "mountPath": "/proj"},
                        {"name": "cfg", "mountPath": "/sub/greeting.txt", "subPath": "greeting"},
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "data", "mountPath": "/node-data"},
                        {"name": "data", "mountPath": "/node-ro", "readOnly": true}
                    ]
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                    {"name": "cfgitem", "configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "g.txt", "mode": 0o400}]}},
                    {"name": "sec", "secret": {"secretName": "sec"}},
                    {"name": "down", "downwardAPI": {"items": [
                        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "proj", "projected": {"sources": [
                        {"configMap": {"name": "cfg", "items": [{"key": "greeting", "path": "greeting"}]}},
                        {"secret": {"name": "sec"}},
                        {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "data", "hostPath": {"path": "/var/lib/test-data", "type": "DirectoryOrCreate"}}
                ]
            }
        }),
    );
    let done = wait_pod(&cluster, "reader", "finished", finished);
    let log = logs(&cluster, "reader");
    assert_eq!(phase(&done), "Succeeded", "{log}");
    let api = local.api();
    let gateway = format!("api={}:", node.gateway());
    let want = [
        "arg0=reader",
        "env NODE=node-0 POD=reader NS=default SA=agent LABEL=reader CPU=250 MEM=64 LEVEL=debug PASS=s3cret CFG_greeting=hello ALIAS=reader-on-node-0",
        &gateway,
        "configmap=hello item=hello mode=400",
        "secret=s3cret",
        "downward=reader/app=\"reader\"",
        "projected=hello+s3cret+default",
        "subpath=hello",
        "sa-ns=default",
        "sa-ca=-----BEGIN CERTIFICATE-----",
        "emptydir=scratch",
        "hostpath=written",
        "readonly=refused",
        "configmap-ro=refused",
        "done",
    ];
    for line in want {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    // The hostPath is the node's directory.
    let written = node.host_path("/var/lib/test-data/written");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from-the-pod\n");

    // The token the pod saw is the one in its volume on the node, and it
    // authenticates as the pod's service account.
    let uid = pod.metadata.uid.clone().unwrap();
    let pod_dir = node.host_path(&format!("/var/lib/kubelet/pods/{uid}"));
    let projected = pod_dir.join("volumes/kubernetes.io~projected");
    let sa_volume = std::fs::read_dir(&projected)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("kube-api-access-"))
        .expect("the service-account volume")
        .path();
    let token_file = sa_volume.join("token");
    assert!(log.contains(&format!("sa-token={}", sha_of(&token_file))), "{log}");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let client = cluster.block_on(api.client_for(&token));
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = cluster
        .block_on(reviews.create(&PostParams::default(), &SelfSubjectReview::default()))
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:default:agent"));
    // RBAC applies: the account was granted nothing.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let denied = cluster.block_on(pods.list(&ListParams::default())).unwrap_err();
    assert!(matches!(&denied, kube::Error::Api(s) if s.code == 403), "{denied:?}");
    // The token never reached the container's log.
    assert!(!log.contains(token.trim()));

    // Deleting the pod removes its directory (and the emptyDir with it);
    // the node's hostPath data stays.
    let api_pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    cluster
        .block_on(api_pods.delete("reader", &Default::default()))
        .unwrap();
    let gone = kube::runtime::wait::conditions::is_deleted(&uid);
    cluster
        .block_on(async { tokio::time::timeout(WAIT, await_condition(api_pods.clone(), "reader", gone)).await })
        .unwrap()
        .unwrap();
    let removed = wait_until(|| !pod_dir.exists());
    assert!(removed, "{} is still there", pod_dir.display());
    assert!(written.exists());
}

/// Polls `cond` on the filesystem (the kubelet removes the pod directory
/// after the API object is gone; no event announces it).
fn wait_until(cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

#[test]
fn failed_mounts_and_missing_config_keep_the_container_waiting() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins]);
    let cluster = cluster(shell());
    let _: Pod = create(
        &cluster,
        json!({
            "metadata": {"name": "typed"},
            "spec": {"containers": [{"name": "c", "image": "shell", "command": ["shell", "-c", "sleep 600"],
                "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
                "volumes": [{"name": "d", "hostPath": {"path": "/no/such/dir", "type": "Directory"}}]}
        }),
    );
    let stuck = wait_pod(&cluster, "typed", "the hostPath check failing", |p| {
        waiting(p).is_some_and(|(_, m)| m.contains("hostPath type check failed"))
    });
    let (reason, message) = waiting(&stuck).unwrap();
    assert_eq!(reason, "ContainerCreating");
    assert_eq!(
        message,
        "MountVolume.SetUp failed for volume \"d\" : hostPath type check failed: /no/such/dir is not a directory"
    );
    let events: Api<Event> = Api::namespaced(cluster.client(), "default");
    let list = cluster.block_on(events.list(&ListParams::default())).unwrap();
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedMount") && e.involved_object.name.as_deref() == Some("typed")),
        "{:?}",
        list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    // A missing ConfigMap: waiting with the reason kubelet gives, then
    // running once it exists.
    let _: Pod = create(
        &cluster,
        json!({
            "metadata": {"name": "configured"},
            "spec": {"containers": [{"name": "c", "image": "shell", "command": ["shell", "-c", "echo level=$LEVEL; sleep 600"],
                "env": [{"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "level"}}}]}]}
        }),
    );
    let stuck = wait_pod(&cluster, "configured", "a config error", |p| {
        waiting(p).is_some_and(|(r, _)| r == "CreateContainerConfigError")
    });
    assert_eq!(waiting(&stuck).unwrap().1, "configmap \"later\" not found");
    let _: ConfigMap = create(
        &cluster,
        json!({"metadata": {"name": "later"}, "data": {"level": "info"}}),
    );
    wait_pod(&cluster, "configured", "running", |p| phase(p) == "Running");
    assert!(wait_until(|| logs(&cluster, "configured").contains("level=info")));
}

#[test]
fn capabilities_decide_whether_a_container_can_program_iptables() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::Tool("iptables"), Need::CniPlugins]);
    let cluster = cluster(shell());
    let script = "iptables -t nat -A OUTPUT -p tcp --dport 9 -j RETURN && echo programmed";
    for (name, security) in [
        ("plain", json!({})),
        ("net-admin", json!({"capabilities": {"add": ["NET_ADMIN"]}})),
        ("privileged", json!({"privileged": true})),
        (
            "dropped",
            json!({"privileged": false, "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}),
        ),
    ] {
        let _: Pod = create(
            &cluster,
            json!({
                "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "shell",
                    "command": ["shell", "-c", script], "securityContext": security}]}
            }),
        );
    }
    for (name, allowed) in [
        ("plain", false),
        ("net-admin", true),
        ("privileged", true),
        ("dropped", false),
    ] {
        let p = wait_pod(&cluster, name, "finished", finished);
        let log = logs(&cluster, name);
        let want = if allowed { "Succeeded" } else { "Failed" };
        assert_eq!(phase(&p), want, "{name}: {log}");
        if !allowed {
            assert!(log.contains("Permission denied"), "{name}: {log}");
        }
    }
    // An unknown capability is a visible error, not a silent grant.
    let _: Pod = create(
        &cluster,
        json!({
            "metadata": {"name": "wizard"},
            "spec": {"containers": [{"name": "c", "image": "shell", "command": ["shell", "-c", "true"],
                "securityContext": {"capabilities": {"add": ["NET_WIZARD"]}}}]}
        }),
    );
    let stuck = wait_pod(&cluster, "wizard", "a create error", |p| {
        waiting(p).is_some_and(|(r, _)| r == "CreateContainerError")
    });
    assert!(waiting(&stuck).unwrap().1.contains("NET_WIZARD"));
}

#[test]
fn an_image_directory_provides_the_containers_files_and_entrypoint() {
    testkit::gate_or_return!(&[Need::Root, Need::Tool("ip"), Need::CniPlugins]);
    let image = testkit::Scratch::new("kubelet-image-dir");
    std::fs::create_dir_all(image.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(image.join("opt/hello-image")).unwrap();
    std::fs::write(image.join("opt/hello-image/data.txt"), "image-data\n").unwrap();
    let entry = image.join("usr/local/bin/hello-entry");
    std::fs::write(
        &entry,
        "#!/bin/sh\necho \"entrypoint $(cat /opt/hello-image/data.txt) args=$*\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!std::path::Path::new("/opt/hello-image").exists());
    let cluster = cluster(shell().add_dir("example.com/hello:1.0", &*image, &["hello-entry"]));
    for (name, command) in [
        ("entry", json!(null)),
        ("command", json!(["cat", "/opt/hello-image/data.txt"])),
    ] {
        let _: Pod = create(
            &cluster,
            json!({
                "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.com/hello:1.0",
                    "command": command, "args": ["one", "two"]}]}
            }),
        );
    }
    let p = wait_pod(&cluster, "entry", "finished", finished);
    let log = logs(&cluster, "entry");
    assert_eq!(phase(&p), "Succeeded", "{log}");
    assert_eq!(log, "entrypoint image-data args=one two\n");
    let p = wait_pod(&cluster, "command", "finished", finished);
    let log = logs(&cluster, "command");
    // `cat` comes from beneath the image; the args follow the command.
    assert_eq!(phase(&p), "Failed", "cat of missing files `one`, `two`: {log}");
    assert!(log.starts_with("image-data\n"), "{log}");
    // Nothing of the image leaked onto the harness's filesystem.
    assert!(!std::path::Path::new("/opt/hello-image").exists());
    assert!(!std::path::Path::new("/usr/local/bin/hello-entry").exists());
}

#[test]
fn token_requests_mint_expiring_audience_bound_tokens() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = ApiServer::start(ApiServerOptions {
            min_token_expiration: Duration::from_secs(1),
            ..ApiServerOptions::default()
        })
        .await
        .unwrap();
        let admin = server.client().await;
        server.mint_token("team", "builder");
        let accounts: Api<ServiceAccount> = Api::namespaced(admin, "team");
        let request = |seconds: i64, audience: Option<&str>| -> TokenRequest {
            serde_json::from_value(json!({"spec": {
                "expirationSeconds": seconds,
                "audiences": audience.map(|a| vec![a]).unwrap_or_default()}}))
            .unwrap()
        };
        let pp = PostParams::default();
        let whoami = |token: String| {
            let server = server.clone();
            async move {
                let client = server.client_for(&token).await;
                let reviews: Api<SelfSubjectReview> = Api::all(client);
                reviews
                    .create(&PostParams::default(), &SelfSubjectReview::default())
                    .await
            }
        };
        let minted = accounts
            .create_token_request("builder", &pp, &request(2, None))
            .await
            .unwrap();
        let status = minted.status.unwrap();
        let left = status.expiration_timestamp.0.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
        assert!((1..=2).contains(&left), "expires in {left}s");
        let me = whoami(status.token.clone()).await.unwrap();
        assert_eq!(
            me.status.unwrap().user_info.unwrap().username.as_deref(),
            Some("system:serviceaccount:team:builder")
        );
        // Another audience's token is refused by the API server.
        let vault = accounts
            .create_token_request("builder", &pp, &request(600, Some("vault")))
            .await
            .unwrap();
        let e = whoami(vault.status.unwrap().token).await.unwrap_err();
        assert!(matches!(&e, kube::Error::Api(s) if s.code == 401), "{e:?}");
        // Below the minimum lifetime, or for a missing account: refused.
        let short = accounts.create_token_request("builder", &pp, &request(0, None)).await;
        assert!(matches!(&short, Err(kube::Error::Api(s)) if s.code == 422), "{short:?}");
        let ghost = accounts.create_token_request("ghost", &pp, &request(600, None)).await;
        assert!(matches!(&ghost, Err(kube::Error::Api(s)) if s.code == 404), "{ghost:?}");
        // Once expired, the first token is refused too.
        let until = std::time::UNIX_EPOCH + Duration::from_secs(status.expiration_timestamp.0.as_second() as u64);
        tokio::time::sleep(until.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await;
        let e = whoami(status.token).await.unwrap_err();
        assert!(matches!(&e, kube::Error::Api(s) if s.code == 401), "{e:?}");
    });
}
