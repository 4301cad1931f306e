//! The operator socket, `GET /api/calls/{id}/operator`: one live call of the operator's org, both
//! ways. It sends the call's events (as the monitor stream shows them, with reply deltas) and,
//! while the operator listens in, its audio: the caller's and what the caller hears, each as
//! its own stream of binary frames. It takes the operator's commands (the HTTP routes' take
//! over, say, release, context, end, plus `listen` and `voice_end`) and, while the operator
//! holds the call, their live voice as binary frames, spoken to the caller as they arrive.
//!
//! The socket reads the call's feed and audio from bounded broadcasts: the call never waits for
//! an operator, a slow one loses events (told with `lagged`) or audio (silently). A frame the
//! operator does not take within [`WRITE_TIMEOUT`] closes the socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::monitor::{watch_slot, MonitorSlot};
use super::ws::check_origin;
use crate::audio::decode::pcm16_to_f32;
use crate::audio::encode::pcm16_bytes;
use crate::audio::ENGINE_RATE;
use crate::auth::Claims;
use crate::call::record::now_ms;
use crate::call::{CallInput, FeedItem, ListenAudio, OperatorAction};
use crate::http::access;
use crate::http::api::TokenQuery;
use crate::http::calls::stored_messages;
use crate::http::error::AppError;
use crate::http::operate::{self, check_text, MAX_BODY_BYTES};
use crate::live::remote::Reach;
use crate::protocol::ErrorCode;
use crate::server::AppState;

/// Largest frame of the operator's voice: about 1 s of 16 kHz pcm16.
pub const MAX_VOICE_FRAME: usize = 32 * 1024;
/// Largest frame the socket reads at all; anything larger closes it (1009).
const MAX_FRAME: usize = 64 * 1024;
/// The operator's line ends after this long without their voice.
pub const VOICE_IDLE: Duration = Duration::from_secs(1);
/// A frame the operator does not take within this closes the socket.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the socket checks on the operator's voice and on the call.
const TICK: Duration = Duration::from_millis(250);
/// A call that ended without its `call_ended` reaching the socket (lost to lag) closes it after
/// this long.
const ENDED_GRACE: Duration = Duration::from_secs(2);
/// How long a voice chunk may wait for room in the call's input queue before it is dropped.
const VOICE_SEND: Duration = Duration::from_millis(500);
/// How long the node holding a call may take to send its conversation to an operator joining
/// from another node (the store's copy is used after that), or to start forwarding its audio.
const HISTORY_WAIT: Duration = Duration::from_secs(2);

/// Binary frame header: stream, 0, sample rate (u16 little-endian).
const HEADER: usize = 4;

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = async {
        let claims = access::operator(&state, &headers, &query)?;
        check_origin(&state, &headers)?;
        let handle = operate::live_handle(&state, &call_id, &claims).await?;
        let slot = watch_slot(&state, claims.org.clone())?;
        Ok::<_, AppError>((claims, handle, slot))
    }
    .await;
    let (claims, handle, slot) = match admitted {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| {
            let sessions = state.sessions.clone();
            let session = Session {
                socket,
                state,
                claims,
                handle,
                listen: None,
                holding: false,
                voice: None,
                _slot: slot,
            };
            sessions.track_future(session.run())
        })
}

/// The operator's voice in progress.
struct Voice {
    last: Instant,
    /// Refused (the operator does not hold the call): said once, then dropped until it stops
    /// or the operator takes the call over.
    refused: bool,
    /// Carries an odd byte from one frame to the next.
    carry: Option<u8>,
}

struct Session {
    socket: WebSocket,
    state: Arc<AppState>,
    claims: Claims,
    handle: Reach,
    /// The call's audio, while the operator listens in.
    listen: Option<broadcast::Receiver<ListenAudio>>,
    /// Whether this operator holds the call taken over, as last heard.
    holding: bool,
    voice: Option<Voice>,
    _slot: MonitorSlot,
}

/// A command frame; which fields count depends on `type`.
#[derive(Deserialize)]
struct Command {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Value,
    text: Option<String>,
    force: Option<bool>,
    enabled: Option<bool>,
}

