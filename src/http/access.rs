//! Who may read what: callers reach their own calls (same `sub` and `org`); operators and admins
//! every call of their org (no `org`: the default org). Operator routes refuse callers with 403
//! `forbidden`; admin routes (the webhook deliveries) refuse callers and operators.

use axum::http::{HeaderMap, StatusCode};

use super::api::{authenticate, TokenQuery};
use super::error::AppError;
use crate::auth::{Claims, Role};
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// Verifies the token and requires the `operator` or `admin` role.
pub fn operator(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<Claims, AppError> {
    let claims = authenticate(state, headers, query)?;
    if !claims.role().is_operator() {
        state.metrics.error(ErrorCode::Forbidden);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this route needs an `operator` or `admin` token",
        ));
    }
    Ok(claims)
}

/// Verifies the token and requires the `admin` role.
pub fn admin(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<Claims, AppError> {
    let claims = authenticate(state, headers, query)?;
    if claims.role() != Role::Admin {
        state.metrics.error(ErrorCode::Forbidden);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this route needs an `admin` token",
        ));
    }
    Ok(claims)
}

/// Whether `claims` may read a call owned by (`sub`, `org`).
pub fn may_read(claims: &Claims, sub: &str, org: Option<&str>) -> bool {
    let same_org = org == claims.org.as_deref();
    if claims.role().is_operator() {
        same_org
    } else {
        same_org && sub == claims.sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, org: Option<&str>, role: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            exp: 0,
            org: org.map(str::to_string),
            agent: None,
            iat: None,
            nbf: None,
            role: role.map(str::to_string),
            sid: None,
        }
    }

    #[test]
    fn callers_read_their_own_operators_their_org() {
        let alice = claims("alice", Some("acme"), None);
        assert!(may_read(&alice, "alice", Some("acme")));
        assert!(!may_read(&alice, "bob", Some("acme")));
        assert!(!may_read(&alice, "alice", None));
        let op = claims("op", Some("acme"), Some("operator"));
        assert!(may_read(&op, "bob", Some("acme")));
        assert!(!may_read(&op, "bob", Some("other")));
        assert!(!may_read(&op, "bob", None));
        let default_admin = claims("root", None, Some("admin"));
        assert!(may_read(&default_admin, "bob", None));
        assert!(!may_read(&default_admin, "bob", Some("acme")));
    }
}
