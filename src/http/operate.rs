//! Operators acting on a live call of their org: `POST /api/calls/{id}/takeover`, `/say`,
//! `/release`, `/context` and `/end`. Each route checks the token (operators and admins only),
//! finds the live call, sends it an operator command through its handle and waits, bounded, for
//! the call's own answer: the call's state as JSON, or why it refused.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::access::{self, may_read};
use super::api::TokenQuery;
use super::calls::unavailable;
use super::error::AppError;
use crate::auth::{Claims, Role};
use crate::call::operator::MAX_OPERATOR_TEXT;
use crate::call::{
    CallHandle, CallInput, Operator, OperatorAction, OperatorCommand, OperatorRefusal,
    OperatorView, Owner,
};
use crate::live::bus::Answer;
use crate::live::remote::{Reach, RemoteCall};
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// How long a command may wait for the call to take it and answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request body of `say` and `context`: the text limit in 4-byte characters, plus JSON.
pub const MAX_BODY_BYTES: usize = MAX_OPERATOR_TEXT * 4 + 1024;

#[derive(Deserialize, Default)]
pub struct OperateQuery {
    pub token: Option<String>,
    /// `true`: an admin takes over or releases a call another operator holds.
    pub force: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

fn conflict(code: ErrorCode, message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::CONFLICT, code, message)
}

pub fn call_ended() -> AppError {
    conflict(ErrorCode::CallEnded, "the call has ended")
}

fn busy() -> AppError {
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::CallBusy,
        "the call did not take the command in time; try again",
    )
}

/// The `{"text": "..."}` of `say` and `context`, checked.
fn text_body(body: Result<Bytes, BytesRejection>) -> Result<String, AppError> {
    let body = body.map_err(|_| {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the body must be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let TextBody { text } = serde_json::from_value(value).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidMessage,
            format!("the body must be {{\"text\": \"...\"}}: {e}"),
        )
    })?;
    check_text(&text)
}

/// An operator's line or note, trimmed: 400 `invalid_message` when empty, 413 `text_too_long`
/// past the limit.
pub fn check_text(text: &str) -> Result<String, AppError> {
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidMessage,
            "`text` is empty",
        ));
    }
    if text.chars().count() > MAX_OPERATOR_TEXT {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TextTooLong,
            format!("`text` is longer than {MAX_OPERATOR_TEXT} characters"),
        ));
    }
    Ok(text)
}

/// The operator's token and whether it forces (admins only).
fn operator(
    state: &AppState,
    headers: &HeaderMap,
    q: OperateQuery,
) -> Result<(Claims, bool), AppError> {
    let claims = access::operator(
        state,
        headers,
        &TokenQuery {
            token: q.token.clone(),
        },
    )?;
    let force = match q.force.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidParameter,
                "`force` must be `true` or `false`",
            ))
        }
    };
    if force && claims.role() != Role::Admin {
        state.metrics.error(ErrorCode::Forbidden);
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "only an admin may force",
        ));
    }
    Ok((claims, force))
}

/// Live call `call_id` of the operator's org, on this node or (on a cluster) another: 404
/// `not_found` when there is no such call in the org, 409 `call_ended` when it is no longer live.
pub async fn live_handle(
    state: &AppState,
    call_id: &str,
    claims: &Claims,
) -> Result<Reach, AppError> {
    let allowed = |o: &Owner| may_read(claims, &o.sub, o.org.as_deref());
    let known_here = state.calls.get_if(call_id, allowed);
    if let Some(handle) = known_here
        .as_ref()
        .filter(|r| r.is_live())
        .and_then(|_| state.calls.handle(call_id))
        .filter(|h| !h.is_ended())
    {
        return Ok(Reach::Local(handle));
    }
    // On a cluster, a call of the org live on another node is found in Redis (its store row
    // may still be on its way).
    if let (None, Some(cluster)) = (&known_here, &state.call_services.cluster) {
        match cluster.live_node(call_id, claims.org.as_deref()).await {
            Ok(Some(node)) if node != cluster.node => {
                return Ok(Reach::Remote(RemoteCall::new(
                    cluster.clone(),
                    call_id,
                    &node,
                )));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for a call on the other nodes"),
        }
    }
    if known_here.is_none() {
        let stored = state
            .call_services
            .store
            .call(call_id)
            .await
            .map_err(unavailable)?
            .filter(|r| may_read(claims, &r.sub, r.org.as_deref()));
        if stored.is_none() {
            return Err(AppError::not_found(format!(
                "no call `{}` in this org",
                call_id.chars().take(64).collect::<String>()
            )));
        }
    }
    let Some(cluster) = &state.call_services.cluster else {
        return Err(call_ended());
    };
    match cluster.holder(call_id).await {
        Ok(Some(node)) if node != cluster.node => Ok(Reach::Remote(RemoteCall::new(
            cluster.clone(),
            call_id,
            &node,
        ))),
        Ok(_) => Err(call_ended()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the node holding a call");
            Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                "the live-call registry is unavailable; try again",
            ))
        }
    }
}

