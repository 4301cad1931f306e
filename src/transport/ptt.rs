//! `POST /api/voice/turn`: push-to-talk for clients that cannot hold a socket, an adapter that
//! runs one turn of a call through the call core (the same rules, ids, history and metrics as a
//! socket's turns). The body is an audio file (raw with its `Content-Type`, or the multipart
//! field `audio`); the reply is JSON with the transcript, the response text, the spoken reply as
//! base64 WAV and per-stage timings.

use std::sync::Arc;
use tokio::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audio::decode::{base64_encode, decode_file};
use crate::audio::encode::wav_bytes;
use crate::audio::{resample::resample, AudioError, ENGINE_RATE};
use crate::call::{self, CallEvent, CallInput, Owner, StartRequest};
use crate::http::api::{authenticate, TokenQuery};
use crate::http::error::AppError;
use crate::protocol::{
    DetectionMode, DoneReason, EndReason, ErrorCode, TurnDetectionUpdate, TurnTimings,
};
use crate::server::AppState;

#[derive(Deserialize)]
pub struct TurnQuery {
    pub token: Option<String>,
    pub call_id: Option<String>,
    pub agent: Option<String>,
}

fn bad(status: StatusCode, code: ErrorCode, msg: impl Into<String>) -> AppError {
    AppError::new(status, code, msg)
}

/// Room for a multipart body's boundaries, part headers and small fields beside the audio: the
/// `audio` field itself gets the same limit as a raw body.
pub const MULTIPART_OVERHEAD: usize = 64 * 1024;

async fn read_audio(
    state: &AppState,
    request: Request,
) -> Result<(Vec<u8>, Option<String>), AppError> {
    let limit = state.config.max_upload_bytes;
    let too_large = || {
        bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("audio larger than {limit} bytes"),
        )
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("multipart/form-data"))
    {
        let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
            bad(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidAudio,
                e.body_text(),
            )
        })?;
        loop {
            let field = multipart.next_field().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    bad(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidAudio,
                        e.body_text(),
                    )
                }
            })?;
            let Some(field) = field else {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidAudio,
                    "multipart body has no `audio` field",
                ));
            };
            if field.name() != Some("audio") {
                continue;
            }
            let mime = field.content_type().map(str::to_string);
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    bad(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidAudio,
                        e.body_text(),
                    )
                }
            })?;
            if bytes.len() > limit {
                return Err(too_large());
            }
            return Ok((bytes.to_vec(), mime));
        }
    }
    let body: Body = request.into_body();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    Ok((bytes.to_vec(), content_type))
}

/// Decodes an uploaded file and resamples it to the engines' rate. Decoding stops as soon as the
/// audio passes the turn-audio limit, so a small file that expands to hours costs no more.
fn decode_upload(bytes: &[u8], mime: Option<&str>, max_ms: u64) -> Result<Vec<f32>, AppError> {
    let refused = |e: AudioError| match e {
        AudioError::TooLong { .. } => bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TurnAudioLimit,
            e.to_string(),
        ),
        _ => bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidAudio,
            e.to_string(),
        ),
    };
    let decoded = decode_file(bytes, mime, max_ms).map_err(refused)?;
    resample(&decoded.samples, decoded.sample_rate, ENGINE_RATE).map_err(refused)
}

pub async fn turn(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TurnQuery>,
    request: Request,
) -> Result<Json<Value>, AppError> {
    let claims = authenticate(
        &state,
        request.headers(),
        &TokenQuery {
            token: q.token.clone(),
        },
    )?;
    let result = handle(&state, claims, q, request).await;
    if let Err(e) = &result {
        state.metrics.error(e.code);
    }
    result
}

