use std::collections::BTreeMap;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;

use super::*;

/// What `kubectl auth can-i list pods/foo -n ns1` sends.
const SSAR_RESOURCE: &[u8] = b"k8s\0\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12<\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x1e\n\x1c\n\x03ns1\x12\x04list\x1a\0\"\0*\x04pods2\0:\x03foo\x1a\x08\x08\0\x12\0\x1a\0 \0\x1a\0\"\0";
/// What `kubectl auth can-i get /healthz` sends.
const SSAR_PATH: &[u8] = b"k8s\0\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12/\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x11\x12\x0f\n\x08/healthz\x12\x03get\x1a\x08\x08\0\x12\0\x1a\0 \0\x1a\0\"\0";
/// What `kubectl auth whoami` sends.
const WHOAMI: &[u8] = b"k8s\0\n-\n\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview\x12\x1a\n\x10\n\0\x12\0\x1a\0\"\0*\x002\x008\x00B\0\x12\x06\n\x04\n\0\x12\0\x1a\0\"\0";

/// A body as client-go writes it: magic, then the envelope around `msg`.
fn envelope(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    unknown.encode(&mut out).unwrap();
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

/// An IntOrString the way Go writes it: the type (0 int, 1 string) and both
/// values, the unused one zero.
fn int_or_string(r#type: i64, int_val: i32, str_val: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(r#type),
        int_val: Some(int_val),
        str_val: s(str_val),
    })
}

/// Metadata the way Go fills it: every string present, most of them empty,
/// and the zero creation time as an empty message.
fn meta(name: &str, ns: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s(ns),
        generate_name: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: BTreeMap::from([("app".into(), "web".into()), ("role".into(), String::new())]),
        ..Default::default()
    })
}

/// The decoded object reads as the k8s-openapi type and serializes back to
/// exactly the same JSON: no field is unknown to the JSON form or misnamed.
fn same_as_typed<T: DeserializeOwned + serde::Serialize>(v: &Value) {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "round trip through the typed struct changed the object");
}

/// `msg` decoded from the body client-go sends for a `T`; the JSON must
/// round-trip through the k8s-openapi type.
fn decode_as<T: k8s_openapi::Resource + DeserializeOwned + serde::Serialize>(msg: &impl Message) -> Value {
    let v = decode(&envelope(T::API_VERSION, T::KIND, msg)).unwrap();
    same_as_typed::<T>(&v);
    v
}

