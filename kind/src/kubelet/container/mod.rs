//! What a container is started with, as kubelet and the runtime make it:
//! its environment ([`env`], [`downward`]), its volumes ([`volumes`],
//! written by [`atomic`]), its own mount namespace over the node's view of
//! the filesystem with the image's files and the volumes mounted
//! ([`mounts`]), and its capabilities ([`caps`]).
//!
//! [`PodFs`] is the per-pod part: the pod's directory on the node
//! (`/var/lib/kubelet/pods/<uid>`, emptyDirs and volume files, removed with
//! the pod) and its service-account tokens, minted through the TokenRequest
//! API and rotated before they expire. Like kubelet's volume sync, the
//! files of configMap, secret and projected volumes follow their objects:
//! every [`VOLUME_SYNC`] they are read again and, when changed, switched
//! atomically (`..data`), so a running container sees the new content
//! (subPath mounts keep theirs, as in Kubernetes).

pub mod atomic;
pub mod caps;
pub mod downward;
pub mod env;
pub mod mounts;
pub mod quantity;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use self::downward::PodFacts;
use self::env::Objects;
use self::mounts::{Mount, RootSpec};
use self::volumes::TokenNeed;

/// Every API call made for a container start is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// A token is renewed after this share of its lifetime, or after a day
/// (kubelet's rule).
const RENEW_AT: f64 = 0.8;
const RENEW_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often the files of a pod's configMap, secret and projected volumes
/// are brought up to date (kubelet: its sync period, a minute by default;
/// shorter here, so tests and users see changes within seconds; one GET
/// per object and period, which a node of a hundred pods affords).
pub const VOLUME_SYNC: Duration = Duration::from_secs(5);

/// Why a container cannot start: the waiting reason (and event) kubelet
/// reports, and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct StartError {
    /// `CreateContainerConfigError`, `FailedMount` or `CreateContainerError`.
    pub reason: &'static str,
    pub message: String,
}

fn config_error(message: impl Into<String>) -> StartError {
    StartError {
        reason: "CreateContainerConfigError",
        message: message.into(),
    }
}

/// The volumes of the pod's spec.
fn pod_volumes(pod: &Pod) -> Vec<Volume> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .cloned()
        .collect()
}

/// A ConfigMap's or Secret's keys with their bytes: the binary ones, then
/// the text ones (which win on a key in both).
fn keyed_bytes(
    binary: Option<BTreeMap<String, k8s_openapi::ByteString>>,
    text: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = binary.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    all.extend(text.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    all
}

fn mount_error(message: impl Into<String>) -> StartError {
    StartError {
        reason: "FailedMount",
        message: message.into(),
    }
}

/// Everything a container process is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program and its arguments, `$(VAR)` expanded.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub caps: caps::Grant,
    pub root: RootSpec,
}

