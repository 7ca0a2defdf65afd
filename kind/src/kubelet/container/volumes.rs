//! The pod's volumes as files: which objects and tokens each needs, the
//! files of configMap / secret / downwardAPI / projected volumes, hostPath
//! type checks on the node's directories, and the automatic
//! service-account volume (`kube-api-access-*`).

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccountTokenProjection, Volume, VolumeMount,
};
use serde_json::json;

use super::atomic::{VolumeFile, check_path};
use super::downward::{self, PodFacts};
use super::env::Objects;

/// Where every pod's service-account credentials are mounted.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The mode of volume files when the volume sets none (0644).
const DEFAULT_MODE: u32 = 0o644;
/// A projected token's lifetime when the volume sets none.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// A projected service-account token a volume needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenNeed {
    /// `<volume>/<path>`: which file the token goes to.
    pub key: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// What a volume reads from the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
    pub tokens: Vec<TokenNeed>,
}

/// The kubelet's directory for a volume: `volumes/kubernetes.io~<plugin>/<name>`.
pub fn plugin(v: &Volume) -> Option<&'static str> {
    Some(if v.empty_dir.is_some() {
        "empty-dir"
    } else if v.config_map.is_some() {
        "configmap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.downward_api.is_some() {
        "downward-api"
    } else if v.projected.is_some() {
        "projected"
    } else {
        return None;
    })
}

/// configMap, secret, downwardAPI and projected volumes are always mounted
/// read-only.
pub fn forced_read_only(v: &Volume) -> bool {
    v.config_map.is_some() || v.secret.is_some() || v.downward_api.is_some() || v.projected.is_some()
}

fn token_need(volume: &str, t: &ServiceAccountTokenProjection) -> TokenNeed {
    TokenNeed {
        key: format!("{volume}/{}", t.path),
        audience: t.audience.clone().filter(|a| !a.is_empty()),
        expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
    }
}

/// The objects and tokens `v` needs.
pub fn needs(v: &Volume) -> Needs {
    let mut n = Needs::default();
    if let Some(cm) = &v.config_map {
        n.config_maps.push(cm.name.clone());
    }
    if let Some(s) = &v.secret {
        n.secrets.extend(s.secret_name.clone());
    }
    for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
        if let Some(cm) = &src.config_map {
            n.config_maps.push(cm.name.clone());
        }
        if let Some(s) = &src.secret {
            n.secrets.push(s.name.clone());
        }
        if let Some(t) = &src.service_account_token {
            n.tokens.push(token_need(&v.name, t));
        }
    }
    n
}

/// Why a volume cannot be set up (a `FailedMount` event's message).
fn setup_failed(volume: &str, why: impl std::fmt::Display) -> String {
    format!("MountVolume.SetUp failed for volume {volume:?} : {why}")
}

/// A configMap or secret a volume or projected source takes keys from.
struct Keyed<'a> {
    /// `"configmap"` or `"secret"`, as the kubelet's messages name it.
    what: &'static str,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: bool,
}

impl<'a> Keyed<'a> {
    fn config_map(name: &'a str, items: &'a Option<Vec<KeyToPath>>, optional: Option<bool>) -> Self {
        Keyed {
            what: "configmap",
            name,
            items: items.as_deref(),
            optional: optional == Some(true),
        }
    }

    fn secret(name: &'a str, items: &'a Option<Vec<KeyToPath>>, optional: Option<bool>) -> Self {
        Keyed {
            what: "secret",
            ..Keyed::config_map(name, items, optional)
        }
    }

    /// `items` of the object (all keys when none), as files of `volume`.
    fn files(&self, volume: &str, objects: &Objects, mode: u32) -> Result<Vec<VolumeFile>, String> {
        let store = if self.what == "secret" {
            &objects.secrets
        } else {
            &objects.config_maps
        };
        let Keyed {
            what,
            name,
            items,
            optional,
        } = *self;
        let Some(data) = store.get(name).and_then(Option::as_ref) else {
            return if optional {
                Ok(Vec::new())
            } else {
                Err(setup_failed(volume, format!("{what} {name:?} not found")))
            };
        };
        let mut files = Vec::new();
        match items.filter(|i| !i.is_empty()) {
            None => {
                for (k, v) in data {
                    files.push(VolumeFile {
                        path: k.clone(),
                        data: v.clone(),
                        mode,
                    });
                }
            }
            Some(items) => {
                for item in items {
                    match data.get(&item.key) {
                        Some(v) => files.push(VolumeFile {
                            path: item.path.clone(),
                            data: v.clone(),
                            mode: item.mode.map(|m| m as u32).unwrap_or(mode),
                        }),
                        None if optional => {}
                        None => {
                            return Err(setup_failed(
                                volume,
                                format!("configmap references non-existent config key: {}", item.key),
                            ));
                        }
                    }
                }
            }
        }
        Ok(files)
    }
}

