//! Faults a test queues per route, the providers' error bodies, and the body plumbing that
//! streams an answer slowly or cuts it short.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::StreamGuard;

/// A fault for one request. On HTTP routes:
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// That status with the provider's JSON error body (OpenAI routes
    /// `{"error":{"message","type","param","code"}}`, Deepgram `{"err_code","err_msg",
    /// "request_id"}`, ElevenLabs `{"detail":{"status","message"}}`). Deepgram: the upgrade is
    /// refused with it.
    Status(u16),
    /// 429 with a `Retry-After` header and the provider's error body. Deepgram: the upgrade is
    /// refused with it.
    RateLimited { retry_after_secs: u64 },
    /// Waits this long before answering normally (a slow first byte). Deepgram: before the
    /// upgrade.
    Delay(Duration),
    /// Headers at once, then this gap between streamed units: SSE events, 4800-byte audio
    /// chunks, or Deepgram results. A non-streamed JSON answer arrives whole after one gap.
    SlowStream(Duration),
    /// Sends `after` units (SSE events, audio chunks, Deepgram results), then drops the
    /// connection with no terminator: no `[DONE]`, no final chunked-encoding frame, no close
    /// frame. Non-streamed JSON answers send their first `after` bytes (at most all but one).
    /// A stream with no more than `after` units completes normally.
    Truncate { after: usize },
    /// Something that is not JSON where JSON belongs. Chat streams: one
    /// `data: {"choices":[{"delta":` event after the first word, then the rest normally; JSON
    /// answers: the body cut in half (still 200, `application/json`); audio routes: a 500 whose
    /// `application/json` body is cut short; Deepgram: a non-JSON text frame before the first
    /// result.
    MalformedJson,
    /// Accepts the request and never answers. Deepgram: upgrades, reads, never replies.
    Hang,
}

/// Whose error body shape to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    OpenAi,
    Deepgram,
    ElevenLabs,
}

