//! `GET /ws`: authenticates before upgrading (401 or 403 without an upgrade), then splits the
//! socket into a reader task and a writer task with the call actor between them. When one ends,
//! all end. The writer pings the client every `VOXWIRE_WS_PING_SECS` and gives up on a frame the
//! client does not take within `VOXWIRE_WS_WRITE_TIMEOUT_SECS`; the reader closes a socket from
//! which nothing arrives for `VOXWIRE_WS_IDLE_TIMEOUT_SECS`.

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
use tracing::{debug, info, warn};

use super::api::{authenticate, TokenQuery};
use super::error::AppError;
use crate::auth::Claims;
use crate::call::session::{self, Inbound, Outbound};
use crate::config::NetSettings;
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
    let net = state.config.net;
    let writer = tokio::spawn(write_loop(sink, out_rx, net, session_id.clone()));
    let reader = tokio::spawn(read_loop(
        stream,
        in_tx,
        state.config.limits.max_message_bytes,
        net.ws_idle_timeout,
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

/// What a socket read error means for the client, by the WebSocket library's error type.
fn read_error(e: axum::Error, max_bytes: usize) -> Option<(ErrorCode, String, u16)> {
    use tungstenite::error::Error as WsError;
    let inner = e.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((
            ErrorCode::MessageTooLarge,
            format!(
                "message exceeds the hard limit of {} bytes",
                max_bytes.saturating_mul(HARD_LIMIT_FACTOR)
            ),
            1009,
        )),
        // RFC 6455 8.1: a text frame that is not UTF-8 fails the connection with 1007.
        Some(WsError::Utf8(_)) => Some((
            ErrorCode::InvalidMessage,
            "text frame is not valid UTF-8".into(),
            1007,
        )),
        _ => {
            debug!(error = %inner, "socket read ended");
            None
        }
    }
}

/// Returns the stream when it ended on a frame refused mid-read, whose rest is still unread.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound>,
    max_bytes: usize,
    idle_timeout: Duration,
) -> Option<SplitStream<WebSocket>> {
    loop {
        let msg = match tokio::time::timeout(idle_timeout, stream.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => break,
            Err(_) => {
                // Not even a pong: the client is gone or stuck.
                let _ = tx.send(Inbound::Idle).await;
                break;
            }
        };
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
                let Some((code, message, close)) = read_error(e, max_bytes) else {
                    break;
                };
                let _ = tx.send(Inbound::Fatal(code, message, close)).await;
                // Only a refused oversized frame leaves bytes unread behind it.
                return (close == 1009).then_some(stream);
            }
        };
        if tx.send(inbound).await.is_err() {
            break;
        }
    }
    None
}

/// Sends one frame, unless the client does not take it within the write timeout.
async fn send_frame(
    sink: &mut SplitSink<WebSocket, Message>,
    msg: Message,
    net: &NetSettings,
    session_id: &str,
) -> bool {
    match tokio::time::timeout(net.ws_write_timeout, sink.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            warn!(
                session_id,
                timeout_s = net.ws_write_timeout.as_secs(),
                "client is not reading: closing its socket"
            );
            false
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    net: NetSettings,
    session_id: String,
) {
    let first = tokio::time::Instant::now() + net.ws_ping_interval;
    let mut ping = tokio::time::interval_at(first, net.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            out = rx.recv() => out,
            _ = ping.tick() => {
                if !send_frame(&mut sink, Message::Ping(Default::default()), &net, &session_id).await {
                    return;
                }
                continue;
            }
        };
        let Some(out) = out else { break };
        let msg = match out {
            Outbound::Message(msg) => match serde_json::to_string(&msg) {
                Ok(t) => Message::Text(t.into()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize a server message");
                    continue;
                }
            },
            Outbound::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = send_frame(&mut sink, Message::Close(Some(frame)), &net, &session_id).await;
                return;
            }
        };
        if !send_frame(&mut sink, msg, &net, &session_id).await {
            return;
        }
    }
    let _ = tokio::time::timeout(net.ws_write_timeout, sink.close()).await;
}