fn downward_files(
    volume: &str,
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    mode: u32,
) -> Result<Vec<VolumeFile>, String> {
    items
        .iter()
        .map(|item| {
            let value = if let Some(f) = &item.field_ref {
                downward::field(pod, facts, &f.field_path, false)
            } else if let Some(r) = &item.resource_field_ref {
                match r.container_name.as_deref().filter(|c| !c.is_empty()) {
                    Some(c) => downward::resource(pod, c, r, facts),
                    None => Err("resourceFieldRef in a volume needs containerName".into()),
                }
            } else {
                Err(format!(
                    "item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                ))
            };
            Ok(VolumeFile {
                path: item.path.clone(),
                data: value.map_err(|e| setup_failed(volume, e))?.into_bytes(),
                mode: item.mode.map(|m| m as u32).unwrap_or(mode),
            })
        })
        .collect()
}

/// The files of a configMap, secret, downwardAPI or projected volume;
/// `tokens` holds the minted tokens by [`TokenNeed::key`].
pub fn files(
    v: &Volume,
    pod: &Pod,
    facts: &PodFacts,
    objects: &Objects,
    tokens: &HashMap<String, String>,
) -> Result<Vec<VolumeFile>, String> {
    let name = v.name.as_str();
    let mode_of = |m: Option<i32>| m.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
    let files = if let Some(c) = &v.config_map {
        Keyed::config_map(&c.name, &c.items, c.optional).files(name, objects, mode_of(c.default_mode))?
    } else if let Some(s) = &v.secret {
        let sname = s.secret_name.as_deref().unwrap_or_default();
        Keyed::secret(sname, &s.items, s.optional).files(name, objects, mode_of(s.default_mode))?
    } else if let Some(d) = &v.downward_api {
        let mode = mode_of(d.default_mode);
        downward_files(name, pod, facts, d.items.as_deref().unwrap_or_default(), mode)?
    } else if let Some(p) = &v.projected {
        let mode = mode_of(p.default_mode);
        let mut all = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                all.extend(Keyed::config_map(&c.name, &c.items, c.optional).files(name, objects, mode)?);
            }
            if let Some(s) = &src.secret {
                all.extend(Keyed::secret(&s.name, &s.items, s.optional).files(name, objects, mode)?);
            }
            if let Some(d) = &src.downward_api {
                all.extend(downward_files(
                    name,
                    pod,
                    facts,
                    d.items.as_deref().unwrap_or_default(),
                    mode,
                )?);
            }
            if let Some(t) = &src.service_account_token {
                let need = token_need(name, t);
                let token = tokens
                    .get(&need.key)
                    .ok_or_else(|| setup_failed(name, format!("no token for {}", t.path)))?;
                all.push(VolumeFile {
                    path: t.path.clone(),
                    data: token.clone().into_bytes(),
                    mode,
                });
            }
        }
        all
    } else {
        return Ok(Vec::new());
    };
    for f in &files {
        check_path(&f.path).map_err(|e| setup_failed(name, e))?;
    }
    Ok(files)
}

/// A hostPath's directory on the node: the node's own tree, except the
/// kernel's filesystems (`/proc`, `/sys`, `/dev`), which nodes share with
/// the harness.
pub fn node_path(node_root: &Path, path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("hostPath {path:?} must be an absolute path without '..'"));
    }
    let shared = ["/proc", "/sys", "/dev"].iter().any(|k| p.starts_with(k));
    Ok(if shared {
        p.to_path_buf()
    } else {
        node_root.join(path.trim_start_matches('/'))
    })
}

