//! `POST /api/sessions`: an org's backend (with its API key, or an admin token of the org)
//! mints a short-lived call token for one subject, bound to an agent and to variables the
//! client cannot override. The browser gets the token, never the key. The session is stored;
//! the token carries its id (`sid`) and reaches one call (and its resumption) only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::calls::unavailable;
use super::error::AppError;
use super::principal::principal;
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Token lifetime when the request names none, and its bounds, in seconds.
pub const DEFAULT_TTL_S: u64 = 300;
pub const MIN_TTL_S: u64 = 10;
pub const MAX_TTL_S: u64 = 3600;
/// Longest `sub`, in characters.
pub const MAX_SUB_CHARS: usize = 128;
/// Most bound variables, and the longest value of one, in bytes.
pub const MAX_VARIABLES: usize = 32;
pub const MAX_VARIABLE_BYTES: usize = 1024;
/// Largest `metadata` object, as JSON, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    /// The agent; the server's default when left out.
    #[serde(default)]
    agent: Option<String>,
    sub: String,
    #[serde(default)]
    variables: HashMap<String, String>,
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn bad(code: ErrorCode, message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Checks the request's bounds; the checked variables and metadata.
fn check(
    r: &SessionRequest,
    max_ttl: Duration,
) -> Result<(u64, BTreeMap<String, String>, Value), AppError> {
    let ttl = r.ttl_s.unwrap_or(DEFAULT_TTL_S);
    let max = MAX_TTL_S.min(max_ttl.as_secs());
    if !(MIN_TTL_S..=max).contains(&ttl) {
        return Err(bad(
            ErrorCode::InvalidParameter,
            format!("ttl_s must be between {MIN_TTL_S} and {max}"),
        ));
    }
    let sub_ok = !r.sub.trim().is_empty()
        && r.sub.chars().count() <= MAX_SUB_CHARS
        && !r.sub.chars().any(char::is_control);
    if !sub_ok {
        return Err(bad(
            ErrorCode::InvalidParameter,
            format!("sub must be 1 to {MAX_SUB_CHARS} characters, without control characters"),
        ));
    }
    if r.variables.len() > MAX_VARIABLES {
        return Err(bad(
            ErrorCode::InvalidParameter,
            format!("at most {MAX_VARIABLES} variables"),
        ));
    }
    for (k, v) in &r.variables {
        if !crate::agents::valid_variable_name(k) {
            return Err(bad(
                ErrorCode::InvalidParameter,
                "a variable name must be 1 to 64 letters, digits, _, - or .",
            ));
        }
        if v.len() > MAX_VARIABLE_BYTES {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("variable `{k}` is longer than {MAX_VARIABLE_BYTES} bytes"),
            ));
        }
    }
    let metadata = r.metadata.clone().unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(bad(
            ErrorCode::InvalidParameter,
            "metadata must be a JSON object",
        ));
    }
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(bad(
            ErrorCode::InvalidParameter,
            format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    let variables = r.variables.clone().into_iter().collect();
    Ok((ttl, variables, metadata))
}

/// Where the browser opens the call: `VOXWIRE_PUBLIC_URL` as `wss://…/ws` (or `ws://`), else
/// the request's `Host` (`wss://` behind a proxy that says `X-Forwarded-Proto: https`).
fn ws_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(ws) = state.config.net.public_socket_url() {
        return format!("{ws}/ws");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() <= 255)
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.to_string())
        .unwrap_or_else(|| state.config.bind.to_string());
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if https { "wss" } else { "ws" };
    format!("{scheme}://{host}/ws")
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let who = principal(&state, &headers).await?;
    let result = mint(&state, &headers, who, body).await;
    if let Err(e) = &result {
        state.metrics.error(e.code);
    }
    result
}

async fn mint(
    state: &AppState,
    headers: &HeaderMap,
    who: super::principal::Principal,
    body: Body,
) -> Result<Json<Value>, AppError> {
    let bytes = tokio::time::timeout(
        state.config.net.body_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    .map_err(|_| {
        AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the request body did not arrive in time",
        )
    })?
    .map_err(|_| {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("body larger than {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let request: SessionRequest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(ErrorCode::InvalidJson, format!("invalid body: {e}")))?;
    let (ttl, variables, metadata) = check(&request, state.auth.max_ttl())?;
    let agents = &state.call_services.agents;
    let Some(agent) = agents.get_in(who.org.as_deref(), request.agent.as_deref()) else {
        let name: String = request.agent.unwrap_or_default().chars().take(64).collect();
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAgent,
            format!(
                "unknown agent `{name}` (known: {})",
                agents.names_in(who.org.as_deref()).join(", ")
            ),
        ));
    };
    let now = crate::call::record::now_ms();
    let id = format!("vxs_{:032x}", rand::random::<u128>());
    let row = crate::store::SessionRow {
        id: id.clone(),
        org: who.org.clone(),
        key_id: who.key_id().map(str::to_string),
        agent: agent.name.clone(),
        sub: request.sub.clone(),
        variables,
        metadata,
        created_at_ms: now,
        expires_at_ms: now.saturating_add((ttl * 1000) as i64),
        call_id: None,
    };
    state
        .call_services
        .store
        .insert_session(&row, now)
        .await
        .map_err(unavailable)?;
    let token = state
        .auth
        .issue_session(
            &request.sub,
            who.org.as_deref(),
            &agent.name,
            &id,
            Duration::from_secs(ttl),
        )
        .map_err(AppError::internal)?;
    info!(
        session = %id,
        org = who.org.as_deref().unwrap_or(""),
        by = %who.label(),
        agent = %agent.name,
        ttl_s = ttl,
        "call session minted"
    );
    Ok(Json(json!({
        "token": token,
        "ws_url": ws_url(state, headers),
        "expires_in": ttl,
        "agent": agent.name,
        "session_id": id,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> SessionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn bounds_are_checked() {
        let max = Duration::from_secs(7 * 24 * 3600);
        let ok = request(json!({"sub": "alice", "variables": {"name": "Ada"}}));
        let (ttl, vars, meta) = check(&ok, max).unwrap();
        assert_eq!((ttl, vars.len(), meta), (DEFAULT_TTL_S, 1, json!({})));
        let many: HashMap<String, String> =
            (0..33).map(|i| (format!("v{i}"), "x".into())).collect();
        for body in [
            json!({"sub": ""}),
            json!({"sub": "a".repeat(129)}),
            json!({"sub": "a\nb"}),
            json!({"sub": "a", "ttl_s": 9}),
            json!({"sub": "a", "ttl_s": 3601}),
            json!({"sub": "a", "variables": many}),
            json!({"sub": "a", "variables": {"bad name": "x"}}),
            json!({"sub": "a", "variables": {"v": "x".repeat(1025)}}),
            json!({"sub": "a", "metadata": [1, 2]}),
            json!({"sub": "a", "metadata": {"big": "x".repeat(4096)}}),
        ] {
            let e = check(&request(body.clone()), max).err().unwrap();
            assert_eq!(e.code, ErrorCode::InvalidParameter, "{body}");
        }
        // The server's token lifetime cap applies too.
        let e = check(
            &request(json!({"sub": "a", "ttl_s": 120})),
            Duration::from_secs(60),
        )
        .err()
        .unwrap();
        assert!(e.message.contains("between 10 and 60"), "{}", e.message);
        assert!(serde_json::from_value::<SessionRequest>(json!({"sub": "a", "org": "x"})).is_err());
    }
}
