//! Bearer-token authentication: tokens the harness mints map to users
//! (service accounts or named users with groups).

pub mod rbac;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::apiserver::auth::rbac::{AUTHENTICATED_GROUP, UserInfo};
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
