//! An embedded Kubernetes API server speaking the real REST API over HTTPS.
//!
//! [`ApiServer::start`] generates a CA and a serving certificate, binds its
//! listeners and serves namespaces, nodes, pods (with `status`, `log` and
//! `binding`), events, service accounts, config maps, secrets, daemon sets,
//! leases and the RBAC kinds from memory. Clients are unmodified: `kube`
//! (`Api`, `watcher`, `reflector`) through [`ApiServer::client`] and
//! `kubectl` through [`ApiServer::write_kubeconfig`].
//!
//! - Authentication: bearer tokens. [`ApiServer::admin_token`] is in
//!   `system:masters`; [`ApiServer::mint_token`] issues service-account
//!   tokens (`system:serviceaccount:<ns>:<name>`), [`ApiServer::mint_user_token`]
//!   tokens for named users and groups; the TokenRequest API
//!   (`serviceaccounts/<name>/token`) mints expiring, audience-bound
//!   service-account tokens, refused once expired or when not meant for
//!   the API server. `Impersonate-User`/`-Group`
//!   (`kubectl --as`) for those allowed to `impersonate`.
//! - Authorization: RBAC from the stored ClusterRoles, Roles and bindings
//!   (403 `Forbidden`; 401 for a missing or unknown token); access reviews
//!   (`kubectl auth can-i`, `kubectl auth whoami`) answer from the same policy.
//! - Verbs: get, list (`limit`/`continue`), watch (resourceVersions,
//!   bookmarks, `410 Gone`, `timeoutSeconds`, `sendInitialEvents`), create,
//!   update, patch (merge, strategic merge, JSON patch; apply patches are
//!   approximated by a strategic merge), delete (uid/resourceVersion
//!   preconditions), deletecollection; label and field selectors; Table and
//!   PartialObjectMetadata responses; `pods/log` (with follow) from a
//!   [`LogSource`]; `pods/exec`, `pods/attach` and `pods/portforward` over
//!   WebSocket (and SPDY for port-forward) from [`PodStreams`]; `pods/binding`; `fieldValidation` on writes (unknown
//!   fields refused under `Strict`, a `Warning` header under `Warn`, the
//!   default), with the `/openapi/v3` documents that make kubectl use it.
//! - Faults ([`Faults`]): latency, injected errors, dropped watches; and
//!   [`ApiServer::go_down`] / [`ApiServer::come_up`] on the same addresses,
//!   each rebound in the network namespace it was first bound in.
//!
//! Namespaces are deleted as in Kubernetes: marked `Terminating`, closed to
//! new content, removed once `namespaces/<name>/finalize` clears their
//! finalizers; emptying them and giving new ones their `default`
//! ServiceAccount and `kube-root-ca.crt` is the job of
//! [`crate::controllers`], which run beside the server.
//!
//! Deletes follow Kubernetes too: a pod on a node is marked with its grace
//! period until its kubelet deletes it with grace 0; an object with
//! `metadata.finalizers` is marked until an update empties them; the
//! `Foreground` and `Orphan` propagation policies become the garbage
//! collector's finalizers (see `registry::strategy::deletion`).
//!
//! Not implemented: server-side apply field ownership, most admission and validation
//! (immutable pod fields, RBAC escalation checks), OpenAPI schemas
//! (`/openapi/v3` serves only what kubectl's default validation needs:
//! operations that take `fieldValidation`, which the server then honours by
//! strict decoding against the typed structs; `/openapi/v2` is 404),
//! protobuf bodies of kinds the server does not serve (the served built-in
//! kinds are read from protobuf; responses are always JSON, which every
//! client accepts), PodDisruptionBudgets (every `pods/eviction` is allowed),
//! consistent reads at old resourceVersions (lists always return the current
//! state).

mod auth;
mod discovery;
mod http;
mod ids;
mod registry;
mod status;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;

pub use auth::Tokens;
pub use auth::rbac::{Policy, UserInfo};
pub use http::faults::{FaultMatch, Faults, Predicate, RequestFacts};
pub use http::logs::{LogSource, MemoryLogs};
pub use http::patch::PatchType;
pub use http::stream::{
    BoxFuture, BoxRead, BoxWrite, PodStreams, Session, StreamError, StreamOptions, StreamTarget, TerminalSize,
};
pub use registry::resources::{self, RESOURCES, ResourceId, ResourceInfo};
pub use registry::selectors::{FieldSelector, LabelSelector, Selectors};
pub use registry::{
    DeletePolicy, Event, EventType, FOREGROUND, ListPage, ORPHAN, Part, Preconditions, Propagation, Store, StoreOptions,
};
pub use status::ApiError;

