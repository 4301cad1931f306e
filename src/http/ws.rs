//! `GET /ws`: authenticates before upgrading (401 or 403 without an upgrade), then splits the
//! socket into a reader task and a writer task with the call actor between them. When one ends,
//! all end.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::api::{authenticate, TokenQuery};
use super::error::AppError;
use crate::auth::Claims;
use crate::call::session::{self, Inbound, Outbound};
use crate::protocol::{parse_client_message, ErrorCode, ServerMessage, PROTOCOL};
use crate::server::AppState;

/// Frames above the announced limit but below this multiple of it get a non-fatal error; larger
/// ones close the socket (1009).
const HARD_LIMIT_FACTOR: usize = 4;

/// How long a socket closed for a refused frame stays open for the client to read why.
const FATAL_LINGER: Duration = Duration::from_secs(1);

/// Initial read buffer of a socket, and the most read from it at once. The default (128 KiB) is
/// zero-filled on the first read, so every idle call held 128 KiB; a larger frame still grows the
/// buffer to fit it, and a 500 ms PCM16 chunk (about 21 KB of JSON) takes two reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

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
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let allowed = &state.config.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            state.metrics.error(ErrorCode::Forbidden);
            return AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin not allowed",
            )
            .into_response();
        }
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
        .on_upgrade(move |socket| connection(socket, state, claims))
}

async fn connection(socket: WebSocket, state: Arc<AppState>, claims: Claims) {
    let session_id = format!("sess_{:016x}", rand::random::<u64>());
    state.metrics.connections.inc();
    info!(session_id = %session_id, sub = %claims.sub, "connected");
    let (sink, stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(256);
    let hello = ServerMessage::Connected {
        session_id: session_id.clone(),
        protocol: PROTOCOL,
        limits: state.config.limits.clone(),
        engines: state.engines.names(),
    };
    let _ = out_tx.send(Outbound::Message(hello)).await;
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let reader = tokio::spawn(read_loop(
        stream,
        in_tx,
        state.config.limits.max_message_bytes,
    ));
    let cancel = state.shutdown.child_token();
    session::run(state, claims, session_id.clone(), in_rx, out_tx, cancel).await;
    let unread = if reader.is_finished() {
        reader.await.ok().flatten()
    } else {
        reader.abort();
        None
    };
    // The writer ends once the actor's sender is gone; give it a moment to flush.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if let Some(stream) = unread {
        // Closing a socket that still holds unread bytes (the rest of a refused frame) resets
        // the connection, and a reset makes the client drop what it has not read yet: the
        // error and the 1009 close. Keep the socket open a moment so the client can read them.
        tokio::time::sleep(FATAL_LINGER).await;
        drop(stream);
    }
    info!(session_id = %session_id, "disconnected");
}

/// Returns the stream when it ended on a frame refused mid-read, whose rest is still unread.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound>,
    max_bytes: usize,
) -> Option<SplitStream<WebSocket>> {
    while let Some(msg) = stream.next().await {
        let inbound = match msg {
            Ok(Message::Text(text)) if text.len() > max_bytes => Inbound::Invalid(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the {max_bytes}-byte limit",
                    text.len()
                ),
            ),
            Ok(Message::Text(text)) => match parse_client_message(&text) {
                Ok(m) => Inbound::Message(m),
                Err((code, message)) => Inbound::Invalid(code, message),
            },
            Ok(Message::Binary(_)) => Inbound::Invalid(
                ErrorCode::BinaryNotSupported,
                "binary frames are not supported; send JSON text frames with base64 audio".into(),
            ),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                debug!(error = %e, "socket read ended");
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("too long") || text.contains("limit") {
                    let message = format!(
                        "message exceeds the hard limit of {} bytes",
                        max_bytes * HARD_LIMIT_FACTOR
                    );
                    let _ = tx
                        .send(Inbound::Fatal(ErrorCode::MessageTooLarge, message, 1009))
                        .await;
                    return Some(stream);
                }
                break;
            }
        };
        if tx.send(inbound).await.is_err() {
            break;
        }
    }
    None
}

async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Message(msg) => {
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialize a server message");
                        continue;
                    }
                };
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            Outbound::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}
