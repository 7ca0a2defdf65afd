//! The HTTP side of the API server: listeners and TLS, routing, fault
//! injection, authentication and authorization, then the Kubernetes REST
//! verbs on the [registry](crate::apiserver::registry), rendered as JSON
//! objects, lists, tables or watch streams.

pub(crate) mod delete_options;
pub(crate) mod faults;
pub(crate) mod listeners;
pub(crate) mod logs;
pub(crate) mod patch;
pub(crate) mod protobuf;
pub(crate) mod render;
pub(crate) mod routes;
pub(crate) mod stream;
pub(crate) mod table;
pub(crate) mod tls;
pub(crate) mod token_request;
pub(crate) mod watch;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use self::delete_options::DeleteOptions;
use self::faults::{Faults, RequestFacts};
use self::logs::LogSource;
use self::patch::PatchType;
use self::render::Repr;
use self::routes::{Query, ResourcePath, Route};
use self::watch::{Start, WatchSpec};
use crate::apiserver::auth::cache::PolicyCache;
use crate::apiserver::auth::rbac::{self, Attributes, ResourceAttributes, UserInfo};
use crate::apiserver::auth::{self, Tokens};
use crate::apiserver::discovery;
use crate::apiserver::discovery::openapi::{self, FieldValidation};
use crate::apiserver::registry::resources::{self, ids};
use crate::apiserver::registry::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::apiserver::registry::strategy::{pod, scale};
use crate::apiserver::registry::{self, Part, Store};
use crate::apiserver::status::{ApiError, success_status};

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct App {
    pub store: Store,
    pub tokens: Tokens,
    pub policy: Arc<PolicyCache>,
    pub faults: Faults,
    pub logs: Arc<RwLock<Option<Arc<dyn LogSource>>>>,
    /// The kubelet side of exec, attach and port-forward.
    pub streams: Arc<RwLock<Option<Arc<dyn stream::PodStreams>>>>,
    pub bookmark_interval: Duration,
    pub log_poll_interval: Duration,
    /// `host:port` reported in `/api`.
    pub server_address: Arc<str>,
    pub max_body_bytes: usize,
    /// The shortest lifetime a TokenRequest may ask for.
    pub min_token_expiration: Duration,
}

/// The router serving everything through one handler.
pub(crate) fn router(app: App) -> Router {
    Router::new().fallback(handle).with_state(app)
}