/// Errors starting or restarting the server, or building clients.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("generating certificates: {0}")]
    Tls(String),
    #[error("binding listener: {0}")]
    Bind(#[from] io::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kube client: {0}")]
    Client(#[from] kube::Error),
    #[error("the server has no HTTPS listener")]
    NoHttpsListener,
}

/// How to run the server.
#[derive(Debug)]
pub struct ApiServerOptions {
    /// HTTPS addresses to bind, in the network namespace of the thread that
    /// calls [`ApiServer::start`]. Default: `127.0.0.1:0` (a free port).
    pub listen: Vec<SocketAddr>,
    /// Already bound HTTPS listeners (e.g. bound inside another network
    /// namespace); served before `listen`.
    pub listeners: Vec<StdListener>,
    /// Plain-HTTP addresses (off by default).
    pub http_listen: Vec<SocketAddr>,
    /// Already bound plain-HTTP listeners.
    pub http_listeners: Vec<StdListener>,
    /// Extra DNS names or IP addresses for the serving certificate (besides
    /// localhost, 127.0.0.1, ::1, kubernetes, kubernetes.default,
    /// kubernetes.default.svc[.cluster.local] and the bound addresses).
    pub extra_sans: Vec<String>,
    /// Events kept per resource for watches; older resourceVersions get
    /// `410 Gone`.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How often `pods/log?follow=true` polls the [`LogSource`].
    pub log_poll_interval: Duration,
    /// The admin token (`system:masters`); random when `None`.
    pub admin_token: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The shortest lifetime a TokenRequest may ask for (kube-apiserver's
    /// 10 minutes; tests of expiry lower it).
    pub min_token_expiration: Duration,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)],
            listeners: Vec::new(),
            http_listen: Vec::new(),
            http_listeners: Vec::new(),
            extra_sans: Vec::new(),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(5),
            log_poll_interval: Duration::from_millis(200),
            admin_token: None,
            max_body_bytes: 8 << 20,
            min_token_expiration: Duration::from_secs(600),
        }
    }
}

struct Inner {
    app: http::App,
    tls: Arc<rustls::ServerConfig>,
    ca_pem: String,
    admin_token: String,
    listeners: tokio::sync::Mutex<http::listeners::Listeners>,
    https_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
}

/// A running API server (cheap to clone; clones control the same server).
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("https", &self.inner.https_addr)
            .field("http", &self.inner.http_addr)
            .finish_non_exhaustive()
    }
}

/// `https://host:port` for an address clients can dial (a wildcard address
/// becomes loopback).
fn url_for(scheme: &str, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", addr.port()),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", addr.port()),
    }
}

