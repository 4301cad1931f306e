//! ElevenLabs streaming text-to-speech: `POST /v1/text-to-speech/{voice_id}/stream`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::faults::{self, Dialect, Fault};
use super::{audio_units, pcm_bytes, speech_samples, Recorded, Route, Shared, StreamGuard};

/// The `pcm_*` output formats served, as sample rates.
const PCM_RATES: [u32; 6] = [8000, 16000, 22050, 24000, 44100, 48000];
/// Formats the real API has that this fake does not synthesize (400 rather than 422).
const UNSERVED_PREFIXES: [&str; 4] = ["mp3_", "opus_", "ulaw_", "alaw_"];

/// A FastAPI-style validation error, as ElevenLabs answers a malformed request.
fn unprocessable(loc: [&str; 2], kind: &str, msg: &str, input: Value) -> Response {
    let detail = json!({"detail": [{"type": kind, "loc": loc, "msg": msg, "input": input}]});
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(detail)).into_response()
}

/// JSON `{text, model_id, voice_settings}` with query `output_format=pcm_16000` (or another
/// `pcm_*` rate) answers raw s16le mono at that rate, streamed in 4800-byte chunks. Unknown
/// voice ids get 404 `voice_not_found` (see `FakeProvider::set_elevenlabs_voices`), unknown
/// output formats 422, mp3/opus/µ-law/A-law (the real default is mp3) 400, a missing `text`
/// 422 and an empty one 400.
pub(super) async fn tts(
    State(inner): State<Shared>,
    Path(voice_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = Route::ElevenLabs;
    let recorded = Recorded::new(&uri, &headers, &body);
    let request = recorded.json.clone();
    inner.record(route, recorded);
    let fault = match inner.admit(route, &headers) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    if let Some(r) = faults::before(fault.as_ref(), Dialect::ElevenLabs).await {
        return r;
    }

    let known = inner
        .settings
        .lock()
        .unwrap()
        .voices
        .as_ref()
        .is_none_or(|v| v.contains(&voice_id));
    if !known {
        let message = format!("A voice with the voice_id {voice_id} was not found.");
        return faults::error(Dialect::ElevenLabs, 404, "voice_not_found", &message);
    }
    let format = query.get("output_format").map_or("mp3_44100_128", |s| s);
    let rate = format
        .strip_prefix("pcm_")
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|r| PCM_RATES.contains(r));
    let Some(rate) = rate else {
        if UNSERVED_PREFIXES.iter().any(|p| format.starts_with(p)) {
            let message = format!("output_format {format}: only pcm_* is served by this fake");
            return faults::error(Dialect::ElevenLabs, 400, "invalid_output_format", &message);
        }
        let msg = "Input should be one of the documented output formats, e.g. 'pcm_16000'";
        return unprocessable(["query", "output_format"], "enum", msg, json!(format));
    };
    let Some(request) = request.filter(Value::is_object) else {
        let msg = "JSON decode error";
        return unprocessable(["body", ""], "json_invalid", msg, Value::Null);
    };
    let Some(text) = request.get("text").and_then(Value::as_str) else {
        return unprocessable(["body", "text"], "missing", "Field required", Value::Null);
    };
    if text.trim().is_empty() {
        let message = "The text must not be empty.";
        return faults::error(Dialect::ElevenLabs, 400, "empty_text", message);
    }
    if fault == Some(Fault::MalformedJson) {
        return faults::malformed_error();
    }

    let bytes = pcm_bytes(&speech_samples(text.chars().count(), rate));
    let guard = StreamGuard::open(&inner, route);
    let body = faults::streamed(audio_units(&bytes), fault.as_ref(), Some(guard));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, "audio/pcm".parse().unwrap());
    h.insert(
        "request-id",
        format!("el-{}", inner.next_id()).parse().unwrap(),
    );
    response
}