/// Why the socket closes.
enum Close {
    /// The socket is gone or failed; nothing more can be sent.
    Gone,
    /// Close with this code and reason.
    With(u16, &'static str),
}

async fn next_audio(
    listen: &mut Option<broadcast::Receiver<ListenAudio>>,
) -> Result<ListenAudio, broadcast::error::RecvError> {
    match listen {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One chunk of the call's audio as a binary frame (see the module header).
fn audio_frame(a: &ListenAudio) -> Vec<u8> {
    let rate = u16::try_from(a.sample_rate).unwrap_or(u16::MAX);
    let pcm = pcm16_bytes(&a.samples);
    let mut frame = Vec::with_capacity(HEADER + pcm.len());
    frame.extend_from_slice(&[a.stream as u8, 0]);
    frame.extend_from_slice(&rate.to_le_bytes());
    frame.extend_from_slice(&pcm);
    frame
}

fn error_frame(id: &Value, e: &AppError) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), json!("error"));
    o.insert("id".into(), id.clone());
    o.insert("code".into(), json!(e.code));
    o.insert("message".into(), json!(e.message));
    if let Some(detail) = &e.detail {
        for (k, v) in detail {
            o.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(o)
}

fn refused(code: ErrorCode, message: impl Into<String>) -> AppError {
    let status = match code {
        ErrorCode::PayloadTooLarge => axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::NotTakenOver => axum::http::StatusCode::CONFLICT,
        _ => axum::http::StatusCode::BAD_REQUEST,
    };
    AppError::new(status, code, message)
}

impl Session {
    async fn run(mut self) {
        let call_id = self.handle.call_id().to_string();
        let svc = self.state.call_services.clone();
        // Subscribed before the snapshot, so nothing falls between them.
        let mut feed = svc.feed.subscribe(true);
        let info = self
            .state
            .live_in_org(self.claims.org.as_deref())
            .await
            .into_iter()
            .find(|c| c.call_id == call_id);
        self.holding = info
            .as_ref()
            .and_then(|c| c.taken_over_by.as_deref())
            .is_some_and(|by| by == self.claims.sub);
        let messages = match self.state.calls.get_if(&call_id, |_| true) {
            Some(r) => r.masked_messages(&self.state.agents),
            // Held by another node: its latest turns may not be stored yet, so ask it.
            None => match &self.handle {
                Reach::Remote(r) => match r.history(HISTORY_WAIT).await {
                    Some(m) => m,
                    None => stored_messages(&self.state, &call_id).await,
                },
                Reach::Local(_) => stored_messages(&self.state, &call_id).await,
            },
        };
        let ready = json!({
            "type": "operator_ready",
            "at": now_ms(),
            "call": info,
            "messages": messages,
            "audio": {"format": "pcm16", "caller_rate": ENGINE_RATE, "voice_rate": ENGINE_RATE},
        });
        let shutdown = self.state.shutdown.clone();
        let expires = Instant::now() + self.claims.remaining();
        let mut tick = tokio::time::interval(TICK);
        let mut ended_since: Option<Instant> = None;
        let close = match self.text(&ready).await {
            Err(c) => c,
            Ok(()) => loop {
                let step = tokio::select! {
                    _ = shutdown.cancelled() => Err(Close::With(1001, "server shutting down")),
                    _ = tokio::time::sleep_until(expires) => Err(Close::With(1008, "token expired")),
                    item = feed.recv() => match item {
                        None => Err(Close::With(1001, "server shutting down")),
                        Some(FeedItem::Event(e)) if e.meta.call_id == call_id => {
                            self.track(&e.kind, &e.data);
                            let ended = e.kind == "call_ended";
                            match self.text(&e.to_json()).await {
                                Ok(()) if ended => Err(Close::With(1000, "call ended")),
                                other => other,
                            }
                        }
                        Some(FeedItem::Event(_)) => Ok(()),
                        Some(FeedItem::Missed(n)) => {
                            let lagged = json!({"type": "lagged", "at": now_ms(), "missed": n,
                                "reason": "slow_reader"});
                            self.text(&lagged).await
                        }
                    },
                    audio = next_audio(&mut self.listen) => match audio {
                        Ok(a) => self.send(Message::Binary(audio_frame(&a).into())).await,
                        // Audio a slow operator missed is gone; listening goes on.
                        Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                        Err(broadcast::error::RecvError::Closed) => {
                            self.listen = None;
                            Ok(())
                        }
                    },
                    msg = self.socket.recv() => match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Err(Close::Gone),
                        Some(Ok(Message::Text(t))) => self.command(t.as_str()).await,
                        Some(Ok(Message::Binary(b))) => self.voice(&b).await,
                        Some(Ok(_)) => Ok(()),
                    },
                    _ = tick.tick() => {
                        if self.voice.as_ref().is_some_and(|v| v.last.elapsed() >= VOICE_IDLE) {
                            self.voice_end().await;
                        }
                        if self.handle.is_ended() {
                            let since = *ended_since.get_or_insert_with(Instant::now);
                            if since.elapsed() >= ENDED_GRACE {
                                Err(Close::With(1000, "call ended"))
                            } else {
                                Ok(())
                            }
                        } else {
                            Ok(())
                        }
                    }
                };
                if let Err(c) = step {
                    break c;
                }
            },
        };
        if self.voice.is_some() {
            self.voice_end().await;
        }
        if let Close::With(code, reason) = close {
            let frame = Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
            let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(frame)).await;
        }
    }

