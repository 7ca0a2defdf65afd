//! URL routing (pure): which endpoint a path names, and query parameters.

use std::collections::HashMap;

use crate::apiserver::registry::resources::{self, ResourceId};
use crate::apiserver::status::ApiError;

/// A request path on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub res: ResourceId,
    /// The namespace in the URL (`None`: cluster-scoped or all namespaces).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub legacy_watch: bool,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    /// `/healthz`, `/livez`, `/readyz` (and their sub-paths)
    Health,
    Resource(ResourcePath),
    /// `/openapi/v3`
    OpenApiIndex,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`
    OpenApi {
        group: String,
        version: String,
    },
    /// Anything else (including `/openapi/v2`): 404.
    Unknown,
}

fn not_found() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

/// Parses a request path.
pub fn parse_path(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group((*g).to_string())),
        ["openapi", "v3"] => return Ok(Route::OpenApiIndex),
        ["openapi", "v3", "api", v] => {
            return Ok(Route::OpenApi {
                group: String::new(),
                version: (*v).to_string(),
            });
        }
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApi {
                group: (*g).to_string(),
                version: (*v).to_string(),
            });
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(Route::Unknown),
    };
    if resources::versions(group).iter().all(|v| *v != version) {
        return Err(not_found());
    }
    if rest.is_empty() {
        return Ok(Route::ResourceList {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let find = |plural: &str| resources::find(group, version, plural);
    // `namespaces/<ns>/<plural>...` for namespaced resources.
    if let ["namespaces", ns, plural, tail @ ..] = rest
        && let Some(res) = find(plural).filter(|r| resources::info(*r).namespaced)
    {
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(*name), None),
            [name, sub] => (Some(*name), Some(*sub)),
            _ => return Err(not_found()),
        };
        return resource_path(res, Some(ns), name, sub, legacy_watch);
    }
    let (plural, tail) = match rest {
        [plural, tail @ ..] => (*plural, tail),
        [] => return Err(not_found()),
    };
    let res = find(plural).ok_or_else(not_found)?;
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    if resources::info(res).namespaced && name.is_some() {
        // A namespaced object needs its namespace in the path.
        return Err(not_found());
    }
    resource_path(res, None, name, sub, legacy_watch)
}

fn resource_path(
    res: ResourceId,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    legacy_watch: bool,
) -> Result<Route, ApiError> {
    if let Some(sub) = sub
        && !resources::info(res).has_subresource(sub)
    {
        return Err(not_found());
    }
    if legacy_watch && sub.is_some() {
        return Err(not_found());
    }
    Ok(Route::Resource(ResourcePath {
        res,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        legacy_watch,
    }))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = bytes.get(i + 1).copied().and_then(hex);
                let l = bytes.get(i + 2).copied().and_then(hex);
                match (h, l) {
                    (Some(h), Some(l)) => out.push(h * 16 + l),
                    _ => return Err(ApiError::bad_request(format!("invalid percent-encoding in {s:?}"))),
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

/// Query parameters (the last occurrence of a name wins, except for
/// [`Query::all`], e.g. exec's repeated `command=`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    map: HashMap<String, Vec<String>>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut map = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(percent_decode(k)?)
                .or_insert_with(Vec::new)
                .push(percent_decode(v)?);
        }
        Ok(Query { map })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value of a repeated parameter, in order.
    pub fn all(&self, k: &str) -> &[String] {
        self.map.get(k).map(Vec::as_slice).unwrap_or_default()
    }

    /// A boolean parameter (`true`/`1`; absent = false).
    pub fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!("invalid boolean value {v:?} for {k}"))),
        }
    }

    /// An unsigned integer parameter.
    pub fn number(&self, k: &str) -> Result<Option<u64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(|n| Some(n.max(0).unsigned_abs()))
                .map_err(|_| ApiError::bad_request(format!("invalid integer value {v:?} for {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::resources::ids;

    fn rp(path: &str) -> ResourcePath {
        match parse_path(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse_path("/version").unwrap(), Route::Version);
        assert_eq!(parse_path("/version/").unwrap(), Route::Version);
        assert_eq!(parse_path("/api").unwrap(), Route::CoreVersions);
        assert_eq!(parse_path("/apis").unwrap(), Route::Groups);
        assert_eq!(parse_path("/apis/apps").unwrap(), Route::Group("apps".into()));
        assert_eq!(
            parse_path("/api/v1").unwrap(),
            Route::ResourceList {
                group: String::new(),
                version: "v1".into()
            }
        );
        assert_eq!(parse_path("/healthz").unwrap(), Route::Health);
        assert_eq!(parse_path("/openapi/v2").unwrap(), Route::Unknown);
        assert_eq!(parse_path("/openapi/v3").unwrap(), Route::OpenApiIndex);
        assert_eq!(
            parse_path("/openapi/v3/apis/apps/v1").unwrap(),
            Route::OpenApi {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(parse_path("/api/v2").unwrap_err().code, 404);
        assert_eq!(parse_path("/apis/apps/v2/daemonsets").unwrap_err().code, 404);
    }

    #[test]
    fn resource_paths() {
        let p = rp("/api/v1/namespaces/default/pods/p1/status");
        assert_eq!(
            (
                p.res,
                p.namespace.as_deref(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (ids::PODS, Some("default"), Some("p1"), Some("status"))
        );
        let p = rp("/api/v1/pods");
        assert_eq!((p.res, p.namespace, p.name), (ids::PODS, None, None));
        let p = rp("/api/v1/namespaces/kube-system");
        assert_eq!((p.res, p.name.as_deref()), (ids::NAMESPACES, Some("kube-system")));
        let p = rp("/api/v1/namespaces/x/status");
        assert_eq!(
            (p.res, p.name.as_deref(), p.subresource.as_deref()),
            (ids::NAMESPACES, Some("x"), Some("status"))
        );
        let p = rp("/api/v1/namespaces");
        assert_eq!((p.res, p.name), (ids::NAMESPACES, None));
        let p = rp("/api/v1/nodes/n1");
        assert_eq!((p.res, p.name.as_deref()), (ids::NODES, Some("n1")));
        let p = rp("/apis/rbac.authorization.k8s.io/v1/clusterroles/system:x");
        assert_eq!(p.name.as_deref(), Some("system:x"));
        let p = rp("/api/v1/watch/namespaces/default/pods/p");
        assert!(p.legacy_watch);
        assert_eq!(p.name.as_deref(), Some("p"));
        for sub in ["exec", "attach", "portforward"] {
            let p = rp(&format!("/api/v1/namespaces/default/pods/p1/{sub}"));
            assert_eq!(p.subresource.as_deref(), Some(sub));
        }
        let p = rp("/apis/apps/v1/namespaces/a/daemonsets");
        assert_eq!(p.namespace.as_deref(), Some("a"));
    }

    #[test]
    fn bad_resource_paths() {
        for bad in [
            "/api/v1/foos",
            "/api/v1/pods/p1",
            "/api/v1/namespaces/default/pods/p1/shell",
            "/api/v1/namespaces/default/pods/p1/status/more",
            "/api/v1/nodes/n1/log",
            "/apis/apps/v1/pods",
        ] {
            assert_eq!(parse_path(bad).unwrap_err().code, 404, "{bad}");
        }
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&limit=500&x")).unwrap();
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch").unwrap());
        assert!(!q.flag("missing").unwrap());
        assert_eq!(q.number("limit").unwrap(), Some(500));
        assert_eq!(q.get("x"), Some(""));
        assert!(q.number("labelSelector").is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%")).is_err());
        assert!(Query::parse(None).unwrap().get("a").is_none());
        let q = Query::parse(Some("command=sh&command=-c&command=exit+3&container=c")).unwrap();
        assert_eq!(q.all("command"), ["sh", "-c", "exit 3"]);
        assert_eq!(q.get("command"), Some("exit 3"));
        assert!(q.all("missing").is_empty());
    }
}
