//! Phone calls through Telnyx: Call Control and bidirectional media streaming, one more door
//! into the call core.
//!
//! `POST /telephony/telnyx/voice` is the Call Control webhook of the Telnyx application the
//! numbers belong to. Its signature (`telnyx-signature-ed25519` over `telnyx-timestamp|body`)
//! is checked against `TELNYX_PUBLIC_KEY`; on `call.initiated` for an incoming call it picks
//! who answers from the called number (`VOXWIRE_TELNYX_NUMBERS`) and answers the call through
//! the REST API (`actions/answer`, `api.rs`) with a bidirectional PCMU media stream to
//! `GET /telephony/telnyx/media?pass=...`, the pass being a short-lived stream pass for that
//! call. The media socket is opened only with a valid pass, for the call it names; its
//! messages (`wire.rs`) go through the session all phone doors share (`transport::phone`).
//! Closing a Telnyx media stream does not end the call, so when the call ends on the server's
//! side (not by the caller's hang-up) the door hangs it up (`actions/hangup`).

pub mod api;
pub mod signature;
mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use crate::http::error::AppError;
use crate::protocol::ErrorCode;
use crate::server::AppState;
use crate::transport::phone::{self, forbidden, Carrier, Door, Outcome, StreamPass};

/// Where Telnyx posts the call's events.
pub const VOICE_PATH: &str = "/telephony/telnyx/voice";
/// Where Telnyx opens the call's media stream.
pub const MEDIA_PATH: &str = "/telephony/telnyx/media";

/// The largest webhook body taken (Telnyx's are a few KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Telnyx's media socket, as the phone session sees it.
const DOOR: Door = Door {
    carrier: Carrier::Telnyx,
    parse: wire::parse,
    wire: wire::TelnyxWire::boxed,
};

/// Telnyx's public key and the public URL, or 503 `not_configured` (the API key is needed
/// too: without it no call can be answered).
fn configured(state: &AppState) -> Result<(&VerifyingKey, &str), AppError> {
    let t = &state.config;
    match (
        &t.telephony.telnyx_public_key,
        &t.telephony.telnyx_api_key,
        &t.net.public_url,
    ) {
        (Some(key), Some(_), Some(url)) => Ok((key, url.as_str())),
        _ => Err(phone::not_configured(
            state,
            "Telnyx phone calls are not configured: set TELNYX_PUBLIC_KEY, TELNYX_API_KEY and VOXWIRE_PUBLIC_URL",
        )),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A Call Control webhook: `{"data": {"event_type": ..., "payload": {...}}, "meta": {...}}`.
#[derive(Debug, Deserialize)]
struct Webhook {
    data: WebhookData,
}

#[derive(Debug, Deserialize)]
struct WebhookData {
    event_type: String,
    #[serde(default)]
    payload: CallPayload,
}

#[derive(Debug, Default, Deserialize)]
struct CallPayload {
    #[serde(default)]
    call_control_id: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// `POST /telephony/telnyx/voice`: Telnyx's Call Control webhook.
pub async fn voice(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match answer(&state, &headers, &body).await {
        Ok(()) => (StatusCode::OK, Json(json!({}))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(), AppError> {
    let (key, _) = configured(state)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(sig), Some(timestamp)) = (
        header("telnyx-signature-ed25519"),
        header("telnyx-timestamp"),
    ) else {
        return Err(forbidden(
            state,
            "missing telnyx-signature-ed25519 or telnyx-timestamp",
        ));
    };
    if let Err(why) = signature::verify(key, timestamp, body, sig, now()) {
        warn!(%why, "a Telnyx webhook with a bad signature: refused");
        return Err(forbidden(state, &format!("bad Telnyx signature: {why}")));
    }
    let hook: Webhook = serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            format!("not a Call Control webhook: {e}"),
        )
    })?;
    let call = &hook.data.payload;
    // Other events (answered, hangup, streaming) need nothing from the server.
    if hook.data.event_type != "call.initiated" || call.direction != "incoming" {
        return Ok(());
    }
    let numbers = &state.config.telephony.telnyx_numbers;
    let (org, agent) = crate::transport::phone::who_answers(state, numbers, &call.to);
    let pass = StreamPass::new(
        Carrier::Telnyx,
        &call.call_control_id,
        &call.from,
        &call.to,
        org,
        agent,
    );
    let token = pass.sign(&state.auth).map_err(AppError::internal)?;
    let socket = state.config.net.public_socket_url().unwrap_or_default();
    let command = json!({
        "stream_url": format!("{socket}{MEDIA_PATH}?pass={token}"),
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        // Telnyx retries a webhook it thinks failed: the same command is taken once.
        "command_id": format!("voxwire-answer-{}", call.call_control_id),
    });
    api::command(
        &state.config.telephony,
        &call.call_control_id,
        "answer",
        &command,
    )
    .await
    .map_err(|e| {
        state.metrics.error(ErrorCode::CarrierError);
        AppError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::CarrierError,
            format!("the call could not be answered: {e}"),
        )
    })?;
    info!(call_control_id = %call.call_control_id, "incoming Telnyx call answered: its media stream follows");
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct MediaQuery {
    #[serde(default)]
    pass: Option<String>,
}

/// `GET /telephony/telnyx/media?pass=...`: Telnyx's media socket, opened only with a pass.
pub async fn media(
    State(state): State<Arc<AppState>>,
    Query(query): Query<MediaQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = configured(&state) {
        return e.into_response();
    }
    let pass = query
        .pass
        .as_deref()
        .and_then(|t| StreamPass::verify(&state.auth, t, Carrier::Telnyx).ok());
    let Some(pass) = pass else {
        state.metrics.error(ErrorCode::Unauthorized);
        warn!("a Telnyx media socket without a valid stream pass: refused");
        return AppError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the media stream needs a valid pass",
        )
        .into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    phone::upgrade(state, ws, DOOR, Some(pass), finish)
}

/// Once the call is over: a call the agent transferred to a phone number is transferred
/// (`actions/transfer`); any other that ended on the server's side is hung up, since closing
/// the stream leaves a Telnyx call on. A transfer Telnyx refuses hangs up too.
async fn finish(state: Arc<AppState>, outcome: Outcome) {
    if outcome.pass.is_none() || outcome.stopped {
        return;
    }
    let telephony = &state.config.telephony;
    let id = &outcome.call_id;
    if let Some(to) = outcome.transfer_target() {
        let command = json!({"to": to, "command_id": format!("voxwire-transfer-{id}")});
        match api::command(telephony, id, "transfer", &command).await {
            Ok(()) => return info!(call_control_id = %id, "Telnyx call transferred"),
            Err(e) => {
                state.metrics.error(ErrorCode::CarrierError);
                warn!(call_control_id = %id, error = %e, "a Telnyx call could not be transferred: it is hung up");
            }
        }
    }
    let command = json!({"command_id": format!("voxwire-hangup-{id}")});
    match api::command(telephony, id, "hangup", &command).await {
        Ok(()) => info!(call_control_id = %id, "Telnyx call hung up"),
        Err(e) => {
            state.metrics.error(ErrorCode::CarrierError);
            warn!(call_control_id = %id, error = %e, "a Telnyx call could not be hung up");
        }
    }
}
