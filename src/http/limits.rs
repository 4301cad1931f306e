//! `GET /api/limits` and `PUT /api/limits`: an org's usage limits, for the org's admins.
//! `PUT` takes all four limits, each a whole number from 0 to [`MAX_LIMIT`] or `null`
//! (unlimited); an org that never set its own has the configured defaults (`VOXWIRE_LIMIT_*`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::calls::unavailable;
use super::error::AppError;
use crate::protocol::{ErrorCode, LimitKind};
use crate::server::AppState;
use crate::store::{OrgLimits, MAX_LIMIT};

/// Largest `PUT /api/limits` body.
pub const MAX_BODY_BYTES: usize = 4096;

/// Who may read and set an org's limits: the org's API key or an admin token of the org.
/// Returns the org (`None`: the default org).
pub async fn limits_admin(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, AppError> {
    super::principal::principal(state, headers)
        .await
        .map(|p| p.org)
}

fn body(org: Option<&str>, l: &OrgLimits, defaults: bool) -> Value {
    json!({
        "org": org,
        "concurrent_calls": l.concurrent_calls,
        "daily_minutes": l.daily_minutes,
        "subject_concurrent_calls": l.subject_concurrent_calls,
        "subject_daily_minutes": l.subject_daily_minutes,
        "defaults": defaults,
    })
}

pub async fn get_limits(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let org = limits_admin(&state, &headers).await?;
    let own = state
        .call_services
        .store
        .limits(org.as_deref())
        .await
        .map_err(unavailable)?;
    let limits = own.unwrap_or(state.config.usage.defaults);
    Ok(Json(body(org.as_deref(), &limits, own.is_none())))
}

pub async fn put_limits(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let org = limits_admin(&state, &headers).await?;
    let limits = parse_limits(&bytes)?;
    state
        .call_services
        .store
        .set_limits(org.as_deref(), &limits)
        .await
        .map_err(unavailable)?;
    tracing::info!(
        org = org.as_deref().unwrap_or(""),
        ?limits,
        "org limits set"
    );
    Ok(Json(body(org.as_deref(), &limits, false)))
}

fn invalid_body(message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidMessage, message)
}

/// Reads a `PUT /api/limits` body: a JSON object with exactly the four limits.
pub fn parse_limits(bytes: &[u8]) -> Result<OrgLimits, AppError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid_body(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(invalid_body("the body must be a JSON object"));
    };
    let names: Vec<&str> = LimitKind::ALL.iter().map(|k| k.as_str()).collect();
    if let Some(unknown) = map.keys().find(|k| !names.contains(&k.as_str())) {
        let unknown: String = unknown.chars().take(64).collect();
        return Err(invalid_body(format!(
            "unknown field `{unknown}` (expected {})",
            names.join(", ")
        )));
    }
    let field = |name: &str| -> Result<Option<i64>, AppError> {
        match map.get(name) {
            None => Err(invalid_body(format!(
                "`{name}` is missing (a whole number, or null for unlimited)"
            ))),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| (0..=MAX_LIMIT).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    invalid_body(format!(
                        "`{name}` must be a whole number from 0 to {MAX_LIMIT}, or null"
                    ))
                }),
        }
    };
    Ok(OrgLimits {
        concurrent_calls: field("concurrent_calls")?,
        daily_minutes: field("daily_minutes")?,
        subject_concurrent_calls: field("subject_concurrent_calls")?,
        subject_daily_minutes: field("subject_daily_minutes")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        match parse_limits(body.as_bytes()) {
            Ok(l) => panic!("accepted {body}: {l:?}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                assert_eq!(e.code, ErrorCode::InvalidMessage);
                e.message
            }
        }
    }

    #[test]
    fn limits_are_validated() {
        let ok = parse_limits(
            br#"{"concurrent_calls": 2, "daily_minutes": null,
                "subject_concurrent_calls": 0, "subject_daily_minutes": 10000000}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            OrgLimits {
                concurrent_calls: Some(2),
                daily_minutes: None,
                subject_concurrent_calls: Some(0),
                subject_daily_minutes: Some(MAX_LIMIT),
            }
        );
        let all = |v: &str| {
            format!(
                r#"{{"concurrent_calls": {v}, "daily_minutes": 1,
                "subject_concurrent_calls": 1, "subject_daily_minutes": 1}}"#
            )
        };
        for bad in ["-1", "1.5", "\"3\"", "true", "10000001", "1e3", "[1]"] {
            assert!(refused(&all(bad)).contains("`concurrent_calls`"), "{bad}");
        }
        assert!(refused(r#"{"concurrent_calls": 1}"#).contains("missing"));
        assert!(refused(&all("1").replace("\"daily_minutes\"", "\"minutes\"")).contains("unknown"));
        assert!(refused("[]").contains("object"));
        assert!(refused("{").contains("JSON"));
    }
}
