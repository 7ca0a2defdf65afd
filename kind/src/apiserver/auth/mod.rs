//! Who a request is and what it may do: bearer tokens the harness mints
//! map to users (service accounts or named users with groups),
//! impersonation (`kubectl --as`), and RBAC ([`rbac`]) from the stored roles
//! and bindings, kept current by [`cache`].

pub(crate) mod cache;
pub mod rbac;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::HeaderMap;

use self::rbac::{AUTHENTICATED_GROUP, Attributes, Policy, UserInfo, forbidden_message};
use crate::apiserver::ids;
use crate::apiserver::status::ApiError;

/// The token registry (cheap to clone; clones share state).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    map: Arc<RwLock<HashMap<String, UserInfo>>>,
}

impl Tokens {
    /// Registers a token for a user.
    pub fn insert(&self, token: &str, user: UserInfo) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.to_string(), user);
    }

    /// The user a token belongs to.
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()
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
        let attrs = Attributes::Resource {
            verb: "impersonate".into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace,
            name: name.clone(),
        };
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
}