/// The provider's JSON error body with `status`. `code` is OpenAI's `code`, Deepgram's
/// `err_code` or ElevenLabs' `detail.status`.
pub(super) fn error(dialect: Dialect, status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match dialect {
        Dialect::OpenAi => {
            let kind = match status.as_u16() {
                429 => "requests",
                400..=499 => "invalid_request_error",
                _ => "server_error",
            };
            let code = if code.is_empty() {
                serde_json::Value::Null
            } else {
                json!(code)
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Dialect::Deepgram => json!({
            "err_code": code,
            "err_msg": message,
            "request_id": "00000000-0000-4000-8000-000000000000",
        }),
        Dialect::ElevenLabs => json!({"detail": {"status": code, "message": message}}),
    };
    let mut response = (status, axum::Json(body)).into_response();
    if dialect == Dialect::Deepgram {
        if let Ok(v) = HeaderValue::from_str(message) {
            response.headers_mut().insert("dg-error", v);
        }
    }
    response
}

/// 401 whose message echoes the presented key (`None`: no key at all).
pub(super) fn unauthorized(dialect: Dialect, presented: Option<&str>) -> Response {
    match (dialect, presented) {
        (Dialect::OpenAi, Some(k)) => error(
            dialect,
            401,
            "invalid_api_key",
            &format!("Incorrect API key provided: {k}."),
        ),
        (Dialect::OpenAi, None) => error(
            dialect,
            401,
            "",
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        ),
        (Dialect::Deepgram, Some(k)) => error(
            dialect,
            401,
            "INVALID_AUTH",
            &format!("Invalid credentials: {k}"),
        ),
        (Dialect::Deepgram, None) => error(
            dialect,
            401,
            "INVALID_AUTH",
            "Invalid credentials: no Authorization header.",
        ),
        (Dialect::ElevenLabs, Some(k)) => error(
            dialect,
            401,
            "invalid_api_key",
            &format!("Invalid API key: {k}"),
        ),
        (Dialect::ElevenLabs, None) => error(
            dialect,
            401,
            "needs_authorization",
            "Missing xi-api-key header.",
        ),
    }
}

fn rate_limited(dialect: Dialect, retry_after_secs: u64) -> Response {
    let (code, message) = match dialect {
        Dialect::OpenAi => (
            "rate_limit_exceeded",
            format!("Rate limit reached for requests. Please try again in {retry_after_secs}s."),
        ),
        Dialect::Deepgram => (
            "TOO_MANY_REQUESTS",
            "Too many requests. Please try again later.".to_string(),
        ),
        Dialect::ElevenLabs => (
            "too_many_concurrent_requests",
            "Too many concurrent requests.".to_string(),
        ),
    };
    let mut response = error(dialect, 429, code, &message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// Applies the part of a fault that comes before the normal answer: `Some` is the whole answer
/// (`Status`, `RateLimited`); `Delay` sleeps; `Hang` never returns. The other faults shape the
/// body later and pass through.
pub(super) async fn before(fault: Option<&Fault>, dialect: Dialect) -> Option<Response> {
    match fault? {
        Fault::Status(code) => Some(error(
            dialect,
            *code,
            "fault_injected",
            &format!("Injected fault: status {code}"),
        )),
        Fault::RateLimited { retry_after_secs } => Some(rate_limited(dialect, *retry_after_secs)),
        Fault::Delay(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        Fault::Hang => std::future::pending().await,
        _ => None,
    }
}

/// The answer of an audio route under `MalformedJson`: a 500 claiming JSON, cut short.
pub(super) fn malformed_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error": {"message": "The server had an error while processing"#,
    )
        .into_response()
}

/// A streamed body made of units (each one or more chunks written back to back), shaped by
/// `SlowStream` (gap between units) and `Truncate` (connection dropped after N units). With a
/// guard, the stream counts as open until it ends and as aborted when the client drops it.
pub(super) fn streamed(
    units: Vec<Vec<Bytes>>,
    fault: Option<&Fault>,
    guard: Option<StreamGuard>,
) -> Body {
    let (lead, gap, truncate) = match fault {
        Some(Fault::SlowStream(d)) => (None, Some(*d), None),
        Some(Fault::Truncate { after }) => (None, None, Some(*after)),
        _ => (None, None, None),
    };
    feed(units, lead, gap, truncate, guard)
}

/// A complete body shaped by `SlowStream` (arrives after one gap), `Truncate` (first `after`
/// bytes, then the connection drops) and `MalformedJson` (cut in half).
pub(super) fn whole(body: Bytes, fault: Option<&Fault>) -> Body {
    match fault {
        Some(Fault::SlowStream(d)) => feed(vec![vec![body]], Some(*d), None, None, None),
        Some(Fault::Truncate { after }) => {
            let n = (*after).min(body.len().saturating_sub(1));
            let head = if n == 0 {
                vec![]
            } else {
                vec![body.slice(..n)]
            };
            feed(vec![head, vec![body.slice(n..)]], None, None, Some(1), None)
        }
        Some(Fault::MalformedJson) => Body::from(body.slice(..body.len() / 2)),
        _ => Body::from(body),
    }
}

struct Feed {
    units: std::vec::IntoIter<Vec<Bytes>>,
    pending: VecDeque<Bytes>,
    started: usize,
    lead: Option<Duration>,
    gap: Option<Duration>,
    truncate: Option<usize>,
    guard: Option<StreamGuard>,
    done: bool,
}

fn feed(
    units: Vec<Vec<Bytes>>,
    lead: Option<Duration>,
    gap: Option<Duration>,
    truncate: Option<usize>,
    guard: Option<StreamGuard>,
) -> Body {
    let state = Feed {
        units: units.into_iter(),
        pending: VecDeque::new(),
        started: 0,
        lead,
        gap,
        truncate,
        guard,
        done: false,
    };
    Body::from_stream(futures::stream::unfold(state, |mut f| async move {
        loop {
            if let Some(chunk) = f.pending.pop_front() {
                return Some((Ok(chunk), f));
            }
            if f.done {
                return None;
            }
            if f.units.len() == 0 {
                f.done = true;
                if let Some(g) = f.guard.as_mut() {
                    g.finish();
                }
                return None;
            }
            if f.truncate == Some(f.started) {
                // An error from the body makes the server drop the connection mid-response.
                // Pausing first lets the server flush what was sent so far: it discards
                // buffered bytes when the body fails.
                tokio::time::sleep(Duration::from_millis(20)).await;
                f.done = true;
                if let Some(g) = f.guard.as_mut() {
                    g.finish();
                }
                let cut = std::io::Error::other("injected fault: truncated");
                return Some((Err(cut), f));
            }
            let wait = if f.started == 0 { f.lead } else { f.gap };
            if let Some(d) = wait {
                tokio::time::sleep(d).await;
            }
            f.started += 1;
            f.pending.extend(f.units.next().unwrap_or_default());
        }
    }))
}