    async fn send(&mut self, msg: Message) -> Result<(), Close> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Close::Gone),
        }
    }

    async fn text(&mut self, v: &Value) -> Result<(), Close> {
        self.send(Message::Text(v.to_string().into())).await
    }

    /// Follows who holds the call from its takeover events.
    fn track(&mut self, kind: &str, data: &Value) {
        let by_me = data["operator"].as_str() == Some(self.claims.sub.as_str());
        match kind {
            "takeover_started" => self.holding = by_me,
            "takeover_ended" => self.holding = false,
            _ => {}
        }
    }

    async fn command(&mut self, text: &str) -> Result<(), Close> {
        if text.len() > MAX_BODY_BYTES {
            let e = refused(
                ErrorCode::PayloadTooLarge,
                format!("a command must be at most {MAX_BODY_BYTES} bytes"),
            );
            return self.text(&error_frame(&Value::Null, &e)).await;
        }
        let cmd: Command = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let code = if serde_json::from_str::<Value>(text).is_ok() {
                    ErrorCode::InvalidMessage
                } else {
                    ErrorCode::InvalidJson
                };
                let e = refused(code, format!("not a command: {e}"));
                return self.text(&error_frame(&Value::Null, &e)).await;
            }
        };
        let id = cmd.id.clone();
        let answer = match self.act(cmd).await {
            Ok(a) => a,
            Err(e) => {
                self.state.metrics.error(e.code);
                error_frame(&id, &e)
            }
        };
        self.text(&answer).await
    }

    /// Carries out a command; the `result` frame, or why not.
    async fn act(&mut self, cmd: Command) -> Result<Value, AppError> {
        let force = cmd.force.unwrap_or(false);
        if force && self.claims.role() != crate::auth::Role::Admin {
            return Err(AppError::new(
                axum::http::StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "only an admin may force",
            ));
        }
        let text = || {
            cmd.text
                .as_deref()
                .ok_or_else(|| refused(ErrorCode::InvalidMessage, "`text` is missing"))
                .and_then(check_text)
        };
        let action = match cmd.kind.as_str() {
            "listen" => {
                let on = cmd.enabled.ok_or_else(|| {
                    refused(ErrorCode::InvalidMessage, "`enabled` must be true or false")
                })?;
                self.listen = if on {
                    self.handle.listen(HISTORY_WAIT).await
                } else {
                    None
                };
                return Ok(json!({"type": "result", "id": cmd.id, "command": "listen",
                    "listening": self.listen.is_some()}));
            }
            "voice_end" => {
                self.voice_end().await;
                return Ok(json!({"type": "result", "id": cmd.id, "command": "voice_end"}));
            }
            "takeover" => OperatorAction::Takeover { force },
            "release" => OperatorAction::Release { force },
            "say" => OperatorAction::Say(text()?),
            "context" => OperatorAction::Context(text()?),
            "end" => OperatorAction::End,
            other => {
                return Err(refused(
                    ErrorCode::InvalidMessage,
                    format!(
                        "unknown command `{}`",
                        other.chars().take(32).collect::<String>()
                    ),
                ))
            }
        };
        let name = action.name();
        let view =
            operate::command(&self.state, self.handle.call_id(), &self.claims, action).await?;
        self.holding = view.taken_over_by.as_deref() == Some(self.claims.sub.as_str());
        Ok(json!({"type": "result", "id": cmd.id, "command": name, "call": view}))
    }

    /// A frame of the operator's voice.
    async fn voice(&mut self, bytes: &[u8]) -> Result<(), Close> {
        if bytes.len() > MAX_VOICE_FRAME {
            let e = refused(
                ErrorCode::PayloadTooLarge,
                format!("a voice frame must be at most {MAX_VOICE_FRAME} bytes"),
            );
            return self.text(&error_frame(&Value::Null, &e)).await;
        }
        let now = Instant::now();
        let v = self.voice.get_or_insert(Voice {
            last: now,
            refused: false,
            carry: None,
        });
        v.last = now;
        if self.holding {
            v.refused = false;
        } else {
            if std::mem::replace(&mut v.refused, true) {
                return Ok(());
            }
            let e = refused(
                ErrorCode::NotTakenOver,
                "take the call over before talking to the caller",
            );
            return self.text(&error_frame(&Value::Null, &e)).await;
        }
        let samples = pcm16_to_f32(bytes, &mut v.carry);
        if samples.is_empty() {
            return Ok(());
        }
        let input = CallInput::OperatorVoice {
            operator: self.claims.sub.clone(),
            samples,
        };
        // A call that is behind on its inputs loses this chunk rather than stalling the socket.
        self.handle.send_voice(input, VOICE_SEND).await;
        Ok(())
    }

    /// The operator's line is over (they said so, went quiet, or left).
    async fn voice_end(&mut self) {
        if self.voice.take().is_some_and(|v| !v.refused) {
            let input = CallInput::OperatorVoiceEnd {
                operator: self.claims.sub.clone(),
            };
            self.handle.send_voice(input, VOICE_SEND).await;
        }
    }
}