/// The HTTP status for an error code of the call core.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::CallNotFound => StatusCode::NOT_FOUND,
        ErrorCode::CallAlreadyActive | ErrorCode::SessionUsed => StatusCode::CONFLICT,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooManyCalls | ErrorCode::LimitReached => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::EngineBusy | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::EngineError => StatusCode::BAD_GATEWAY,
        ErrorCode::TurnAudioLimit => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn handle(
    state: &Arc<AppState>,
    claims: crate::auth::Claims,
    q: TurnQuery,
    request: Request,
) -> Result<Json<Value>, AppError> {
    let received = Instant::now();
    let body_timeout = state.config.net.body_timeout;
    let (bytes, mime) = tokio::time::timeout(body_timeout, read_audio(state, request))
        .await
        .map_err(|_| {
            bad(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s",
                    body_timeout.as_secs()
                ),
            )
        })??;
    if bytes.is_empty() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidAudio,
            "empty body: send an audio file",
        ));
    }
    let max_ms = state.config.limits.max_turn_audio_ms;
    // Decoding and resampling a whole file is CPU work: off the async runtime. A decoder that
    // panics on a hostile file ends its blocking task, which is reported as undecodable audio.
    let samples =
        tokio::task::spawn_blocking(move || decode_upload(&bytes, mime.as_deref(), max_ms))
            .await
            .unwrap_or_else(|_| {
                Err(bad(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::InvalidAudio,
                    "audio does not decode",
                ))
            })?;
    let decode_ms = received.elapsed().as_secs_f64() * 1000.0;

    // One turn of a call: started (or resumed), the audio committed, ended.
    let request = StartRequest {
        owner: Owner {
            sub: claims.sub,
            org: claims.org,
        },
        agent: q.agent,
        token_agent: claims.agent,
        resume: q.call_id,
        variables: Default::default(),
        detection: Some(TurnDetectionUpdate {
            mode: Some(DetectionMode::Manual),
            ..Default::default()
        }),
        greet: false,
        push_to_talk: true,
        record: Some(false),
        session: claims.sid,
    };
    let started = call::start(&state.call_services, request)
        .await
        .map_err(|e| {
            let limit = e.limit;
            let err = bad(status_of(e.code), e.code, e.message);
            match limit {
                Some(l) => err.with("limit", serde_json::json!(l)),
                None => err,
            }
        })?;
    let call_id = started.call_id.clone();
    let handle = started.handle;
    let mut events = started.events;
    let mut turn = Turn::default();
    let sent = handle.send(CallInput::Audio(samples)).await.is_ok()
        && handle.send(CallInput::Commit).await.is_ok();
    if sent {
        while let Some(event) = events.recv().await {
            if turn.take(event) {
                break;
            }
        }
    }
    // The call ends with its turn, so that the next turn may resume it at once.
    let _ = handle.send(CallInput::End(EndReason::ClientEnded)).await;
    while let Some(event) = events.recv().await {
        if matches!(event, CallEvent::Ended { .. }) {
            break;
        }
    }
    turn.answer(call_id, decode_ms)
}

/// What one push-to-talk turn produced.
#[derive(Default)]
struct Turn {
    transcript: String,
    reply: Option<String>,
    audio: Vec<f32>,
    rate: u32,
    done: Option<DoneReason>,
    timings: Option<TurnTimings>,
    error: Option<(ErrorCode, String)>,
}

impl Turn {
    /// Takes one event; true once the turn is over.
    fn take(&mut self, event: CallEvent) -> bool {
        match event {
            CallEvent::Transcript {
                text,
                is_final: true,
                ..
            } => self.transcript = text,
            CallEvent::Audio {
                samples,
                sample_rate,
                ..
            } => {
                self.rate = sample_rate;
                self.audio.extend_from_slice(&samples);
            }
            CallEvent::ResponseText { text, .. } => self.reply = Some(text),
            CallEvent::Error { code, message } => self.error = Some((code, message)),
            CallEvent::ResponseDone { reason, .. } => {
                self.done = Some(reason);
                // A completed turn's metrics follow; the others end here.
                return reason != DoneReason::Completed;
            }
            CallEvent::Metrics { timings, .. } => {
                self.timings = Some(*timings);
                return true;
            }
            CallEvent::Ended { .. } => return true,
            _ => {}
        }
        false
    }

    fn answer(self, call_id: String, decode_ms: f64) -> Result<Json<Value>, AppError> {
        match (self.done, self.error) {
            (Some(DoneReason::NoSpeech), _) => Ok(Json(json!({
                "call_id": call_id, "transcript": "", "response": "", "audio": null,
                "no_speech": true, "timings": { "decode_ms": decode_ms },
            }))),
            (Some(DoneReason::Completed), _) => {
                let mut timings =
                    serde_json::to_value(self.timings.unwrap_or_default()).unwrap_or(Value::Null);
                if let Some(t) = timings.as_object_mut() {
                    t.insert("decode_ms".into(), json!(decode_ms));
                }
                let rate = if self.rate == 0 { 16_000 } else { self.rate };
                Ok(Json(json!({
                    "call_id": call_id,
                    "transcript": self.transcript,
                    "response": self.reply.unwrap_or_default(),
                    "audio": base64_encode(&wav_bytes(&self.audio, rate)),
                    "audio_format": { "encoding": "wav", "sample_rate": rate },
                    "no_speech": false,
                    "timings": timings,
                })))
            }
            (_, Some((code, message))) => {
                tracing::warn!(%message, "push-to-talk turn failed");
                Err(bad(status_of(code), code, message))
            }
            _ => Err(AppError::internal("turn ended without a result")),
        }
    }
}