/// Sends `action` to live call `call_id` of the operator's org (on whichever node holds it)
/// and returns its answer.
pub async fn command(
    state: &AppState,
    call_id: &str,
    claims: &Claims,
    action: OperatorAction,
) -> Result<OperatorView, AppError> {
    let reach = live_handle(state, call_id, claims).await?;
    let by = Operator {
        sub: claims.sub.clone(),
        admin: claims.role() == Role::Admin,
    };
    let kind = action.name();
    let answer = match &reach {
        Reach::Local(handle) => local_command(handle, by, action).await?,
        Reach::Remote(remote) => match remote.command(&by, action, COMMAND_TIMEOUT).await {
            Answer::Done(view) => Ok(view),
            Answer::Refused(refusal) => Err(refusal),
            Answer::Gone => return Err(call_ended()),
            Answer::Busy | Answer::History(_) | Answer::Listening => return Err(busy()),
        },
    };
    match answer {
        Ok(view) => {
            tracing::info!(call_id, operator = %claims.sub, action = %kind, "operator command");
            Ok(view)
        }
        Err(refusal) => {
            let holder = refusal.holder().map(str::to_string);
            let e = conflict(refusal.code(), refusal.to_string());
            Err(e.with("taken_over_by", json!(holder)))
        }
    }
}

/// An operator command to a call on this node, through its handle.
async fn local_command(
    handle: &CallHandle,
    by: Operator,
    action: OperatorAction,
) -> Result<Result<OperatorView, OperatorRefusal>, AppError> {
    let (cmd, answer) = OperatorCommand::new(by, action);
    let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
    match tokio::time::timeout_at(deadline, handle.send(CallInput::Operator(cmd))).await {
        Err(_) => return Err(busy()),
        Ok(Err(_)) => return Err(call_ended()),
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout_at(deadline, answer).await {
        Err(_) => Err(busy()),
        Ok(Err(_)) => Err(call_ended()),
        Ok(Ok(a)) => Ok(a),
    }
}

async fn act(
    state: &AppState,
    call_id: &str,
    claims: &Claims,
    action: OperatorAction,
) -> Result<Json<OperatorView>, AppError> {
    command(state, call_id, claims, action).await.map(Json)
}

pub async fn takeover(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<OperateQuery>,
    headers: HeaderMap,
) -> Result<Json<OperatorView>, AppError> {
    let (claims, force) = operator(&state, &headers, q)?;
    act(
        &state,
        &call_id,
        &claims,
        OperatorAction::Takeover { force },
    )
    .await
}

pub async fn release(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<OperateQuery>,
    headers: HeaderMap,
) -> Result<Json<OperatorView>, AppError> {
    let (claims, force) = operator(&state, &headers, q)?;
    act(&state, &call_id, &claims, OperatorAction::Release { force }).await
}

pub async fn say(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<OperateQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OperatorView>, AppError> {
    let (claims, _) = operator(&state, &headers, q)?;
    let text = text_body(body)?;
    act(&state, &call_id, &claims, OperatorAction::Say(text)).await
}

pub async fn context(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<OperateQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OperatorView>, AppError> {
    let (claims, _) = operator(&state, &headers, q)?;
    let text = text_body(body)?;
    act(&state, &call_id, &claims, OperatorAction::Context(text)).await
}

pub async fn end(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<OperateQuery>,
    headers: HeaderMap,
) -> Result<Json<OperatorView>, AppError> {
    let (claims, _) = operator(&state, &headers, q)?;
    act(&state, &call_id, &claims, OperatorAction::End).await
}
