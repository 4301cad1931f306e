//! `GET /api/calls` and `GET /api/calls/{id}`: a user's calls and one call's history, for its
//! owner only (same `sub` and `org`), or for an operator or admin of the call's org (who lists
//! every call of the org, `?sub=` narrowing it to one user). Live calls answer from memory;
//! every call, live or not, from the durable store, so history survives restarts. The list
//! takes filters (time range, agent, caller, text search) shared with the export.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::access::may_read;
use super::api::{authenticate, TokenQuery};
use super::error::AppError;
use super::filters::{invalid, CallFilter, Params};
use crate::call::recording::{recording_path, safe_id};
use crate::call::Owner;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::store::{CallRow, ListQuery, StoreError};

pub(super) fn unavailable(e: StoreError) -> AppError {
    tracing::warn!(error = %e, "cannot read the call store");
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StoreUnavailable,
        "the call store is unavailable; try again",
    )
}

/// How long a finished call lasted (`None` while live); never negative, whatever the clocks of
/// the nodes that wrote it.
pub(super) fn duration_ms(row: &CallRow) -> Option<i64> {
    row.ended_at_ms
        .map(|end| end.saturating_sub(row.started_at_ms).max(0))
}

pub(super) fn summary(row: &CallRow, live: bool) -> Value {
    json!({
        "call_id": row.id,
        "agent": row.agent,
        "sub": row.sub,
        "live": live,
        "started_at_ms": row.started_at_ms,
        "ended_at_ms": row.ended_at_ms,
        "duration_ms": duration_ms(row),
        "end_reason": row.end_reason,
        "turns": row.turns,
        "caller_audio_ms": row.caller_audio_ms,
        "agent_audio_ms": row.agent_audio_ms,
    })
}

/// The conversation from a call's stored items (a cut reply keeps what the caller heard).
fn item_messages(items: &[crate::store::ItemRow]) -> Vec<Value> {
    items
        .iter()
        .map(|i| json!({"role": i.role, "content": i.heard.as_ref().unwrap_or(&i.text)}))
        .collect()
}

/// The conversation of a call this node does not hold (live on another node), as stored so
/// far; empty when the store cannot answer.
pub async fn stored_messages(state: &AppState, call_id: &str) -> Vec<Value> {
    match state.call_services.store.items(call_id).await {
        Ok(items) => item_messages(&items),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a call's items");
            Vec::new()
        }
    }
}

pub async fn call_history(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let claims = authenticate(&state, &headers, &q)?;
    let allowed = |o: &Owner| may_read(&claims, &o.sub, o.org.as_deref());
    let memory = state.calls.get_if(&call_id, allowed);
    let store = &state.call_services.store;
    let row = store
        .call(&call_id)
        .await
        .map_err(unavailable)?
        .filter(|r| may_read(&claims, &r.sub, r.org.as_deref()));
    if memory.is_none() && row.is_none() {
        return Err(AppError::not_found(format!(
            "no call `{}` for this user",
            call_id.chars().take(64).collect::<String>()
        )));
    }
    let live = memory.as_ref().is_some_and(|r| r.is_live());
    let mut body = match &row {
        Some(row) => summary(row, live),
        None => json!({ "call_id": call_id, "live": live }),
    };
    let (items, metrics, call_summary) = match row {
        Some(_) => (
            store.items(&call_id).await.map_err(unavailable)?,
            store.turn_metrics(&call_id).await.map_err(unavailable)?,
            store.summary(&call_id).await.map_err(unavailable)?,
        ),
        None => (Vec::new(), Vec::new(), None),
    };
    // The conversation as the model sees it: from memory while the call is known here, else
    // from its stored items (a cut reply keeps what the caller heard).
    let messages: Vec<Value> = match &memory {
        Some(r) => r.masked_messages(&state.agents),
        None => item_messages(&items),
    };
    if let (Some(o), Some(r)) = (body.as_object_mut(), &memory) {
        o.insert("agent".into(), json!(r.agent));
        o.insert(
            "turns".into(),
            json!(r.turns.load(std::sync::atomic::Ordering::SeqCst)),
        );
    }
    let recorded = safe_id(&call_id)
        && tokio::fs::try_exists(recording_path(&state.call_services.recordings, &call_id))
            .await
            .unwrap_or(false);
    if let Some(o) = body.as_object_mut() {
        o.insert("recording".into(), json!(recorded));
        o.insert(
            "summary".into(),
            match call_summary {
                Some(s) => json!({
                    "text": s.text,
                    "fields": s.fields,
                    "method": s.method,
                    "engine": s.engine,
                    "at_ms": s.at_ms,
                }),
                None => Value::Null,
            },
        );
        o.insert("messages".into(), json!(messages));
        o.insert("items".into(), json!(items));
        o.insert(
            "metrics".into(),
            json!(metrics
                .iter()
                .map(|m| json!({"turn_id": m.turn_id, "at_ms": m.at_ms, "timings": m.metrics}))
                .collect::<Vec<_>>()),
        );
    }
    Ok(Json(body))
}

/// `GET /api/calls`: a page of the caller's calls (an operator's: the org's), newest first,
/// narrowed by the filters of [`CallFilter`].
pub async fn list_calls(
    State(state): State<Arc<AppState>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let p = Params(pairs);
    let claims = authenticate(&state, &headers, &p.token()?)?;
    let filter = CallFilter::parse(&p)?;
    let limit = match p.one("limit")? {
        None | Some("") => 20,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid("`limit` must be a number of calls, 1 to 100"))?
            .clamp(1, i64::from(ListQuery::MAX_LIMIT)) as u32,
    };
    let query = ListQuery {
        before_ms: p.ms("before")?,
        ..filter.query(limit)
    };
    let store = &state.call_services.store;
    let org = claims.org.as_deref();
    let rows = if claims.role().is_operator() {
        store
            .list_org_calls(org, filter.sub.as_deref(), &query)
            .await
    } else {
        store.list_calls(&claims.sub, org, &query).await
    }
    .map_err(unavailable)?;
    let full = rows.len() as u32 >= query.limit;
    let next = rows.last().filter(|_| full).map(|r| r.started_at_ms);
    let calls: Vec<Value> = rows
        .iter()
        .map(|r| {
            let live = state.calls.handle(&r.id).is_some();
            summary(r, live)
        })
        .collect();
    Ok(Json(json!({ "calls": calls, "next_before": next })))
}

/// `GET /api/calls/{id}/recording`: the call's recording (a stereo WAV, the caller on the left),
/// for its owner and the operators of its org, with byte ranges so that players can seek. 404
/// `not_found` when there is no such call for this token, or it was not recorded.
pub async fn recording(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Result<axum::response::Response, AppError> {
    let claims = authenticate(&state, &headers, &q)?;
    let safe = safe_id(&call_id);
    let allowed = |o: &Owner| may_read(&claims, &o.sub, o.org.as_deref());
    let known = safe
        && (state.calls.get_if(&call_id, allowed).is_some()
            || state
                .call_services
                .store
                .call(&call_id)
                .await
                .map_err(unavailable)?
                .is_some_and(|r| may_read(&claims, &r.sub, r.org.as_deref())));
    let path = recording_path(&state.call_services.recordings, &call_id);
    if !known || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(AppError::not_found(format!(
            "no recording of call `{}` for this user",
            call_id.chars().take(64).collect::<String>()
        )));
    }
    // The type comes from the extension: audio/wav.
    let served = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(AppError::internal)?;
    Ok(served.into_response())
}
