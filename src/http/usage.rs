//! `GET /api/usage?from=&to=&group_by=day|agent|sub`: what an org's calls used on the UTC days
//! the range touches, for its operators and admins, read from the store. Per group: the calls
//! with any usage in those days, call and audio seconds, speech-to-text seconds, language-model
//! tokens (from engines that report them) and reply characters, and speech characters, in all
//! and by engine.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

use super::access;
use super::calls::unavailable;
use super::error::AppError;
use super::filters::{check_range, invalid, Params};
use crate::call::record::now_ms;
use crate::server::AppState;
use crate::store::{day_of, day_start_ms, GroupBy, UsageReport};

const DAY_MS: i64 = 86_400_000;
/// The most days one report covers.
pub const MAX_DAYS: i64 = 366;

/// The name a metric has in a report, and whether it is counted in ms (shown in seconds).
fn shown(metric: &str) -> (String, bool) {
    match metric.strip_suffix("_ms") {
        Some("call") => ("call_seconds".into(), true),
        Some("stt_audio") => ("stt_seconds".into(), true),
        Some(m) => (format!("{m}_seconds"), true),
        None => (metric.to_string(), false),
    }
}

fn add(map: &mut Map<String, Value>, metric: &str, value: i64) {
    let (name, ms) = shown(metric);
    let entry = map.entry(name).or_insert(json!(0));
    *entry = if ms {
        json!(entry.as_f64().unwrap_or(0.0) + value as f64 / 1000.0)
    } else {
        json!(entry.as_i64().unwrap_or(0).saturating_add(value))
    };
}

/// A row's figures by engine.
type Engines<'a> = BTreeMap<&'a str, Map<String, Value>>;

/// Shapes the store's rows: one object per group, in the group's order.
pub fn shape(report: &UsageReport, group: GroupBy) -> Vec<Value> {
    let mut rows: BTreeMap<&str, (Map<String, Value>, Engines)> = BTreeMap::new();
    for (key, calls) in &report.calls {
        let (row, _) = rows.entry(key).or_default();
        row.insert("calls".into(), json!(calls));
    }
    for (key, metric, engine, value) in &report.sums {
        let (row, engines) = rows.entry(key).or_default();
        add(row, metric, *value);
        if !engine.is_empty() {
            add(engines.entry(engine).or_default(), metric, *value);
        }
    }
    rows.into_iter()
        .map(|(key, (mut row, engines))| {
            row.entry("calls").or_insert(json!(0));
            row.insert(group.column().into(), json!(key));
            row.insert("by_engine".into(), json!(engines));
            Value::Object(row)
        })
        .collect()
}

pub async fn usage(
    State(state): State<Arc<AppState>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let p = Params(pairs);
    // The org's backend with its API key, or an operator or admin token of the org.
    let org = match crate::auth::token_from_request(&headers, None) {
        Some(t) if t.starts_with("vxk_") => {
            super::principal::principal(&state, &headers).await?.org
        }
        _ => access::operator(&state, &headers, &p.token()?)?.org,
    };
    let group = match p.one("group_by")? {
        None | Some("") | Some("day") => GroupBy::Day,
        Some("agent") => GroupBy::Agent,
        Some("sub") => GroupBy::Sub,
        Some(_) => return Err(invalid("`group_by` must be `day`, `agent` or `sub`")),
    };
    let (from, to) = (p.ms("from")?, p.ms("to")?);
    check_range(from, to)?;
    let to = to.unwrap_or_else(now_ms);
    // By default, from 00:00 UTC of the day `to` falls in (today when `to` is absent).
    let from = from.unwrap_or_else(|| day_start_ms(to.saturating_sub(1).max(0)));
    check_range(Some(from), Some(to))?;
    // The days the range `[from, to)` touches (the day of `from` when it is empty).
    let last = to.saturating_sub(1).max(from);
    if day_start_ms(last) - day_start_ms(from) >= MAX_DAYS * DAY_MS {
        return Err(invalid(format!(
            "the range covers more than {MAX_DAYS} days"
        )));
    }
    let (from_day, to_day) = (day_of(from), day_of(last));
    let report = state
        .call_services
        .store
        .usage_report(org.as_deref(), &from_day, &to_day, group)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "from": from,
        "to": to,
        "from_day": from_day,
        "to_day": to_day,
        "group_by": group.column(),
        "rows": shape(&report, group),
        "truncated": report.truncated,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_shaped_per_group_and_engine() {
        let s = |v: &str| v.to_string();
        let report = UsageReport {
            calls: vec![(s("2026-12-01"), 2)],
            sums: vec![
                (s("2026-12-01"), s("call_ms"), s(""), 90_500),
                (s("2026-12-01"), s("stt_audio_ms"), s("fake"), 1_500),
                (s("2026-12-01"), s("tts_chars"), s("a"), 10),
                (s("2026-12-01"), s("tts_chars"), s("b"), 5),
                (s("2026-12-02"), s("llm_prompt_tokens"), s("local"), 7),
            ],
            truncated: false,
        };
        let rows = shape(&report, GroupBy::Day);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["day"], "2026-12-01");
        assert_eq!(rows[0]["calls"], 2);
        assert_eq!(rows[0]["call_seconds"], 90.5);
        assert_eq!(rows[0]["stt_seconds"], 1.5);
        assert_eq!(rows[0]["tts_chars"], 15);
        assert_eq!(rows[0]["by_engine"]["a"]["tts_chars"], 10);
        assert_eq!(rows[0]["by_engine"]["fake"]["stt_seconds"], 1.5);
        assert!(rows[0]["by_engine"].get("").is_none());
        assert_eq!(rows[1]["calls"], 0);
        assert_eq!(rows[1]["llm_prompt_tokens"], 7);
    }
}