#[test]
fn configmap_secret_namespace_serviceaccount() {
    let cm = core::ConfigMap {
        metadata: meta("settings", "default"),
        data: BTreeMap::from([("a".into(), "1".into())]),
        binary_data: BTreeMap::from([("b".into(), vec![0, 1, 2])]),
        immutable: None,
    };
    let v = decode_as::<k8s_openapi::api::core::v1::ConfigMap>(&cm);
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default", "generation": 0,
                         "labels": {"app": "web", "role": ""}},
            "data": {"a": "1"}, "binaryData": {"b": "AAEC"}})
    );

    let secret = core::Secret {
        metadata: meta("token", "default"),
        data: BTreeMap::from([("key".into(), b"value".to_vec())]),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let v = decode_as::<k8s_openapi::api::core::v1::Secret>(&secret);
    assert_eq!(v["data"], json!({"key": "dmFsdWU="}));
    assert_eq!(v["type"], "Opaque");

    let ns = core::Namespace {
        metadata: meta("team", ""),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };
    let v = decode_as::<k8s_openapi::api::core::v1::Namespace>(&ns);
    assert_eq!(v["metadata"]["name"], "team");
    assert_eq!((&v["spec"], &v["status"]), (&json!({}), &json!({})));

    let sa = core::ServiceAccount {
        metadata: meta("agent", "istio-system"),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let v = decode_as::<k8s_openapi::api::core::v1::ServiceAccount>(&sa);
    assert_eq!(v["automountServiceAccountToken"], false);
}

fn container() -> core::Container {
    let probe = core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: s("/readyz"),
                port: int_or_string(0, 8000, ""),
                ..Default::default()
            }),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    core::Container {
        name: s("install-cni"),
        image: s("istio/install-cni:1.27"),
        command: vec!["install-cni".into()],
        ports: vec![core::ContainerPort {
            container_port: Some(15014),
            host_ip: s("127.0.0.1"),
            protocol: s("TCP"),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: s("NODE_NAME"),
            value_from: Some(core::EnvVarSource {
                field_ref: Some(core::ObjectFieldSelector {
                    field_path: s("spec.nodeName"),
                    api_version: s("v1"),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        env_from: vec![core::EnvFromSource {
            config_map_ref: Some(core::ConfigMapEnvSource {
                local_object_reference: Some(core::LocalObjectReference {
                    name: s("istio-cni-config"),
                }),
                optional: Some(true),
            }),
            ..Default::default()
        }],
        resources: Some(core::ResourceRequirements {
            requests: BTreeMap::from([("cpu".into(), Quantity { string: s("100m") })]),
            ..Default::default()
        }),
        volume_mounts: vec![core::VolumeMount {
            name: s("cni-bin-dir"),
            mount_path: s("/host/opt/cni/bin"),
            ..Default::default()
        }],
        readiness_probe: Some(probe),
        security_context: Some(core::SecurityContext {
            privileged: Some(true),
            capabilities: Some(core::Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec![],
            }),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec() -> core::PodSpec {
    core::PodSpec {
        containers: vec![container()],
        volumes: vec![
            core::Volume {
                name: s("cni-bin-dir"),
                volume_source: Some(core::VolumeSource {
                    host_path: Some(core::HostPathVolumeSource {
                        path: s("/opt/cni/bin"),
                        r#type: s("DirectoryOrCreate"),
                    }),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("scratch"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }),
            },
            core::Volume {
                name: s("info"),
                volume_source: Some(core::VolumeSource {
                    downward_api: Some(core::DownwardAPIVolumeSource {
                        items: vec![core::DownwardAPIVolumeFile {
                            path: s("labels"),
                            field_ref: Some(core::ObjectFieldSelector {
                                field_path: s("metadata.labels"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
        ],
        host_network: Some(true),
        host_pid: Some(false),
        termination_grace_period_seconds: Some(0),
        node_selector: BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]),
        tolerations: vec![core::Toleration {
            operator: s("Exists"),
            effect: s("NoSchedule"),
            ..Default::default()
        }],
        priority_class_name: s("system-node-critical"),
        ..Default::default()
    }
}

#[test]
fn pod_with_inlined_types_and_acronyms() {
    let pod = core::Pod {
        metadata: meta("web", "default"),
        spec: Some(pod_spec()),
        status: None,
    };
    let v = decode_as::<k8s_openapi::api::core::v1::Pod>(&pod);
    let c = &v["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["hostIP"], "127.0.0.1");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // Go embedded structs are inlined: no `localObjectReference`, `handler`, `volumeSource`.
    assert_eq!(
        c["envFrom"][0]["configMapRef"],
        json!({"name": "istio-cni-config", "optional": true})
    );
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"path": "/readyz", "port": 8000}, "periodSeconds": 5})
    );
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN"]));
    let volumes = &v["spec"]["volumes"];
    assert_eq!(
        volumes[0],
        json!({"name": "cni-bin-dir", "hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}})
    );
    assert_eq!(volumes[1], json!({"name": "scratch", "emptyDir": {}}));
    assert_eq!(volumes[2]["downwardAPI"]["items"][0]["path"], "labels");
    assert_eq!(
        (&v["spec"]["hostNetwork"], &v["spec"]["hostPID"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(v["spec"]["terminationGracePeriodSeconds"], 0);
}

#[test]
fn daemonset_rbac_lease_node_event() {
    let ds = pb::api::apps::v1::DaemonSet {
        metadata: meta("istio-cni-node", "istio-system"),
        spec: Some(pb::api::apps::v1::DaemonSetSpec {
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("k8s-app".into(), "istio-cni-node".into())]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: meta("", ""),
                spec: Some(pod_spec()),
            }),
            update_strategy: Some(pb::api::apps::v1::DaemonSetUpdateStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(pb::api::apps::v1::RollingUpdateDaemonSet {
                    max_unavailable: int_or_string(1, 0, "25%"),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let v = decode_as::<k8s_openapi::api::apps::v1::DaemonSet>(&ds);
    assert_eq!(v["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], "25%");

    let role = pb::api::rbac::v1::ClusterRole {
        metadata: meta("istio-cni", ""),
        rules: vec![pb::api::rbac::v1::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec![String::new()],
            resources: vec!["pods".into()],
            non_resource_ur_ls: vec![],
            ..Default::default()
        }],
        aggregation_rule: None,
    };
    let v = decode_as::<k8s_openapi::api::rbac::v1::ClusterRole>(&role);
    assert_eq!(v["rules"][0]["apiGroups"], json!([""]));

    let binding = pb::api::rbac::v1::RoleBinding {
        metadata: meta("b", "default"),
        subjects: vec![pb::api::rbac::v1::Subject {
            kind: s("ServiceAccount"),
            name: s("agent"),
            namespace: s("default"),
            ..Default::default()
        }],
        role_ref: Some(pb::api::rbac::v1::RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s("Role"),
            name: s("r"),
        }),
    };
    decode_as::<k8s_openapi::api::rbac::v1::RoleBinding>(&binding);

    let lease = pb::api::coordination::v1::Lease {
        metadata: meta("node-1", "kube-node-lease"),
        spec: Some(pb::api::coordination::v1::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_000),
            }),
            ..Default::default()
        }),
    };
    let v = decode_as::<k8s_openapi::api::coordination::v1::Lease>(&lease);
    assert_eq!(v["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");

    let node = core::Node {
        metadata: meta("node-1", ""),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.244.1.0/24"),
            pod_cid_rs: vec!["10.244.1.0/24".into()],
            taints: vec![core::Taint {
                key: s("node.kubernetes.io/not-ready"),
                effect: s("NoSchedule"),
                ..Default::default()
            }],
            unschedulable: Some(true),
            ..Default::default()
        }),
        status: None,
    };
    let v = decode_as::<k8s_openapi::api::core::v1::Node>(&node);
    assert_eq!(v["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));

    let event = core::Event {
        metadata: meta("web.1", "default"),
        involved_object: Some(core::ObjectReference {
            kind: s("Pod"),
            name: s("web"),
            ..Default::default()
        }),
        reason: s("Scheduled"),
        first_timestamp: Some(meta::Time {
            seconds: Some(1_700_000_000),
            nanos: Some(0),
        }),
        count: Some(2),
        ..Default::default()
    };
    let v = decode_as::<k8s_openapi::api::core::v1::Event>(&event);
    assert_eq!(v["firstTimestamp"], "2023-11-14T22:13:20Z");
}

#[test]
fn delete_options_and_eviction() {
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: s("7"),
        }),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let v = decode(&envelope("apps/v1", "DeleteOptions", &opts)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
            "preconditions": {"uid": "u-1", "resourceVersion": "7"},
            "propagationPolicy": "Foreground", "dryRun": ["All"]})
    );
    same_as_typed::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>(&v);

    let eviction = pb::api::policy::v1::Eviction {
        metadata: meta("web", "default"),
        delete_options: Some(meta::DeleteOptions {
            grace_period_seconds: Some(30),
            ..Default::default()
        }),
    };
    let v = decode_as::<k8s_openapi::api::policy::v1::Eviction>(&eviction);
    assert_eq!(v["deleteOptions"]["gracePeriodSeconds"], 30);
}

/// What `kubectl create priorityclass high --value=1000 --description=...` sends.
#[test]
fn priority_class() {
    let pc = pb::api::scheduling::v1::PriorityClass {
        metadata: meta("high", ""),
        value: Some(1000),
        global_default: Some(false),
        description: s("for the journey"),
        preemption_policy: s("PreemptLowerPriority"),
    };
    let v = decode_as::<k8s_openapi::api::scheduling::v1::PriorityClass>(&pc);
    assert_eq!(v["value"], 1000);
    assert_eq!(v["description"], "for the journey");
    assert_eq!(v["preemptionPolicy"], "PreemptLowerPriority");
}

#[test]
fn reviews_kubectl_sent() {
    let v = decode(SSAR_RESOURCE).unwrap();
    assert_eq!(v["kind"], "SelfSubjectAccessReview");
    assert_eq!(
        v["spec"]["resourceAttributes"],
        json!({"namespace": "ns1", "verb": "list", "resource": "pods", "name": "foo"})
    );
    let v = decode(SSAR_PATH).unwrap();
    assert_eq!(
        v["spec"]["nonResourceAttributes"],
        json!({"path": "/healthz", "verb": "get"})
    );
    let w = decode(WHOAMI).unwrap();
    assert_eq!(
        (w["apiVersion"].as_str(), w["kind"].as_str()),
        (Some("authentication.k8s.io/v1"), Some("SelfSubjectReview"))
    );
    let sar = pb::api::authorization::v1::SubjectAccessReview {
        metadata: meta("", ""),
        spec: Some(pb::api::authorization::v1::SubjectAccessReviewSpec {
            user: s("alice"),
            groups: vec!["devs".into()],
            extra: BTreeMap::from([(
                "scopes".into(),
                pb::api::authorization::v1::ExtraValue {
                    items: vec!["a".into()],
                },
            )]),
            non_resource_attributes: Some(pb::api::authorization::v1::NonResourceAttributes {
                path: s("/healthz"),
                verb: s("get"),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let v = decode_as::<k8s_openapi::api::authorization::v1::SubjectAccessReview>(&sar);
    assert_eq!(v["spec"]["extra"], json!({"scopes": ["a"]}));
}

#[test]
fn bad_bodies_are_errors_naming_the_problem() {
    assert_eq!(decode(b"{}"), Err(DecodeError::NoMagic));
    assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(DecodeError::Envelope(_))));
    assert!(matches!(decode(b"k8s\0\x0a\x02\x0a"), Err(DecodeError::Envelope(_))));
    // A valid envelope around a truncated ConfigMap.
    let mut body = envelope("v1", "ConfigMap", &core::ConfigMap::default());
    let cm = core::ConfigMap {
        metadata: meta("x", "y"),
        ..Default::default()
    }
    .encode_to_vec();
    let unknown = pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: s("v1"),
            kind: s("ConfigMap"),
        }),
        raw: Some(cm[..cm.len() - 3].to_vec()),
        ..Default::default()
    };
    body.truncate(MAGIC.len());
    unknown.encode(&mut body).unwrap();
    let e = decode(&body).unwrap_err();
    assert!(
        matches!(e, DecodeError::Object { ref kind, .. } if kind == "ConfigMap"),
        "{e}"
    );
    assert_eq!(e.code(), 400);
    assert!(e.to_string().starts_with("invalid protobuf ConfigMap: "), "{e}");

    let e = decode(&envelope("v1", "PersistentVolume", &core::PersistentVolume::default())).unwrap_err();
    assert_eq!(e.code(), 415);
    assert!(e.to_string().contains("\"PersistentVolume\""), "{e}");
    let e = decode(&envelope("apps/v2", "DaemonSet", &core::ConfigMap::default())).unwrap_err();
    assert_eq!(e.code(), 415);

    let gzip = pb::apimachinery::pkg::runtime::Unknown {
        content_encoding: s("gzip"),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    gzip.encode(&mut body).unwrap();
    assert_eq!(decode(&body), Err(DecodeError::Encoding("gzip".into())));

    let raw = pb::api::apps::v1::ControllerRevision {
        metadata: meta("r", "default"),
        data: Some(pb::apimachinery::pkg::runtime::RawExtension {
            raw: Some(b"{oops".to_vec()),
        }),
        revision: Some(1),
    };
    let e = decode(&envelope("apps/v1", "ControllerRevision", &raw)).unwrap_err();
    assert!(matches!(e, DecodeError::Convert { .. }), "{e}");
    assert!(e.to_string().contains("data: "), "{e}");
}