/// A minted token (never printed: no `Debug`).
#[derive(Clone)]
struct Minted {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl Minted {
    fn renew_at(&self) -> SystemTime {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let share = life.mul_f64(RENEW_AT).min(RENEW_MAX_AGE);
        self.issued + share
    }
}

#[derive(Default)]
struct State {
    /// The pod with its service-account volume, once decided.
    pod: Option<Pod>,
    facts: PodFacts,
    tokens: HashMap<String, Minted>,
    /// The files last written to each volume directory.
    written: HashMap<PathBuf, Vec<atomic::VolumeFile>>,
}

struct Inner {
    client: kube::Client,
    ns: String,
    pod: Pod,
    node_root: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
    /// Held while a volume is written (a container start and the sync loop
    /// may write the same one).
    writing: Mutex<()>,
    refresher: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The filesystem side of one pod on a node (cheap to clone).
#[derive(Clone)]
pub struct PodFs {
    inner: Arc<Inner>,
}

/// The node path of a pod's directory (`/var/lib/kubelet/pods/<uid>`).
pub fn pod_dir(node_root: &Path, uid: &str) -> PathBuf {
    node_root.join("var/lib/kubelet/pods").join(uid)
}

impl PodFs {
    /// The pod's filesystem on the node whose root is `node_root`.
    pub fn new(client: kube::Client, pod: &Pod, node_root: &Path) -> PodFs {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        PodFs {
            inner: Arc::new(Inner {
                client,
                ns: pod.metadata.namespace.clone().unwrap_or_default(),
                pod: pod.clone(),
                node_root: node_root.to_path_buf(),
                dir: pod_dir(node_root, &uid),
                state: Mutex::new(State::default()),
                writing: Mutex::new(()),
                refresher: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The pod's directory on the node.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops rotating tokens and removes the pod's directory (call once
    /// its processes are gone).
    pub fn remove(&self) {
        if let Some(task) = self.inner.refresher.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
        match std::fs::remove_dir_all(&self.inner.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.inner.dir.display(), "removing the pod directory: {e}"),
        }
    }

    /// Prepares container `c` of the pod to run `exec` (from the image
    /// table) from `image` (an image directory, if any): its
    /// environment, volumes and filesystem, capabilities.
    pub async fn prepare(
        &self,
        c: &Container,
        exec: &crate::kubelet::images::Exec,
        image: Option<PathBuf>,
        facts: PodFacts,
        service_env: &[(String, String)],
        attempt: u32,
    ) -> Result<Launch, StartError> {
        let grant = caps::grant(c.security_context.as_ref()).map_err(|e| StartError {
            reason: "CreateContainerError",
            message: e,
        })?;
        let pod = self.effective_pod().await?;
        // The container as the pod (with its service-account mount) has it.
        let c = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .find(|x| x.name == c.name)
            .cloned()
            .unwrap_or_else(|| c.clone());
        let (cms, secrets) = env::sources(&c);
        let objects = self.fetch(&cms, &secrets).await.map_err(config_error)?;
        let environment = env::build(&pod, &c, &facts, &objects, service_env).map_err(|e| config_error(e.0))?;
        let mounts = self.volume_mounts(&pod, &c, &facts, &environment).await?;
        let mut argv = vec![exec.program.to_string_lossy().into_owned()];
        argv.extend(env::expand_all(&exec.args, &environment));
        let work = self
            .inner
            .dir
            .join("containers")
            .join(&c.name)
            .join(format!("fs-{attempt}"));
        std::fs::create_dir_all(&work).map_err(|e| StartError {
            reason: "CreateContainerError",
            message: format!("creating {}: {e}", work.display()),
        })?;
        Ok(Launch {
            argv,
            env: environment,
            caps: grant,
            root: RootSpec {
                work,
                image,
                mounts,
                workdir: c.working_dir.clone().filter(|w| !w.is_empty()),
            },
        })
    }

    /// The pod with the automatic service-account volume when it gets one
    /// (`automountServiceAccountToken` of the pod, else of its account).
    async fn effective_pod(&self) -> Result<Pod, StartError> {
        if let Some(p) = &self.inner.state.lock().await.pod {
            return Ok(p.clone());
        }
        let spec = self.inner.pod.spec.as_ref();
        let mut automount = spec.and_then(|s| s.automount_service_account_token);
        if automount.is_none() {
            let sa = spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            let account = self.get_opt::<ServiceAccount>("serviceaccount", &sa).await;
            match account.map_err(config_error)? {
                Some(account) => automount = account.automount_service_account_token,
                None => return Err(config_error(format!("serviceaccount {sa:?} not found"))),
            }
        }
        let pod = volumes::with_service_account_volume(&self.inner.pod, automount);
        self.inner.state.lock().await.pod = Some(pod.clone());
        Ok(pod)
    }

    /// Where a volume of the pod lives on the node, by its plugin (as the
    /// kubelet lays it out).
    fn volume_dir(&self, plugin: &str, volume: &str) -> PathBuf {
        self.inner
            .dir
            .join("volumes")
            .join(format!("kubernetes.io~{plugin}"))
            .join(volume)
    }

    /// A namespaced object of the pod's namespace, `None` when there is no
    /// such object; `what` names its kind in the error.
    async fn get_opt<K>(&self, what: &str, name: &str) -> Result<Option<K>, String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.inner.client.clone(), &self.inner.ns);
        match tokio::time::timeout(API_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(format!("getting {what} {name:?}: {e}")),
            Err(_) => Err(format!("getting {what} {name:?}: timed out")),
        }
    }

    async fn fetch(&self, cms: &[String], secrets: &[String]) -> Result<Objects, String> {
        let mut objects = Objects::default();
        for name in cms {
            let cm = self.get_opt::<ConfigMap>("configmap", name).await?;
            let data = cm.map(|cm| keyed_bytes(cm.binary_data, cm.data));
            objects.config_maps.insert(name.clone(), data);
        }
        for name in secrets {
            let secret = self.get_opt::<Secret>("secret", name).await?;
            let data = secret.map(|s| keyed_bytes(s.data, s.string_data));
            objects.secrets.insert(name.clone(), data);
        }
        Ok(objects)
    }

    /// The container's mounts, each volume made ready (hostPath checked,
    /// emptyDir created, files written).
    async fn volume_mounts(
        &self,
        pod: &Pod,
        c: &Container,
        facts: &PodFacts,
        environment: &[(String, String)],
    ) -> Result<Vec<Mount>, StartError> {
        let all = pod_volumes(pod);
        let mut ready: HashMap<String, PathBuf> = HashMap::new();
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let v = all
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| mount_error(format!("volume {:?} is not in the pod's volumes", m.name)))?;
            let base = match ready.get(&v.name) {
                Some(p) => p.clone(),
                None => {
                    let p = self.materialize(v, pod, facts).await?;
                    ready.insert(v.name.clone(), p.clone());
                    p
                }
            };
            let sub = match (&m.sub_path, &m.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => Some(s.clone()),
                (_, Some(e)) if !e.is_empty() => Some(env::expand_all(std::slice::from_ref(e), environment).remove(0)),
                _ => None,
            };
            let source = match sub {
                None => base,
                Some(sub) => {
                    atomic::check_path(&sub).map_err(|e| mount_error(format!("subPath of {:?}: {e}", m.name)))?;
                    let path = base.join(&sub);
                    // kubelet creates a missing subPath of a writable volume
                    // as a directory.
                    if !path.exists() && !volumes::forced_read_only(v) {
                        std::fs::create_dir_all(&path)
                            .map_err(|e| mount_error(format!("creating subPath {sub:?} of {:?}: {e}", m.name)))?;
                    }
                    path
                }
            };
            mounts.push(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only == Some(true) || volumes::forced_read_only(v),
            });
        }
        Ok(mounts)
    }

