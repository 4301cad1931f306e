//! The socket's two halves: the reader turns frames into [`Inbound`] items (JSON messages,
//! binary audio, refusals), the writer sends [`Outbound`] items with a write deadline and pings.
//! Shared by every WebSocket door: each gives its own parser of text frames.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::NetSettings;
use crate::protocol::{parse_client_message, ClientMessage, ErrorCode, ServerMessage};

/// Frames above the announced limit but below this multiple of it get a non-fatal error; larger
/// ones close the socket (1009).
pub const HARD_LIMIT_FACTOR: usize = 4;

/// From the reader task: `M` is a parsed text frame.
pub enum Inbound<M = Box<ClientMessage>> {
    Message(M),
    /// A binary frame: raw audio in the call's `audio_format`.
    Audio(bytes::Bytes),
    /// A frame that could not be accepted; the call goes on.
    Invalid(ErrorCode, String),
    /// The socket cannot go on: send the error, then close with this code.
    Fatal(ErrorCode, String, u16),
    /// Nothing arrived from the client for the idle timeout, not even a pong.
    Idle,
}

/// To the writer task.
pub enum Outbound {
    Message(ServerMessage),
    /// A text frame already serialized (another door's wire format).
    Text(String),
    Close(u16, String),
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

/// How a door parses its text frames.
pub type Parse<M> = fn(&str) -> Result<M, (ErrorCode, String)>;

/// The voxwire socket's parser.
pub fn parse_voxwire(text: &str) -> Result<Box<ClientMessage>, (ErrorCode, String)> {
    parse_client_message(text).map(Box::new)
}

/// How long a socket closed for a refused frame stays open for the client to read why.
const FATAL_LINGER: Duration = Duration::from_secs(1);

/// The reader and writer tasks of one socket, until the connection is over.
pub struct Halves {
    reader: tokio::task::JoinHandle<Option<SplitStream<WebSocket>>>,
    writer: tokio::task::JoinHandle<()>,
}

/// Splits `socket` into a reader task (text frames through `parse`, at most `max_bytes`) and a
/// writer task; returns what they read, where to send, and the tasks.
pub fn split<M: Send + 'static>(
    socket: WebSocket,
    parse: Parse<M>,
    max_bytes: usize,
    net: NetSettings,
    session_id: String,
    out_buffer: usize,
) -> (mpsc::Receiver<Inbound<M>>, mpsc::Sender<Outbound>, Halves) {
    let (sink, stream) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(64);
    let (out_tx, out_rx) = mpsc::channel(out_buffer);
    let idle = net.ws_idle_timeout;
    let writer = tokio::spawn(write_loop(sink, out_rx, net, session_id));
    let reader = tokio::spawn(read_loop(stream, in_tx, max_bytes, idle, parse));
    (in_rx, out_tx, Halves { reader, writer })
}

impl Halves {
    /// Ends the connection once its session is over: stops reading, lets the writer flush.
    pub async fn finish(self) {
        let unread = if self.reader.is_finished() {
            self.reader.await.ok().flatten()
        } else {
            self.reader.abort();
            None
        };
        // The writer ends once the session's sender is gone; give it a moment to flush.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer).await;
        if let Some(stream) = unread {
            // Closing a socket that still holds unread bytes (the rest of a refused frame)
            // resets the connection, and a reset makes the client drop what it has not read
            // yet: the error and the 1009 close. Keep the socket open a moment so the client
            // can read them.
            tokio::time::sleep(FATAL_LINGER).await;
            drop(stream);
        }
    }
}

/// Returns the stream when it ended on a frame refused mid-read, whose rest is still unread.
pub async fn read_loop<M>(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound<M>>,
    max_bytes: usize,
    idle_timeout: Duration,
    parse: Parse<M>,
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
            Ok(Message::Text(text)) => match parse(&text) {
                Ok(m) => Inbound::Message(m),
                Err((code, message)) => Inbound::Invalid(code, message),
            },
            Ok(Message::Binary(bytes)) if bytes.len() > max_bytes => Inbound::Invalid(
                ErrorCode::MessageTooLarge,
                format!(
                    "message of {} bytes exceeds the {max_bytes}-byte limit",
                    bytes.len()
                ),
            ),
            Ok(Message::Binary(bytes)) => Inbound::Audio(bytes),
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

pub async fn write_loop(
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
            Outbound::Text(text) => Message::Text(text.into()),
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
