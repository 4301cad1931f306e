//! `GET /api/calls/export?format=csv|json`: an org's calls matching the list's filters, for
//! operators and admins, as a file to download: up to 10 000 calls, newest first, with
//! `X-Voxwire-Truncated: true` when more matched.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::access;
use super::calls::{duration_ms, summary, unavailable};
use super::error::AppError;
use super::filters::{invalid, CallFilter, Params};
use crate::server::AppState;
use crate::store::{CallRow, ListQuery};

/// The CSV header, in column order.
pub const CSV_COLUMNS: [&str; 10] = [
    "call_id",
    "agent",
    "sub",
    "started_at",
    "ended_at",
    "duration_ms",
    "end_reason",
    "turns",
    "caller_audio_ms",
    "agent_audio_ms",
];

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Json,
}

pub async fn export(
    State(state): State<Arc<AppState>>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let p = Params(pairs);
    let claims = access::operator(&state, &headers, &p.token()?)?;
    let format = match p.one("format")? {
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        _ => return Err(invalid("`format` must be `csv` or `json`")),
    };
    let filter = CallFilter::parse(&p)?;
    let (rows, truncated) = state
        .call_services
        .store
        .export_org_calls(
            claims.org.as_deref(),
            filter.sub.as_deref(),
            &filter.query(ListQuery::MAX_LIMIT),
        )
        .await
        .map_err(unavailable)?;
    let (body, content_type, file) = match format {
        Format::Csv => (csv(&rows), "text/csv; charset=utf-8", "calls.csv"),
        Format::Json => {
            let calls: Vec<Value> = rows
                .iter()
                .map(|r| summary(r, state.calls.handle(&r.id).is_some()))
                .collect();
            let body = json!({ "calls": calls, "truncated": truncated }).to_string();
            (body, "application/json", "calls.json")
        }
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if truncated {
        h.insert("x-voxwire-truncated", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The calls as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, a quote
/// or a line break, quotes doubled), times in RFC 3339 UTC, an absent value an empty field.
fn csv(rows: &[CallRow]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 160);
    out.push_str(&CSV_COLUMNS.join(","));
    out.push_str("\r\n");
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for r in rows {
        let fields = [
            r.id.clone(),
            r.agent.clone(),
            r.sub.clone(),
            rfc3339(r.started_at_ms),
            r.ended_at_ms.map(rfc3339).unwrap_or_default(),
            num(duration_ms(r)),
            r.end_reason.clone().unwrap_or_default(),
            r.turns.to_string(),
            r.caller_audio_ms.to_string(),
            r.agent_audio_ms.to_string(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_field(&mut out, f);
        }
        out.push_str("\r\n");
    }
    out
}

fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

/// A Unix time in milliseconds as RFC 3339 UTC with milliseconds, e.g.
/// `2024-05-01T09:30:00.250Z`. Total over `i64`: years outside 0..=9999 (never written by the
/// server) come out with as many digits as they need rather than failing.
pub fn rfc3339(ms: i64) -> String {
    const DAY_MS: i64 = 86_400_000;
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_714_555_800_250), "2024-05-01T09:30:00.250Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // No panic at the ends of the range.
        assert!(rfc3339(i64::MAX).ends_with('Z'));
        assert!(rfc3339(i64::MIN).ends_with('Z'));
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        let mut row = CallRow {
            id: "c1".into(),
            org: None,
            sub: "Doe, \"Jo\"".into(),
            agent: "support".into(),
            variables: Default::default(),
            system_prompt: None,
            started_at_ms: 1_000,
            ended_at_ms: None,
            end_reason: None,
            turns: 2,
            caller_audio_ms: 3,
            agent_audio_ms: 4,
        };
        let text = csv(std::slice::from_ref(&row));
        assert_eq!(
            text,
            "call_id,agent,sub,started_at,ended_at,duration_ms,end_reason,turns,\
             caller_audio_ms,agent_audio_ms\r\n\
             c1,support,\"Doe, \"\"Jo\"\"\",1970-01-01T00:00:01.000Z,,,,2,3,4\r\n"
        );
        row.ended_at_ms = Some(2_500);
        row.end_reason = Some("line\nbreak".into());
        assert!(csv(&[row]).contains(",1970-01-01T00:00:02.500Z,1500,\"line\nbreak\",2,3,4\r\n"));
    }
}
