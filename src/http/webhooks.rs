//! `GET /api/webhooks/deliveries?limit=&before=`: the org's webhook deliveries, newest first,
//! with their attempts and outcomes, for the org's admins (callers and operators get 403
//! `forbidden`). Bodies are not shown. `next_before` is the cursor of the next page.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::access;
use super::calls::unavailable;
use super::error::AppError;
use super::filters::{invalid, Params};
use crate::server::AppState;
use crate::store::{DeliveryQuery, DeliveryRow};

/// A page's cursor: `<created_at_ms>_<id>` of its last delivery.
fn cursor(r: &DeliveryRow) -> String {
    format!("{}_{}", r.created_at_ms, r.id)
}

fn parse_cursor(v: &str) -> Result<(i64, String), AppError> {
    let bad = || invalid("`before` must be a `next_before` of a previous page");
    let (ms, id) = v.trim().split_once('_').ok_or_else(bad)?;
    let ms = ms.parse::<i64>().map_err(|_| bad())?;
    if id.is_empty() || id.contains('\0') {
        return Err(bad());
    }
    Ok((ms, id.to_string()))
}

fn view(r: &DeliveryRow) -> Value {
    json!({
        "id": r.id,
        "event": r.event,
        "call_id": r.call_id,
        "agent": r.agent,
        "sub": r.sub,
        "url": r.url,
        "state": r.state,
        "attempts": r.attempts,
        "last_status": r.last_status,
        "last_error": r.last_error,
        "next_attempt_ms": r.next_attempt_ms,
        "created_at_ms": r.created_at_ms,
        "delivered_at_ms": r.delivered_at_ms,
    })
}

pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let p = Params(pairs);
    let claims = access::admin(&state, &headers, &p.token()?)?;
    let limit = match p.one("limit")? {
        None | Some("") => 20,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid("`limit` must be a number of deliveries, 1 to 100"))?
            .clamp(1, i64::from(DeliveryQuery::MAX_LIMIT)) as u32,
    };
    let before = match p.one("before")? {
        None | Some("") => None,
        Some(v) => Some(parse_cursor(v)?),
    };
    let q = DeliveryQuery {
        org: claims.org.clone(),
        before,
        limit,
    };
    let rows = state
        .call_services
        .store
        .list_deliveries(&q)
        .await
        .map_err(unavailable)?;
    let next = rows
        .last()
        .filter(|_| rows.len() as u32 >= limit)
        .map(cursor);
    let deliveries: Vec<Value> = rows.iter().map(view).collect();
    Ok(Json(
        json!({ "deliveries": deliveries, "next_before": next }),
    ))
}