impl ApiServer {
    /// Generates the PKI, binds the listeners and starts serving.
    pub async fn start(opts: ApiServerOptions) -> Result<ApiServer, ApiServerError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (mut listeners, socks) =
            http::listeners::Listeners::bind(&opts.listen, opts.listeners, &opts.http_listen, opts.http_listeners)?;
        let mut sans = opts.extra_sans.clone();
        for slot in &listeners.slots {
            let ip = slot.addr.ip();
            if !ip.is_unspecified() {
                sans.push(ip.to_string());
            }
        }
        let pki = http::tls::generate(&sans).map_err(ApiServerError::Tls)?;
        let https_addr = listeners.slots.iter().find(|s| s.tls).map(|s| s.addr);
        let http_addr = listeners.slots.iter().find(|s| !s.tls).map(|s| s.addr);
        let server_address = https_addr
            .or(http_addr)
            .map(|a| url_for("x", a).trim_start_matches("x://").to_string())
            .unwrap_or_default();
        let store = Store::new(StoreOptions {
            watch_history: opts.watch_history,
        });
        let tokens = Tokens::default();
        let admin_token = opts.admin_token.clone().unwrap_or_else(|| ids::token(32));
        tokens.insert(&admin_token, UserInfo::admin());
        let app = http::App {
            store,
            tokens,
            policy: Arc::default(),
            faults: Faults::default(),
            logs: Arc::new(RwLock::new(None)),
            streams: Arc::new(RwLock::new(None)),
            bookmark_interval: opts.bookmark_interval,
            log_poll_interval: opts.log_poll_interval,
            server_address: server_address.into(),
            max_body_bytes: opts.max_body_bytes,
            min_token_expiration: opts.min_token_expiration,
        };
        listeners.serve(socks, http::router(app.clone()), pki.server_config.clone())?;
        Ok(ApiServer {
            inner: Arc::new(Inner {
                app,
                tls: pki.server_config,
                ca_pem: pki.ca_pem,
                admin_token,
                listeners: tokio::sync::Mutex::new(listeners),
                https_addr,
                http_addr,
            }),
        })
    }

    /// The URL of the first HTTPS listener (empty when there is none).
    pub fn https_url(&self) -> String {
        self.inner.https_addr.map(|a| url_for("https", a)).unwrap_or_default()
    }

    /// The URL of the first plain-HTTP listener, if any.
    pub fn http_url(&self) -> Option<String> {
        self.inner.http_addr.map(|a| url_for("http", a))
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem.clone()
    }

    /// A token in `system:masters` (allowed everything).
    pub fn admin_token(&self) -> String {
        self.inner.admin_token.clone()
    }

    /// A token for service account `namespace/service_account`, creating the
    /// namespace and the ServiceAccount object when missing.
    pub fn mint_token(&self, namespace: &str, service_account: &str) -> String {
        let store = &self.inner.app.store;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        if let Err(e) = store.create(resources::ids::NAMESPACES, "", ns, false)
            && e.code != 409
        {
            tracing::warn!("mint_token: creating namespace {namespace}: {e}");
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace}});
        if let Err(e) = store.create(resources::ids::SERVICEACCOUNTS, namespace, sa, false)
            && e.code != 409
        {
            tracing::warn!("mint_token: creating service account {namespace}/{service_account}: {e}");
        }
        self.inner
            .app
            .tokens
            .mint(UserInfo::service_account(namespace, service_account))
    }

    /// A token for a named user in `groups` (plus `system:authenticated`).
    pub fn mint_user_token(&self, user: &str, groups: &[&str]) -> String {
        self.inner.app.tokens.mint_user(user, groups)
    }

    /// The token registry (to revoke tokens or register fixed ones).
    pub fn tokens(&self) -> Tokens {
        self.inner.app.tokens.clone()
    }

    /// A kubeconfig (YAML) for the HTTPS URL with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        self.kubeconfig_for(&self.https_url(), token)
    }

    /// A kubeconfig (YAML) for another URL of this server (e.g. the cluster
    /// network gateway address, which must be among `extra_sans`).
    pub fn kubeconfig_for(&self, server: &str, token: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.inner.ca_pem.as_bytes());
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "istio-cni-kind", "cluster": {"server": server, "certificate-authority-data": ca}}],
            "users": [{"name": "istio-cni-kind-user", "user": {"token": token}}],
            "contexts": [{"name": "istio-cni-kind", "context": {
                "cluster": "istio-cni-kind", "user": "istio-cni-kind-user", "namespace": "default"}}],
            "current-context": "istio-cni-kind",
            "preferences": {},
        });
        serde_yaml::to_string(&doc).unwrap_or_default()
    }

    /// Writes [`ApiServer::kubeconfig`] to `path` (mode 0600).
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(self.kubeconfig(token).as_bytes())
    }

    /// A `kube::Client` with the admin token.
    ///
    /// # Panics
    /// Never for a started server (the generated kubeconfig is always valid);
    /// use [`ApiServer::try_client_for`] to get the error instead.
    pub async fn client(&self) -> kube::Client {
        self.client_for(&self.inner.admin_token).await
    }

    /// A `kube::Client` with `token` (see [`ApiServer::client`]).
    pub async fn client_for(&self, token: &str) -> kube::Client {
        match self.try_client_for(token).await {
            Ok(c) => c,
            Err(e) => panic!("building a kube client for the embedded API server: {e}"),
        }
    }

    /// A `kube::Client` with `token`, trusting the server's CA.
    pub async fn try_client_for(&self, token: &str) -> Result<kube::Client, ApiServerError> {
        if self.inner.https_addr.is_none() {
            return Err(ApiServerError::NoHttpsListener);
        }
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(token))
            .map_err(|e| ApiServerError::Kubeconfig(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ApiServerError::Kubeconfig(e.to_string()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The fault-injection handle.
    pub fn faults(&self) -> Faults {
        self.inner.app.faults.clone()
    }

    /// Where `pods/<name>/log` reads container logs from.
    pub fn set_log_source(&self, src: Arc<dyn LogSource>) {
        *self
            .inner
            .app
            .logs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(src);
    }

    /// The kubelet side of `pods/log`, `pods/exec`, `pods/attach` and
    /// `pods/portforward` (it replaces the log source).
    pub fn set_pod_streams(&self, src: Arc<dyn PodStreams>) {
        let app = &self.inner.app;
        *app.logs.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(src.clone());
        *app.streams.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(src);
    }

    /// In-process access to the objects (the same state clients see).
    pub fn store(&self) -> Store {
        self.inner.app.store.clone()
    }

    /// Every address the server listens on (HTTPS first).
    pub async fn addresses(&self) -> Vec<SocketAddr> {
        self.inner.listeners.lock().await.slots.iter().map(|s| s.addr).collect()
    }

    /// Whether the server is accepting connections.
    pub async fn is_up(&self) -> bool {
        self.inner.listeners.lock().await.is_running()
    }

    /// Takes the server down: closes the listeners and cuts every open
    /// connection (watches end abruptly). The store keeps its state.
    pub async fn go_down(&self) {
        self.inner.listeners.lock().await.stop().await;
    }

    /// Brings the server back on the same addresses and ports (each in the
    /// network namespace it was first bound in). A no-op when it is up.
    pub async fn come_up(&self) -> Result<(), ApiServerError> {
        let mut l = self.inner.listeners.lock().await;
        if l.is_running() {
            return Ok(());
        }
        let socks = l.rebind().await?;
        l.serve(socks, http::router(self.inner.app.clone()), self.inner.tls.clone())?;
        Ok(())
    }

    /// Stops serving for good.
    pub async fn shutdown(self) {
        self.go_down().await;
    }
}
