//! The voxwire WebSocket, one adapter between a client and the call core. `GET /ws`:
//! authenticates before upgrading (401 or 403 without an upgrade), then splits the
//! socket into a reader task and a writer task with the call actor between them. When one ends,
//! all end. The writer pings the client every `VOXWIRE_WS_PING_SECS` and gives up on a frame the
//! client does not take within `VOXWIRE_WS_WRITE_TIMEOUT_SECS`; the reader closes a socket from
//! which nothing arrives for `VOXWIRE_WS_IDLE_TIMEOUT_SECS`.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::info;

use crate::auth::Claims;
use crate::http::api::{authenticate, TokenQuery};
use crate::http::error::AppError;
use crate::protocol::{ErrorCode, ServerMessage, PROTOCOL};
use crate::server::AppState;

mod output;
mod session;
pub(crate) mod socket;

use socket::HARD_LIMIT_FACTOR;
pub use socket::{Inbound, Outbound};

/// Initial read buffer of a socket, and the most read from it at once. The default (128 KiB) is
/// zero-filled on the first read, so every idle call held 128 KiB; a larger frame still grows the
/// buffer to fit it, and a 500 ms PCM16 chunk (about 21 KB of JSON) takes two reads.
pub(crate) const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A browser's socket from an origin not in `VOXWIRE_ALLOWED_ORIGINS` (when set) is refused.
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let allowed = &state.config.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            state.metrics.error(ErrorCode::Forbidden);
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin not allowed",
            ));
        }
    }
    Ok(())
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let claims = match authenticate(&state, &headers, &query) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_origin(&state, &headers) {
        return e.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let hard_limit = state
        .config
        .limits
        .max_message_bytes
        .saturating_mul(HARD_LIMIT_FACTOR);
    ws.protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            // Tracked, so that shutdown waits for the call's goodbye.
            let sessions = state.sessions.clone();
            sessions.track_future(connection(socket, state, claims))
        })
}

async fn connection(socket: WebSocket, state: Arc<AppState>, claims: Claims) {
    let session_id = format!("sess_{:016x}", rand::random::<u64>());
    state.metrics.connections.inc();
    info!(session_id = %session_id, sub = %claims.sub, "connected");
    let (in_rx, out_tx, halves) = socket::split(
        socket,
        socket::parse_voxwire,
        state.config.limits.max_message_bytes,
        state.config.net.clone(),
        session_id.clone(),
        256,
    );
    let hello = ServerMessage::Connected {
        session_id: session_id.clone(),
        protocol: PROTOCOL,
        limits: state.config.limits.clone(),
        engines: state.engines.names(),
    };
    let _ = out_tx.send(Outbound::Message(hello)).await;
    let cancel = state.shutdown.child_token();
    session::run(
        state.call_services.clone(),
        claims,
        session_id.clone(),
        in_rx,
        out_tx,
        cancel,
    )
    .await;
    halves.finish().await;
    info!(session_id = %session_id, "disconnected");
}
