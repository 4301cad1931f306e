//! Small JSON endpoints: call history for its owner, demo tokens on loopback, agents, health
//! and Prometheus metrics.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::AppError;
use crate::auth::{token_from_request, Claims, Role};
use crate::protocol::ErrorCode;
use crate::server::AppState;

#[derive(Deserialize, Default)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// Verifies the request's token, counting failures in metrics.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: &TokenQuery,
) -> Result<Claims, AppError> {
    let token =
        token_from_request(headers, query.token.as_deref()).ok_or(crate::auth::AuthError::Missing);
    token.and_then(|t| state.auth.verify(t)).map_err(|e| {
        state.metrics.error(ErrorCode::Unauthorized);
        AppError::from(e)
    })
}

#[derive(Deserialize, Default)]
pub struct DemoTokenQuery {
    /// `caller` (the default) or `operator`.
    pub role: Option<String>,
}

/// Short-lived tokens for the demo page, only in demo mode (no `JWT_SECRET`) on a loopback bind:
/// a caller's (`demo`), or with `?role=operator` an operator's (`demo-operator`) of the default
/// org, which watches the demo calls.
pub async fn demo_token(
    State(state): State<Arc<AppState>>,
    Query(q): Query<DemoTokenQuery>,
) -> Result<impl IntoResponse, AppError> {
    if !state.demo_mode || !state.config.bind.ip().is_loopback() {
        return Err(AppError::not_found(
            "demo tokens are only served in local demo mode",
        ));
    }
    let role = match q.role.as_deref() {
        None | Some("caller") => Role::Caller,
        Some("operator") => Role::Operator,
        Some(_) => {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidParameter,
                "`role` must be `caller` or `operator`",
            ))
        }
    };
    let sub = match role {
        Role::Caller => "demo",
        _ => "demo-operator",
    };
    let ttl = state.config.demo_token_ttl;
    let token = state
        .auth
        .issue_with_role(sub, None, None, role, ttl)
        .map_err(AppError::internal)?;
    Ok(Json(
        json!({ "token": token, "expires_in": ttl.as_secs(), "sub": sub, "role": role.as_str() }),
    ))
}

pub async fn health(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "live_calls": state.calls.live_calls(),
        "engines": state.engines.names(),
    }))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