async fn handle(State(app): State<App>, req: Request) -> Response {
    match serve(&app, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn value_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn text_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A `Status` error response.
pub(crate) fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    value_response(code, &e.to_status())
}

/// Adds a `Warning: 299 - "<text>"` header per warning (kubectl prints them).
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The Kubernetes verb of a resource request.
fn resource_verb(method: &Method, rp: &ResourcePath, q: &Query) -> Result<&'static str, ApiError> {
    // Streaming subresources are authorized as `create` whatever the method
    // (WebSocket upgrades are GETs).
    if rp.res == ids::PODS && stream::is_streaming(rp.subresource.as_deref()) {
        return Ok("create");
    }
    Ok(match *method {
        Method::GET | Method::HEAD => {
            if rp.legacy_watch || q.flag("watch")? {
                "watch"
            } else if rp.name.is_some() {
                "get"
            } else {
                "list"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if rp.name.is_some() {
                "delete"
            } else {
                "deletecollection"
            }
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
    })
}

async fn serve(app: &App, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let route = routes::parse_path(parts.uri.path());
    let method_lc = parts.method.as_str().to_ascii_lowercase();

    // What the request is about, for faults and authorization.
    let mut verb = method_lc.clone();
    let mut verb_error = None;
    let (mut group, mut resource) = ("", "");
    let (mut sub, mut ns, mut name) = (String::new(), String::new(), String::new());
    if let (Ok(Route::Resource(rp)), Ok(q)) = (&route, &query) {
        let info = resources::info(rp.res);
        match resource_verb(&parts.method, rp, q) {
            Ok(v) => verb = v.to_string(),
            Err(e) => verb_error = Some(e),
        }
        group = info.group;
        resource = info.plural;
        sub = rp.subresource.clone().unwrap_or_default();
        ns = rp.namespace.clone().unwrap_or_default();
        name = rp.name.clone().unwrap_or_default();
        if rp.res == ids::NAMESPACES && !name.is_empty() {
            ns = name.clone();
        }
    }
    let facts = RequestFacts {
        verb: &verb,
        group,
        resource,
        subresource: &sub,
        namespace: &ns,
        name: &name,
    };
    let (delay, injected) = app.faults.check(&facts);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(e) = injected {
        return Err(e);
    }
    if let Ok(Route::Health) = route {
        return Ok(text_response(Body::from("ok")));
    }
    let user = app
        .tokens
        .authenticate(parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let policy = app.policy.current(&app.store);
    let user = auth::impersonate(&policy, user, &parts.headers)?;
    let route = route?;
    let query = query?;
    if let Some(e) = verb_error {
        return Err(e);
    }
    let attrs = match &route {
        Route::Resource(_) => Attributes::Resource(ResourceAttributes {
            verb: verb.clone(),
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: sub.clone(),
            namespace: ns.clone(),
            name: name.clone(),
        }),
        _ => Attributes::NonResource {
            verb: verb.clone(),
            path: parts.uri.path().to_string(),
        },
    };
    if !policy.allows(&user, &attrs) {
        return Err(ApiError::forbidden(
            rbac::forbidden_message(&user, &attrs),
            group,
            resource,
            &name,
        ));
    }
    let accept = header_str(&parts.headers, header::ACCEPT);
    let repr = Repr::negotiate(accept, query.get("includeObject"));
    match route {
        Route::Version => Ok(value_response(StatusCode::OK, &discovery::version())),
        Route::CoreVersions => Ok(value_response(
            StatusCode::OK,
            &discovery::api_versions(&app.server_address),
        )),
        Route::Groups => Ok(value_response(StatusCode::OK, &discovery::api_group_list())),
        Route::Group(g) => discovery::api_group(&g)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(not_found),
        Route::ResourceList { group, version } => discovery::resource_list(&group, &version)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(not_found),
        Route::Health => Ok(text_response(Body::from("ok"))),
        Route::OpenApiIndex => Ok(value_response(StatusCode::OK, &openapi::index())),
        Route::OpenApi { group, version } => openapi::group_version(&group, &version)
            .map(|v| value_response(StatusCode::OK, &v))
            .ok_or_else(not_found),
        Route::Unknown => Err(not_found()),
        Route::Resource(rp) if rp.res == ids::PODS && stream::is_streaming(rp.subresource.as_deref()) => {
            stream::handle(app, &rp, &query, &mut parts).await
        }
        Route::Resource(rp) => {
            let ctx = Ctx {
                app,
                rp: &rp,
                query: &query,
                headers: &parts.headers,
                repr,
                user: &user,
            };
            ctx.dispatch(&verb, body).await
        }
    }
}

/// A protobuf body as the JSON object it stands for.
fn protobuf_body(bytes: &[u8]) -> Result<Value, ApiError> {
    protobuf::decode(bytes).map_err(|e| {
        let reason = if e.code() == 415 {
            "UnsupportedMediaType"
        } else {
            "BadRequest"
        };
        ApiError::new(e.code(), reason, e.to_string())
    })
}

fn not_found() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

struct Ctx<'a> {
    app: &'a App,
    rp: &'a ResourcePath,
    query: &'a Query,
    headers: &'a HeaderMap,
    repr: Repr,
    user: &'a UserInfo,
}

impl Ctx<'_> {
    fn info(&self) -> &'static resources::ResourceInfo {
        resources::info(self.rp.res)
    }

    fn ns(&self) -> &str {
        self.rp.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.rp.name.as_deref().unwrap_or("")
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| !v.is_empty())
    }

    fn selectors(&self) -> Result<Selectors, ApiError> {
        let labels = LabelSelector::parse(self.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(self.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        Ok(Selectors { labels, fields })
    }

    async fn body(&self, body: Body) -> Result<Bytes, ApiError> {
        axum::body::to_bytes(body, self.app.max_body_bytes)
            .await
            .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
    }

    /// A JSON (or YAML) object body.
    async fn object_body(&self, body: Body) -> Result<Value, ApiError> {
        let bytes = self.body(body).await?;
        let ct = header_str(self.headers, header::CONTENT_TYPE);
        let v: Value = if ct.contains("yaml") {
            serde_yaml::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?
        } else if ct.contains("protobuf") {
            protobuf_body(&bytes)?
        } else if ct.contains("cbor") {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("unsupported media type {ct:?}; send application/json"),
            ));
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
        };
        if !v.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        Ok(v)
    }

    fn ok_object(&self, code: StatusCode, obj: &Arc<Value>) -> Response {
        value_response(code, &render::object(self.info(), obj, self.repr))
    }

    async fn dispatch(&self, verb: &str, body: Body) -> Result<Response, ApiError> {
        let sub = self.rp.subresource.as_deref();
        if sub.is_none() && !self.info().verbs.contains(&verb) {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({verb} {})",
                self.info().plural
            )));
        }
        if self.info().review {
            return self.review(body).await;
        }
        match (verb, sub) {
            ("get", None | Some("status" | "ephemeralcontainers")) => {
                let obj = self.app.store.get(self.rp.res, self.ns(), self.name())?;
                Ok(self.ok_object(StatusCode::OK, &obj))
            }
            ("get", Some("log")) => self.log().await,
            ("list", None) => self.list(),
            ("watch", None) => self.watch(),
            ("create", None) => self.create(body).await,
            ("create", Some("binding")) => self.bind(body).await,
            ("create", Some("eviction")) => self.evict(body).await,
            ("create", Some("token")) => {
                let request = self.object_body(body).await?;
                let app = self.app;
                let minted = token_request::create(
                    &app.store,
                    &app.tokens,
                    app.min_token_expiration,
                    self.ns(),
                    self.name(),
                    &request,
                )?;
                Ok(value_response(StatusCode::CREATED, &minted))
            }
            ("get" | "update" | "patch", Some("scale")) => self.scale(verb, body).await,
            ("update", None | Some("status" | "finalize" | "ephemeralcontainers")) => self.update(body).await,
            ("patch", None | Some("status" | "ephemeralcontainers")) => self.patch(body).await,
            ("delete", None) => self.delete(body).await,
            ("deletecollection", None) => self.delete_collection(body).await,
            _ => Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({verb} {}{})",
                self.info().plural,
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ))),
        }
    }

    /// Access reviews and whoami: evaluated against the current policy,
    /// returned with their status, never stored.
    async fn review(&self, body: Body) -> Result<Response, ApiError> {
        let mut review = self.object_body(body).await?;
        let info = self.info();
        review["apiVersion"] = json!(info.api_version());
        review["kind"] = json!(info.kind);
        if info.kind == "SelfSubjectReview" {
            review["status"] = json!({"userInfo": {"username": self.user.name, "groups": self.user.groups}});
            return Ok(value_response(StatusCode::CREATED, &review));
        }
        let subject = if info.kind == "SubjectAccessReview" {
            let s = |p: &str| review.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            let groups = review
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            UserInfo {
                name: s("/spec/user"),
                groups,
            }
        } else {
            self.user.clone()
        };
        let attrs = access_review_attributes(&review)?;
        let allowed = self.app.policy.current(&self.app.store).allows(&subject, &attrs);
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "allowed by RBAC"})
        } else {
            json!({"allowed": false})
        };
        Ok(value_response(StatusCode::CREATED, &review))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let sel = self.selectors()?;
        let limit = self
            .query
            .number("limit")?
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let page = self.app.store.list(
            self.rp.res,
            self.rp.namespace.as_deref(),
            &sel,
            limit,
            self.query.get("continue"),
        )?;
        Ok(json_response(
            StatusCode::OK,
            render::list(self.info(), &page, self.repr),
        ))
    }

    fn watch(&self) -> Result<Response, ApiError> {
        let mut selectors = self.selectors()?;
        if let Some(name) = &self.rp.name {
            selectors
                .fields
                .requirements
                .push(crate::apiserver::registry::selectors::FieldRequirement {
                    path: "metadata.name".into(),
                    value: name.clone(),
                    negated: false,
                });
        }
        let send_initial = self.query.flag("sendInitialEvents")?;
        let start = match self.query.get("resourceVersion").unwrap_or("") {
            _ if send_initial => Start::Now { initial: true },
            "" | "0" => Start::Now { initial: true },
            rv => Start::After(
                rv.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            ),
        };
        let timeout = self
            .query
            .number("timeoutSeconds")?
            .filter(|n| *n > 0)
            .map(Duration::from_secs);
        let spec = WatchSpec {
            res: self.rp.res,
            namespace: self.rp.namespace.clone(),
            selectors,
            start,
            bookmarks: self.query.flag("allowWatchBookmarks")?,
            initial_events_end: send_initial,
            timeout,
            bookmark_interval: self.app.bookmark_interval,
            repr: self.repr,
        };
        let rx = watch::start(self.app.store.clone(), self.app.faults.watch_drops(), spec);
        let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
        Ok(r)
    }

    async fn create(&self, body: Body) -> Result<Response, ApiError> {
        let obj = self.object_body(body).await?;
        let warnings = self.check_fields(&obj)?;
        let created = self.app.store.create(self.rp.res, self.ns(), obj, self.dry_run())?;
        Ok(with_warnings(self.ok_object(StatusCode::CREATED, &created), &warnings))
    }

    /// Unknown fields of a written object, per `?fieldValidation=` (see
    /// [`openapi`]): an error under `Strict`, warnings otherwise.
    fn check_fields(&self, obj: &Value) -> Result<Vec<String>, ApiError> {
        let mode = FieldValidation::parse(self.query.get("fieldValidation"))?;
        let info = match self.rp.subresource.as_deref() {
            // Status writes carry the whole object too.
            None | Some("status") => self.info(),
            Some(_) => return Ok(Vec::new()),
        };
        mode.check(info, obj)
    }

    fn part(&self) -> Part {
        match self.rp.subresource.as_deref() {
            Some("status") => Part::Status,
            Some("finalize") => Part::Finalize,
            Some("ephemeralcontainers") => Part::EphemeralContainers,
            _ => Part::Main,
        }
    }

    async fn update(&self, body: Body) -> Result<Response, ApiError> {
        let obj = self.object_body(body).await?;
        let warnings = self.check_fields(&obj)?;
        let updated = self
            .app
            .store
            .update(self.rp.res, self.ns(), self.name(), obj, self.part(), self.dry_run())?;
        Ok(with_warnings(self.ok_object(StatusCode::OK, &updated), &warnings))
    }

    async fn patch(&self, body: Body) -> Result<Response, ApiError> {
        let ct = header_str(self.headers, header::CONTENT_TYPE);
        let ty = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
        let bytes = self.body(body).await?;
        let p = patch::parse_patch(ty, &bytes).map_err(ApiError::bad_request)?;
        let store = &self.app.store;
        if ty == PatchType::Apply && store.get(self.rp.res, self.ns(), self.name()).is_err() {
            // Server-side apply of a new object creates it.
            let mut obj = patch::strategic_merge(&json!({}), &p).map_err(ApiError::bad_request)?;
            let m = registry::meta_mut(&mut obj);
            m.insert("name".into(), json!(self.name()));
            let warnings = self.check_fields(&obj)?;
            let created = store.create(self.rp.res, self.ns(), obj, self.dry_run())?;
            return Ok(with_warnings(self.ok_object(StatusCode::CREATED, &created), &warnings));
        }
        let info = self.info();
        let name = self.name().to_string();
        // Stored objects have no unknown fields: any in the result came with the patch.
        let mut warnings = Vec::new();
        let patched = store.modify(
            self.rp.res,
            self.ns(),
            self.name(),
            self.part(),
            self.dry_run(),
            |cur| {
                let next = patch::apply(ty, cur, &p).map_err(|m| ApiError::invalid(info.kind, &name, "patch", &m))?;
                warnings = self.check_fields(&next)?;
                Ok(next)
            },
        )?;
        Ok(with_warnings(self.ok_object(StatusCode::OK, &patched), &warnings))
    }

    /// The `DeleteOptions` of a DELETE: its body (none, JSON or protobuf),
    /// then the query for what the body leaves unset.
    async fn delete_options(&self, body: Body) -> Result<DeleteOptions, ApiError> {
        let bytes = self.body(body).await?;
        let opts = if bytes.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            let ct = header_str(self.headers, header::CONTENT_TYPE);
            let opts = if ct.contains("protobuf") {
                protobuf_body(&bytes)?
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            DeleteOptions::from_json(&opts)?
        };
        opts.with_query(|k| self.query.get(k).map(str::to_string))
    }

    async fn delete(&self, body: Body) -> Result<Response, ApiError> {
        let opts = self.delete_options(body).await?;
        let dry_run = opts.dry_run || self.dry_run();
        let deleted = self.app.store.delete_with(
            self.rp.res,
            self.ns(),
            self.name(),
            &opts.preconditions,
            &opts.policy(),
            dry_run,
        )?;
        Ok(self.ok_object(StatusCode::OK, &deleted))
    }

    /// `pods/<name>/eviction`: with no PodDisruptionBudgets every eviction is
    /// allowed, and deletes the pod with the eviction's options.
    async fn evict(&self, body: Body) -> Result<Response, ApiError> {
        let eviction = self.object_body(body).await?;
        let kind = eviction.get("kind").and_then(Value::as_str).unwrap_or("");
        if !kind.is_empty() && kind != "Eviction" {
            return Err(ApiError::bad_request(format!(
                "expected an Eviction body, got kind {kind:?}"
            )));
        }
        let name = eviction.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        if name != self.name() {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {:?} != {name:?}",
                self.name()
            )));
        }
        let opts = DeleteOptions::from_json(eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
        let dry_run = opts.dry_run || self.dry_run();
        let (pre, policy) = (&opts.preconditions, &opts.policy());
        self.app
            .store
            .delete_with(ids::PODS, self.ns(), self.name(), pre, policy, dry_run)?;
        let mut status = success_status(Value::Null);
        status["code"] = json!(201);
        Ok(value_response(StatusCode::CREATED, &status))
    }

    async fn delete_collection(&self, body: Body) -> Result<Response, ApiError> {
        let opts = self.delete_options(body).await?;
        let sel = self.selectors()?;
        let dry_run = opts.dry_run || self.dry_run();
        let ns = self.rp.namespace.as_deref();
        let items = self
            .app
            .store
            .delete_collection(self.rp.res, ns, &sel, &opts.policy(), dry_run)?;
        let page = registry::ListPage {
            items,
            resource_version: self.app.store.resource_version(),
            continue_token: None,
            remaining: None,
        };
        Ok(json_response(
            StatusCode::OK,
            render::list(self.info(), &page, Repr::Full),
        ))
    }

    /// `<deployments|replicasets>/<name>/scale`: the object as an
    /// `autoscaling/v1` Scale; a write changes `spec.replicas` only.
    async fn scale(&self, verb: &str, body: Body) -> Result<Response, ApiError> {
        let store = &self.app.store;
        let obj = match verb {
            "get" => store.get(self.rp.res, self.ns(), self.name())?,
            "update" => {
                let given = self.object_body(body).await?;
                store.modify(self.rp.res, self.ns(), self.name(), Part::Main, self.dry_run(), |cur| {
                    scale::apply_scale(cur, &given)
                })?
            }
            _ => {
                let ct = header_str(self.headers, header::CONTENT_TYPE);
                let ty = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
                let bytes = self.body(body).await?;
                let p = patch::parse_patch(ty, &bytes).map_err(ApiError::bad_request)?;
                let name = self.name().to_string();
                store.modify(self.rp.res, self.ns(), self.name(), Part::Main, self.dry_run(), |cur| {
                    let patched = patch::apply(ty, &scale::to_scale(cur), &p)
                        .map_err(|m| ApiError::invalid("Scale", &name, "patch", &m))?;
                    scale::apply_scale(cur, &patched)
                })?
            }
        };
        Ok(value_response(StatusCode::OK, &scale::to_scale(&obj)))
    }

    async fn bind(&self, body: Body) -> Result<Response, ApiError> {
        let binding = self.object_body(body).await?;
        let node = pod::binding_target(&binding, self.name())?;
        self.app
            .store
            .modify(ids::PODS, self.ns(), self.name(), Part::Main, self.dry_run(), |p| {
                pod::bind(p, &node)
            })?;
        Ok(value_response(StatusCode::CREATED, &success_status(Value::Null)))
    }

    /// `pods/<name>/log`.
    async fn log(&self) -> Result<Response, ApiError> {
        let pod = self.app.store.get(ids::PODS, self.ns(), self.name())?;
        let container = pod::log_container(&pod, self.query.get("container"))?;
        let previous = self.query.flag("previous")?;
        let follow = self.query.flag("follow")?;
        let tail = self.query.number("tailLines")?;
        let limit = self.query.number("limitBytes")?;
        let source = self
            .app
            .logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let ns = self.ns().to_string();
        let name = self.name().to_string();
        let fetch = {
            let source = source.clone();
            let (ns, name, container) = (ns.clone(), name.clone(), container.clone());
            move || match &source {
                Some(s) => s.logs(&ns, &name, &container, previous),
                None => Some(String::new()),
            }
        };
        let Some(mut text) = fetch() else {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: no logs available"
            )));
        };
        // A follower reads through an open handle where the source has one:
        // the last lines survive the pod's removal.
        let mut appended = Appended {
            file: None,
            partial: Vec::new(),
            sent: text.len(),
            fetch: Box::new(fetch),
        };
        if follow && !previous {
            if let Some(file) = source.as_ref().and_then(|s| s.open(&ns, &name, &container)) {
                appended.file = Some(file);
                appended.sent = 0;
                text = appended.next().unwrap_or_default();
            }
        }
        let first = {
            let t = match tail {
                Some(n) => logs::tail_lines(&text, usize::try_from(n).unwrap_or(usize::MAX)),
                None => &text,
            };
            match limit {
                Some(n) => logs::limit_bytes(t, usize::try_from(n).unwrap_or(usize::MAX)),
                None => t,
            }
            .to_string()
        };
        if !follow || previous {
            return Ok(text_response(Body::from(first)));
        }
        // Follow: stream what is appended until the container terminates,
        // the pod goes away or the client leaves; then what is left.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let store = self.app.store.clone();
        let poll = self.app.log_poll_interval;
        tokio::spawn(async move {
            if tx.send(Ok(Bytes::from(first))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    () = tx.closed() => return,
                }
                let ended = store
                    .get(ids::PODS, &ns, &name)
                    .map_or(true, |pod| pod::container_terminated(&pod, &container));
                let Some(more) = appended.next() else { return };
                if !more.is_empty() && tx.send(Ok(Bytes::from(more))).await.is_err() {
                    return;
                }
                if ended {
                    return;
                }
            }
        });
        Ok(text_response(Body::from_stream(ReceiverStream::new(rx))))
    }
}