    /// Makes volume `v` ready; returns its harness path.
    async fn materialize(&self, v: &Volume, pod: &Pod, facts: &PodFacts) -> Result<PathBuf, StartError> {
        if let Some(h) = &v.host_path {
            let path = volumes::node_path(&self.inner.node_root, &h.path)
                .map_err(|e| mount_error(format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name)))?;
            volumes::check_host_path(&v.name, &h.path, &path, h.type_.as_deref().unwrap_or("")).map_err(mount_error)?;
            return Ok(path);
        }
        let Some(plugin) = volumes::plugin(v) else {
            return Err(mount_error(format!(
                "MountVolume.SetUp failed for volume {:?} : this kubelet does not support the volume's type",
                v.name
            )));
        };
        let dir = self.volume_dir(plugin, &v.name);
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| mount_error(format!("creating {}: {e}", dir.display())))?;
            return Ok(dir);
        }
        self.write_volume(v, pod, facts, &dir, false).await?;
        Ok(dir)
    }

    /// Writes the files of a configMap, secret, downwardAPI or projected
    /// volume when they differ from what the directory has; tokens are
    /// minted when missing, due or `renew`ed. Keeps the volume in sync from
    /// then on.
    async fn write_volume(
        &self,
        v: &Volume,
        pod: &Pod,
        facts: &PodFacts,
        dir: &Path,
        renew: bool,
    ) -> Result<(), StartError> {
        let _writing = self.inner.writing.lock().await;
        let needs = volumes::needs(v);
        let objects = self
            .fetch(&needs.config_maps, &needs.secrets)
            .await
            .map_err(mount_error)?;
        let mut tokens = HashMap::new();
        for need in &needs.tokens {
            let current = self.inner.state.lock().await.tokens.get(&need.key).cloned();
            let fresh = current.filter(|m| !renew && SystemTime::now() < m.renew_at());
            let minted = match fresh {
                Some(m) => m,
                None => {
                    let m = self
                        .mint(need, pod)
                        .await
                        .map_err(|e| mount_error(format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name)))?;
                    self.inner.state.lock().await.tokens.insert(need.key.clone(), m.clone());
                    m
                }
            };
            tokens.insert(need.key.clone(), minted.token);
        }
        let files = volumes::files(v, pod, facts, &objects, &tokens).map_err(mount_error)?;
        let unchanged = self.inner.state.lock().await.written.get(dir) == Some(&files);
        if !unchanged || !dir.join("..data").exists() {
            atomic::write(dir, &files).map_err(|e| mount_error(format!("writing {}: {e}", dir.display())))?;
            let mut state = self.inner.state.lock().await;
            state.written.insert(dir.to_path_buf(), files);
            state.facts = facts.clone();
        }
        self.ensure_refresher();
        Ok(())
    }

    /// A token for the pod's service account through the TokenRequest API,
    /// bound to the pod.
    async fn mint(&self, need: &TokenNeed, pod: &Pod) -> Result<Minted, String> {
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: need.audience.iter().cloned().collect(),
                expiration_seconds: Some(need.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.inner.client.clone(), &self.inner.ns);
        let params = PostParams::default();
        let call = api.create_token_request(&sa, &params, &request);
        let answer = match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("requesting a token for serviceaccount {sa:?}: {e}")),
            Err(_) => return Err(format!("requesting a token for serviceaccount {sa:?}: timed out")),
        };
        let status = answer
            .status
            .ok_or_else(|| format!("the token request for serviceaccount {sa:?} returned no token"))?;
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(status.expiration_timestamp.0.as_second().max(0).unsigned_abs());
        Ok(Minted {
            token: status.token,
            issued: SystemTime::now(),
            expires,
        })
    }

    fn ensure_refresher(&self) {
        let Ok(mut slot) = self.inner.refresher.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let this = self.clone();
        *slot = Some(tokio::spawn(async move { this.refresh_loop().await }));
    }

    /// For as long as the pod lives: rewrites every projected volume whose
    /// token is due, before it expires, and every volume whose objects
    /// changed.
    async fn refresh_loop(self) {
        loop {
            let next = {
                let state = self.inner.state.lock().await;
                state.tokens.values().map(Minted::renew_at).min()
            };
            let wait = next
                .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
                .unwrap_or(VOLUME_SYNC)
                .min(VOLUME_SYNC);
            tokio::time::sleep(wait).await;
            if let Err(e) = self.sync().await {
                // The files stay as they were (kubelet keeps them too).
                tracing::warn!(pod = ?self.inner.pod.metadata.name, "updating a volume: {e}");
            }
        }
    }

    /// Brings every written volume up to date, renewing the tokens due.
    async fn sync(&self) -> Result<(), StartError> {
        let (pod, facts, due) = {
            let state = self.inner.state.lock().await;
            let now = SystemTime::now();
            let due: Vec<String> = state
                .tokens
                .iter()
                .filter(|(_, m)| now >= m.renew_at())
                .map(|(k, _)| k.clone())
                .collect();
            (state.pod.clone(), state.facts.clone(), due)
        };
        let Some(pod) = pod else { return Ok(()) };
        let volumes = pod_volumes(&pod);
        let mut failed = Ok(());
        for v in volumes {
            let Some(plugin) = volumes::plugin(&v) else { continue };
            let dir = self.volume_dir(plugin, &v.name);
            if !self.inner.state.lock().await.written.contains_key(&dir) {
                continue;
            }
            let renew = volumes::needs(&v).tokens.iter().any(|t| due.contains(&t.key));
            // One volume failing (its ConfigMap deleted) leaves the others syncing.
            if let Err(e) = self.write_volume(&v, &pod, &facts, &dir, renew).await {
                failed = Err(e);
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_four_fifths_of_their_life_or_after_a_day() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = |secs: u64| Minted {
            token: String::new(),
            issued: t0,
            expires: t0 + Duration::from_secs(secs),
        };
        assert_eq!(m(3600).renew_at(), t0 + Duration::from_secs(2880));
        assert_eq!(m(3607).renew_at(), t0 + Duration::from_millis(2_885_600));
        assert_eq!(m(7 * 24 * 3600).renew_at(), t0 + RENEW_MAX_AGE);
    }
}
