//! `POST /api/voice/turn`: push-to-talk for clients that cannot hold a socket. The body is an
//! audio file (raw with its `Content-Type`, or the multipart field `audio`); the reply is JSON
//! with the transcript, the response text, the spoken reply as base64 WAV and per-stage timings.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::api::{authenticate, TokenQuery};
use super::error::AppError;
use crate::audio::decode::{base64_encode, decode_file};
use crate::audio::encode::wav_bytes;
use crate::audio::{resample::resample, AudioError, ENGINE_RATE};
use crate::call::store::StoreError;
use crate::call::turn::{run_turn, TurnEvent, TurnInput, TurnRequest, TurnSink};
use crate::call::Owner;
use crate::engines::llm::Role;
use crate::engines::EngineError;
use crate::protocol::ErrorCode;
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

    let agent_name = q.agent.clone().or(claims.agent.clone());
    let agent = state.agents.get(agent_name.as_deref()).ok_or_else(|| {
        bad(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownAgent,
            "unknown agent",
        )
    })?;
    let owner = Owner {
        sub: claims.sub,
        org: claims.org,
    };
    let live = state
        .calls
        .start(&owner, &agent.name, q.call_id.as_deref())
        .map_err(|e| match e {
            StoreError::NotFound(_) => bad(
                StatusCode::NOT_FOUND,
                ErrorCode::CallNotFound,
                e.to_string(),
            ),
            StoreError::Live(_) => bad(
                StatusCode::CONFLICT,
                ErrorCode::CallAlreadyActive,
                e.to_string(),
            ),
            StoreError::TooMany(_) => bad(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyCalls,
                e.to_string(),
            ),
        })?;
    let record = live.record.clone();
    // A continued call keeps its own agent and the prompt its variables gave it.
    let agent = if q.call_id.is_some() && q.agent.is_none() {
        state.agents.get(Some(&record.agent)).unwrap_or(agent)
    } else {
        agent
    };
    let system = record
        .system_prompt()
        .filter(|_| q.call_id.is_some() && q.agent.is_none())
        .unwrap_or_else(|| agent.render_prompt(&Default::default()));
    // The turn takes its ids like a socket turn, so a resumed call's ids stay in order.
    let turn_id = record.new_turn_id();
    let (_user_item, _reply_item) = (record.new_item_id(), record.new_item_id());

    let (tx, mut rx) = mpsc::channel(64);
    let cancel = state.shutdown.child_token();
    // Cancels the turn if the client goes away and this handler is dropped.
    let _guard = cancel.clone().drop_guard();
    let engines = state.engines.for_agent(&agent.name);
    let rate = engines.tts.sample_rate();
    let request = TurnRequest {
        engines,
        system,
        agent: agent.clone(),
        session_id: record.id.clone(),
        history: record.history().messages(),
        input: TurnInput::Audio(samples.into()),
        anchor: Instant::now(),
    };
    tokio::spawn(run_turn(request, cancel, TurnSink { turn_id, tx }));

    let mut transcript = String::new();
    let mut audio = Vec::new();
    while let Some((_, event)) = rx.recv().await {
        match event {
            TurnEvent::Transcript(t) => {
                record.history().push(Role::User, t.clone());
                transcript = t;
            }
            TurnEvent::NoSpeech => {
                return Ok(Json(json!({
                    "call_id": record.id, "transcript": "", "response": "", "audio": null,
                    "no_speech": true, "timings": { "decode_ms": decode_ms },
                })));
            }
            TurnEvent::Delta(_) => {}
            TurnEvent::Audio { samples, .. } => audio.extend(samples),
            TurnEvent::Done { reply, timings } => {
                record.history().push(Role::Assistant, reply.clone());
                record
                    .turns
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                state.metrics.turn(&timings);
                let mut timings = serde_json::to_value(&timings).unwrap_or(Value::Null);
                if let Some(t) = timings.as_object_mut() {
                    t.insert("decode_ms".into(), json!(decode_ms));
                }
                return Ok(Json(json!({
                    "call_id": record.id,
                    "transcript": transcript,
                    "response": reply,
                    "audio": base64_encode(&wav_bytes(&audio, rate)),
                    "audio_format": { "encoding": "wav", "sample_rate": rate },
                    "no_speech": false,
                    "timings": timings,
                })));
            }
            TurnEvent::Failed { error } => {
                let (status, code) = match error {
                    EngineError::Busy { .. } => {
                        (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::EngineBusy)
                    }
                    _ => (StatusCode::BAD_GATEWAY, ErrorCode::EngineError),
                };
                tracing::warn!(%error, "push-to-talk turn failed");
                return Err(bad(status, code, error.to_string()));
            }
        }
    }
    Err(AppError::internal("turn ended without a result"))
}