/// What a log follower reads next: the text appended since the last call,
/// from an open file (bytes of a cut character wait for the rest) or by
/// polling the source. `None` once the source no longer has the log.
struct Appended {
    file: Option<std::fs::File>,
    partial: Vec<u8>,
    sent: usize,
    fetch: Box<dyn Fn() -> Option<String> + Send>,
}

impl Appended {
    fn next(&mut self) -> Option<String> {
        use std::io::Read;
        if let Some(file) = &mut self.file {
            let mut bytes = std::mem::take(&mut self.partial);
            file.read_to_end(&mut bytes).ok()?;
            let whole = match std::str::from_utf8(&bytes) {
                Ok(_) => bytes.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => bytes.len(), // invalid, not cut: pass it on replaced
            };
            self.partial = bytes.split_off(whole);
            return Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        let now = (self.fetch)()?;
        if now.len() < self.sent {
            self.sent = 0; // rotated or restarted: start over
        }
        if now.len() > self.sent && now.is_char_boundary(self.sent) {
            let more = now[self.sent..].to_string();
            self.sent = now.len();
            return Some(more);
        }
        Some(String::new())
    }
}

/// The request an access review asks about.
fn access_review_attributes(review: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(r) = review.pointer("/spec/resourceAttributes") {
        return Ok(Attributes::Resource(ResourceAttributes {
            verb: s(r, "verb"),
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            namespace: s(r, "namespace"),
            name: s(r, "name"),
        }));
    }
    if let Some(r) = review.pointer("/spec/nonResourceAttributes") {
        return Ok(Attributes::NonResource {
            verb: s(r, "verb"),
            path: s(r, "path"),
        });
    }
    Err(ApiError::invalid(
        "SelfSubjectAccessReview",
        "",
        "spec.resourceAttributes",
        "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}
