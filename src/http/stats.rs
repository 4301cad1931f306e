//! `GET /api/stats?from=&to=`: an org's figures over a time range, for its operators and
//! admins. Every figure but `live_now` is about the calls that *started* in the range (a call
//! across midnight counts on the day it began), with their turns and replies: how many, how
//! long the finished ones lasted, how fast the agent answered (voice to voice) and how often
//! a reply was cut. Medians are taken in memory over at most the newest 100 000 values each.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::access;
use super::calls::unavailable;
use super::error::AppError;
use super::filters::{check_range, Params};
use crate::call::record::now_ms;
use crate::server::AppState;

const DAY_MS: i64 = 86_400_000;

pub async fn stats(
    State(state): State<Arc<AppState>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let p = Params(pairs);
    let claims = access::operator(&state, &headers, &p.token()?)?;
    let (from, to) = (p.ms("from")?, p.ms("to")?);
    check_range(from, to)?;
    let to = to.unwrap_or_else(now_ms);
    // By default, from 00:00 UTC of the day `to` falls in (today when `to` is absent).
    let from = from.unwrap_or_else(|| to.saturating_sub(1).max(0) / DAY_MS * DAY_MS);
    check_range(Some(from), Some(to))?;
    let org = claims.org.as_deref();
    let mut rows = state
        .call_services
        .store
        .stats(org, from, to)
        .await
        .map_err(unavailable)?;
    let median_duration = median(&mut rows.durations_ms.iter().map(|d| *d as f64).collect());
    let median_v2v = median(&mut rows.voice_to_voice_ms);
    let share = (rows.replies > 0).then(|| rows.replies_interrupted as f64 / rows.replies as f64);
    Ok(Json(json!({
        "from": from,
        "to": to,
        "calls": rows.calls,
        "live_now": state.live_in_org(org).await.len(),
        "median_duration_ms": median_duration,
        "median_voice_to_voice_ms": median_v2v,
        "replies": rows.replies,
        "replies_interrupted": rows.replies_interrupted,
        "interrupted_share": share,
    })))
}

/// The median (the mean of the two middle values for an even count), `None` for no values.
/// Values that are not numbers are left out.
pub fn median(values: &mut Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut vec![]), None);
        assert_eq!(median(&mut vec![5.0]), Some(5.0));
        assert_eq!(median(&mut vec![9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&mut vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut vec![f64::NAN, 2.0]), Some(2.0));
    }
}
