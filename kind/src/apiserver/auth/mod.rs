//! Who a request is and what it may do: bearer tokens the harness mints
//! map to users (service accounts or named users with groups),
//! impersonation (`kubectl --as`), and RBAC ([`rbac`]) from the stored roles
//! and bindings, kept current by [`cache`].

pub(crate) mod cache;
pub mod rbac;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;

use self::rbac::{AUTHENTICATED_GROUP, Attributes, Policy, ResourceAttributes, UserInfo, forbidden_message};
use crate::apiserver::ids;
use crate::apiserver::status::ApiError;

/// The audience the API server accepts tokens for (kube-apiserver's
/// default `--api-audiences`: its service-account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token stands for.
#[derive(Debug, Clone)]
struct Grant {
    user: UserInfo,
    /// After this instant the token is refused (`None`: never expires).
    expires: Option<SystemTime>,
    /// Whom the token is for; empty for the harness's own tokens, which the
    /// API server always accepts.
    audiences: Vec<String>,
}

impl Grant {
    fn accepted_at(&self, now: SystemTime) -> bool {
        let live = self.expires.is_none_or(|t| now < t);
        let for_us = self.audiences.is_empty() || self.audiences.iter().any(|a| a == API_AUDIENCE);
        live && for_us
    }
}

/// The token registry (cheap to clone; clones share state).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    map: Arc<RwLock<HashMap<String, Grant>>>,
}

impl Tokens {
    /// Registers a token for a user.
    pub fn insert(&self, token: &str, user: UserInfo) {
        self.put(
            token,
            Grant {
                user,
                expires: None,
                audiences: Vec::new(),
            },
        );
    }

    fn put(&self, token: &str, grant: Grant) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_string(), grant);
    }

    /// The user a token belongs to, while it is valid for the API server
    /// (not expired, its audiences include [`API_AUDIENCE`]).
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        let now = SystemTime::now();
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let grant = map.get(token)?;
        if grant.accepted_at(now) {
            return Some(grant.user.clone());
        }
        let expired = grant.expires.is_some_and(|t| now >= t);
        drop(map);
        if expired {
            // An expired token never comes back: forget it.
            self.revoke(token);
        }
        None
    }

    /// Removes a token; later requests with it get 401.
    pub fn revoke(&self, token: &str) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(token);
    }

    /// A new token for `user`.
    pub fn mint(&self, user: UserInfo) -> String {
        let token = ids::token(32);
        self.insert(&token, user);
        token
    }

    /// A new token for `user` that expires after `ttl` and is meant for
    /// `audiences` (the API server accepts it only when they include
    /// [`API_AUDIENCE`]). Returns the token and its expiry.
    pub fn mint_expiring(&self, user: UserInfo, audiences: Vec<String>, ttl: Duration) -> (String, SystemTime) {
        let token = ids::token(32);
        // Whole seconds, as the TokenRequest's expirationTimestamp says.
        let at = (SystemTime::now() + ttl)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
        self.put(
            &token,
            Grant {
                user,
                expires: Some(expires),
                audiences,
            },
        );
        // Minting is rare (a pod start, a rotation): sweep expired ones here.
        let now = SystemTime::now();
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, g| g.expires.is_none_or(|t| now < t));
        (token, expires)
    }

    /// A new token for a named user in `groups` (plus `system:authenticated`).
    pub fn mint_user(&self, name: &str, groups: &[&str]) -> String {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        self.mint(UserInfo {
            name: name.into(),
            groups,
        })
    }

    /// Authenticates an `Authorization` header value: `Bearer <token>`.
    pub fn authenticate(&self, header: Option<&str>) -> Result<UserInfo, ApiError> {
        let header = header.ok_or_else(ApiError::unauthorized)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or_else(ApiError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::unauthorized());
        }
        self.lookup(token.trim()).ok_or_else(ApiError::unauthorized)
    }
}

/// Applies `Impersonate-User` / `Impersonate-Group` (kubectl `--as`,
/// `--as-group`) when the requester may `impersonate` those users and groups.
pub(crate) fn impersonate(policy: &Policy, user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let Some(target) = headers.get("impersonate-user").and_then(|v| v.to_str().ok()) else {
        if groups.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups without a user",
        ));
    };
    let as_sa = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let mut checks = vec![match as_sa {
        Some((ns, name)) => ("serviceaccounts", ns.to_string(), name.to_string()),
        None => ("users", String::new(), target.to_string()),
    }];
    checks.extend(groups.iter().map(|g| ("groups", String::new(), g.clone())));
    for (resource, namespace, name) in checks {
        let attrs = Attributes::Resource(ResourceAttributes {
            verb: "impersonate".into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace,
            name: name.clone(),
        });
        if !policy.allows(&user, &attrs) {
            return Err(ApiError::forbidden(
                forbidden_message(&user, &attrs),
                "",
                resource,
                &name,
            ));
        }
    }
    let mut impersonated = match as_sa {
        Some((ns, name)) => UserInfo::service_account(ns, name),
        None => UserInfo {
            name: target.to_string(),
            groups: Vec::new(),
        },
    };
    for g in groups.into_iter().chain([AUTHENTICATED_GROUP.to_string()]) {
        if !impersonated.groups.contains(&g) {
            impersonated.groups.push(g);
        }
    }
    Ok(impersonated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let t = Tokens::default();
        let sa = t.mint(UserInfo::service_account("ns", "sa"));
        let u = t.authenticate(Some(&format!("Bearer {sa}"))).unwrap();
        assert_eq!(u.name, "system:serviceaccount:ns:sa");
        assert!(t.authenticate(Some(&format!("bearer  {sa} "))).is_ok());
        assert_eq!(t.authenticate(None).unwrap_err().code, 401);
        assert_eq!(t.authenticate(Some("Bearer nope")).unwrap_err().code, 401);
        assert_eq!(t.authenticate(Some(&format!("Basic {sa}"))).unwrap_err().code, 401);
        assert_eq!(t.authenticate(Some("Bearer")).unwrap_err().code, 401);
        let bob = t.mint_user("bob", &["devs"]);
        assert_eq!(t.lookup(&bob).unwrap().groups, vec!["devs", "system:authenticated"]);
        t.revoke(&bob);
        assert!(t.lookup(&bob).is_none());
    }

    #[test]
    fn expiring_tokens_are_refused_after_expiry_and_for_other_audiences() {
        let t = Tokens::default();
        let sa = UserInfo::service_account("ns", "sa");
        let (live, expires) = t.mint_expiring(sa.clone(), vec![API_AUDIENCE.into()], Duration::from_secs(600));
        assert!(expires > SystemTime::now() + Duration::from_secs(590));
        assert_eq!(
            expires.duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos(),
            0
        );
        assert_eq!(t.lookup(&live), Some(sa.clone()));
        let (other, _) = t.mint_expiring(sa.clone(), vec!["vault".into()], Duration::from_secs(600));
        assert_eq!(t.lookup(&other), None, "a token for another audience");
        let (gone, _) = t.mint_expiring(sa, vec![API_AUDIENCE.into()], Duration::ZERO);
        assert_eq!(t.lookup(&gone), None, "an expired token");
        assert!(
            !t.map.read().unwrap().contains_key(&gone),
            "expired tokens are forgotten"
        );
        assert_eq!(t.authenticate(Some(&format!("Bearer {gone}"))).unwrap_err().code, 401);
    }
}