/// Checks (and for the `OrCreate` types, creates) a hostPath as its `type`
/// says; the error is the `FailedMount` message.
pub fn check_host_path(volume: &str, shown: &str, path: &Path, kind: &str) -> Result<(), String> {
    let failed = |what: &str| setup_failed(volume, format!("hostPath type check failed: {shown} is not {what}"));
    let meta = std::fs::metadata(path);
    let must_be = |is: fn(&std::fs::Metadata) -> bool, what: &str| match &meta {
        Ok(m) if is(m) => Ok(()),
        _ => Err(failed(what)),
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match &meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(failed("a directory")),
            Err(_) => std::fs::create_dir_all(path).map_err(|e| setup_failed(volume, format!("creating {shown}: {e}"))),
        },
        "FileOrCreate" => match &meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(failed("a file")),
            Err(_) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| setup_failed(volume, format!("creating {shown}: {e}")))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(drop)
                    .map_err(|e| setup_failed(volume, format!("creating {shown}: {e}")))
            }
        },
        "Directory" => must_be(|m| m.is_dir(), "a directory"),
        "File" => must_be(|m| m.is_file(), "a file"),
        "Socket" => must_be(|m| m.file_type().is_socket(), "a socket file"),
        "CharDevice" => must_be(|m| m.file_type().is_char_device(), "a character device"),
        "BlockDevice" => must_be(|m| m.file_type().is_block_device(), "a block device"),
        other => Err(setup_failed(volume, format!("unknown hostPath type {other:?}"))),
    }
}

