//! Who acts for an org on the control-plane routes: an org's API key
//! (`Authorization: Bearer vxk_...`, see `crate::keys`) or an `admin` token of the org. Routes
//! that an org's backend calls take a [`Principal`] from [`principal`] and act on
//! `principal.org` only, so a key of one org can do nothing in another.
//!
//! A key is looked up in the store on every request (no cache), so a revoked key stops working
//! at once; its secret is compared with the stored hash in constant time, and its last use is
//! noted. The key itself is never logged, and only read from the `Authorization` header (never
//! from a query string, which ends up in access logs).
//!
//! Used by `POST /api/sessions`; other org routes (agents, usage, limits) can adopt it as is.

use axum::http::{HeaderMap, StatusCode};
use tracing::{debug, warn};

use super::error::AppError;
use crate::auth::{token_from_request, AuthError, Role};
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An API key, by its id (never its secret).
    Key { id: String },
    /// An `admin` token, by its `sub`.
    Admin { sub: String },
}

/// An org and who acts for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The org acted on: the key's, or the admin token's (`None`: the default org).
    pub org: Option<String>,
    pub actor: Actor,
}

impl Principal {
    /// `key:<id>` or `admin:<sub>`, for logs and audit entries.
    pub fn label(&self) -> String {
        match &self.actor {
            Actor::Key { id } => format!("key:{id}"),
            Actor::Admin { sub } => format!("admin:{sub}"),
        }
    }

    /// The API key's id, if a key acted.
    pub fn key_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::Key { id } => Some(id),
            Actor::Admin { .. } => None,
        }
    }
}

fn invalid_key(state: &AppState) -> AppError {
    state.metrics.error(ErrorCode::InvalidApiKey);
    AppError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidApiKey,
        "invalid API key: unknown, revoked or malformed",
    )
}

/// The org and actor of a request: an org API key, or an `admin` token (other roles: 403
/// `forbidden`). Missing or bad tokens are 401 `unauthorized`; a bad, unknown or revoked key is
/// 401 `invalid_api_key`; a store that cannot answer is 503 `store_unavailable`.
pub async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, AppError> {
    let Some(bearer) = token_from_request(headers, None) else {
        state.metrics.error(ErrorCode::Unauthorized);
        return Err(AuthError::Missing.into());
    };
    if crate::keys::looks_like_key(bearer) {
        return api_key(state, bearer).await;
    }
    let claims = state.auth.verify(bearer).map_err(|e| {
        state.metrics.error(ErrorCode::Unauthorized);
        AppError::from(e)
    })?;
    if claims.role() != Role::Admin {
        state.metrics.error(ErrorCode::Forbidden);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this route needs an API key of the org or an `admin` token",
        ));
    }
    Ok(Principal {
        org: claims.org,
        actor: Actor::Admin { sub: claims.sub },
    })
}

async fn api_key(state: &AppState, text: &str) -> Result<Principal, AppError> {
    let Some(presented) = crate::keys::parse(text) else {
        debug!("a malformed API key was refused");
        return Err(invalid_key(state));
    };
    let store = &state.call_services.store;
    let row = store.key(presented.id).await.map_err(|e| {
        warn!(error = %e, "cannot read API keys from the store");
        state.metrics.error(ErrorCode::StoreUnavailable);
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreUnavailable,
            "the store is unavailable; try again",
        )
    })?;
    // The hash is compared even for a revoked key, so both refusals take the same time.
    let valid = row
        .as_ref()
        .is_some_and(|r| crate::keys::matches(presented.secret, &r.secret_sha256));
    let Some(row) = row.filter(|r| valid && r.revoked_at_ms.is_none()) else {
        debug!(key_id = %presented.id, "an API key was refused");
        return Err(invalid_key(state));
    };
    if let Err(e) = store
        .touch_key(&row.id, crate::call::record::now_ms())
        .await
    {
        warn!(error = %e, key_id = %row.id, "cannot note an API key's use");
    }
    Ok(Principal {
        org: Some(row.org),
        actor: Actor::Key { id: row.id },
    })
}