/// The pod with the service-account volume the ServiceAccount admission
/// plugin would have added: `kube-api-access-<suffix>` (token, `ca.crt`,
/// `namespace`) mounted read-only at [`SA_MOUNT_PATH`] in every container
/// that has nothing there. `automount` is the pod's
/// `automountServiceAccountToken`, else its ServiceAccount's.
pub fn with_service_account_volume(pod: &Pod, automount: Option<bool>) -> Pod {
    let mut pod = pod.clone();
    let Some(spec) = pod.spec.as_mut() else { return pod };
    if automount == Some(false) {
        return pod;
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    if volumes.iter().any(|v| v.name.starts_with("kube-api-access-")) {
        return pod;
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let suffix: String = uid.chars().filter(char::is_ascii_alphanumeric).take(5).collect();
    let name = format!("kube-api-access-{suffix}");
    let volume: Volume = serde_json::from_value(json!({
        "name": name,
        "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}
    }))
    .unwrap_or_else(|_| Volume {
        name: name.clone(),
        ..Default::default()
    });
    volumes.push(volume);
    let mount = VolumeMount {
        name,
        mount_path: SA_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let add = |c: &mut Container| {
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts
            .iter()
            .any(|m| m.mount_path.trim_end_matches('/') == SA_MOUNT_PATH)
        {
            mounts.push(mount.clone());
        }
    };
    spec.init_containers.iter_mut().flatten().for_each(add);
    spec.containers.iter_mut().for_each(add);
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "1234-abcd", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "initContainers": [{"name": "i", "image": "i"}]}
        }))
        .unwrap()
    }

    fn vol(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).unwrap()
    }

    fn objects() -> Objects {
        let b = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        Objects {
            config_maps: [
                ("cfg".to_string(), b(&[("a", "1"), ("b", "2")])),
                ("kube-root-ca.crt".to_string(), b(&[("ca.crt", "PEM")])),
                ("gone".to_string(), None),
            ]
            .into(),
            secrets: [("sec".to_string(), b(&[("password", "s3cret")]))].into(),
        }
    }

    fn listing(files: &[VolumeFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| format!("{} {:o} {}", f.path, f.mode, String::from_utf8_lossy(&f.data)))
            .collect()
    }

    #[test]
    fn config_maps_secrets_and_downward_files() {
        let (p, f, o) = (pod(), PodFacts::default(), objects());
        let none = HashMap::new();
        let cm = vol(json!({"name": "v", "configMap": {"name": "cfg", "defaultMode": 0o600,
            "items": [{"key": "b", "path": "sub/b.txt", "mode": 0o400}]}}));
        assert_eq!(listing(&files(&cm, &p, &f, &o, &none).unwrap()), ["sub/b.txt 400 2"]);
        let all = vol(json!({"name": "v", "configMap": {"name": "cfg"}}));
        assert_eq!(
            listing(&files(&all, &p, &f, &o, &none).unwrap()),
            ["a 644 1", "b 644 2"]
        );
        let s = vol(json!({"name": "v", "secret": {"secretName": "sec"}}));
        assert_eq!(listing(&files(&s, &p, &f, &o, &none).unwrap()), ["password 644 s3cret"]);
        let d = vol(json!({"name": "v", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}}]}}));
        assert_eq!(
            listing(&files(&d, &p, &f, &o, &none).unwrap()),
            ["labels 644 app=\"web\"", "uid 644 1234-abcd"]
        );
    }

    #[test]
    fn missing_objects_fail_unless_optional() {
        let (p, f, o) = (pod(), PodFacts::default(), objects());
        let none = HashMap::new();
        let missing = vol(json!({"name": "v", "configMap": {"name": "gone"}}));
        assert_eq!(
            files(&missing, &p, &f, &o, &none).unwrap_err(),
            "MountVolume.SetUp failed for volume \"v\" : configmap \"gone\" not found"
        );
        let optional = vol(json!({"name": "v", "configMap": {"name": "gone", "optional": true}}));
        assert!(files(&optional, &p, &f, &o, &none).unwrap().is_empty());
        let bad_key = vol(json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}));
        assert!(files(&bad_key, &p, &f, &o, &none).unwrap_err().contains("zz"));
        let escape = vol(json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "../a"}]}}));
        assert!(files(&escape, &p, &f, &o, &none).unwrap_err().contains("'..'"));
    }

    #[test]
    fn the_service_account_volume_is_added_unless_disabled() {
        let with = with_service_account_volume(&pod(), None);
        let spec = with.spec.as_ref().unwrap();
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(v.name, "kube-api-access-1234a");
        for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
            let m = &c.volume_mounts.as_ref().unwrap()[0];
            assert_eq!((m.mount_path.as_str(), m.read_only), (SA_MOUNT_PATH, Some(true)));
        }
        let n = needs(v);
        assert_eq!(n.config_maps, ["kube-root-ca.crt"]);
        assert_eq!(n.tokens[0].key, "kube-api-access-1234a/token");
        assert_eq!(n.tokens[0].expiration_seconds, 3607);
        let tokens: HashMap<String, String> = [(n.tokens[0].key.clone(), "TOKEN".to_string())].into();
        let files = files(v, &with, &PodFacts::default(), &objects(), &tokens).unwrap();
        assert_eq!(
            listing(&files),
            ["token 644 TOKEN", "ca.crt 644 PEM", "namespace 644 ns"]
        );
        // Idempotent, and off when automount is false.
        assert_eq!(with_service_account_volume(&with, None), with);
        assert!(
            with_service_account_volume(&pod(), Some(false))
                .spec
                .unwrap()
                .volumes
                .is_none()
        );
    }

    #[test]
    fn host_paths_are_the_nodes_and_types_are_checked() {
        let root = testkit::Scratch::new("hostpath-types");
        assert_eq!(node_path(&root, "/etc/cni/net.d").unwrap(), root.join("etc/cni/net.d"));
        assert_eq!(node_path(&root, "/proc/1").unwrap(), PathBuf::from("/proc/1"));
        assert!(node_path(&root, "relative").is_err());
        assert!(node_path(&root, "/a/../../etc").is_err());
        let dir = root.join("made/dir");
        check_host_path("v", "/made/dir", &dir, "DirectoryOrCreate").unwrap();
        assert!(dir.is_dir());
        check_host_path("v", "/made/dir", &dir, "Directory").unwrap();
        let e = check_host_path("v", "/made/dir", &dir, "File").unwrap_err();
        assert_eq!(
            e,
            "MountVolume.SetUp failed for volume \"v\" : hostPath type check failed: /made/dir is not a file"
        );
        let file = root.join("made/f/x");
        check_host_path("v", "/made/f/x", &file, "FileOrCreate").unwrap();
        assert!(file.is_file());
        assert!(check_host_path("v", "/missing", &root.join("missing"), "Directory").is_err());
        assert!(
            check_host_path("v", "/made/dir", &dir, "Socket")
                .unwrap_err()
                .contains("socket")
        );
        assert!(check_host_path("v", "/dev/null", Path::new("/dev/null"), "CharDevice").is_ok());
        assert!(check_host_path("v", "/dev/null", Path::new("/dev/null"), "BlockDevice").is_err());
        assert!(
            check_host_path("v", "/x", &dir, "Weird")
                .unwrap_err()
                .contains("unknown")
        );
    }
}
