//! One WebSocket connection between its reader and writer tasks: client messages become call
//! inputs (base64 and binary audio decoded to engine-rate samples here), call events become
//! server messages. A connection holds at most one call at a time; the call itself runs in the
//! call core as its own task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use super::output::Output;
use super::socket::{Inbound, Outbound};
use crate::audio::decode::base64_decode;
use crate::audio::encode::OutputEncoder;
use crate::audio::input::InputDecoder;
use crate::audio::{check_rate, AudioError, ENGINE_RATE};
use crate::auth::Claims;
use crate::call::{self, CallEvent, CallHandle, CallInput, CallServices, Owner, StartRequest};
use crate::protocol::{
    AudioFormat, ClientMessage, Encoding, EndReason, ErrorCode, ServerMessage, TurnDetectionUpdate,
};

/// Chunks up to this many bytes are decoded on the connection's own thread (about 0.7 s of
/// 16 kHz PCM16, well under a millisecond); larger ones on a blocking thread.
const INLINE_CHUNK_BYTES: usize = 24 * 1024;

/// How long an ending call may take to say it has ended.
const END_WAIT: Duration = Duration::from_secs(5);

/// The call on this connection.
struct Active {
    handle: CallHandle,
    events: mpsc::Receiver<CallEvent>,
    /// `None` only while it is away on a blocking thread.
    input: Option<InputDecoder>,
    output: Output,
}

struct Connection {
    svc: Arc<CallServices>,
    owner: Owner,
    token_agent: Option<String>,
    /// The token's call session (`POST /api/sessions`), if any.
    call_session: Option<String>,
    out: mpsc::Sender<Outbound>,
    /// False once the writer is gone.
    open: bool,
    active: Option<Active>,
}

/// Runs the connection until the client goes, the token expires or the server shuts down.
pub async fn run(
    svc: Arc<CallServices>,
    claims: Claims,
    session_id: String,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
) {
    // Checked: a token's `exp` is the client's number, and `Instant + Duration` panics on
    // overflow. A moment too far to represent is never. A session token (`sid`) is short-lived
    // by design: it must start its call in time, but the call it started runs to its end
    // (`start_call` after its expiry is refused, see `call::session`).
    let expiry = match claims.sid {
        Some(_) => None,
        None => tokio::time::Instant::now().checked_add(claims.remaining()),
    };
    let span = info_span!("session", session_id = %session_id, sub = %claims.sub);
    let mut c = Connection {
        svc,
        owner: Owner {
            sub: claims.sub,
            org: claims.org,
        },
        token_agent: claims.agent,
        call_session: claims.sid,
        out,
        open: true,
        active: None,
    };
    async move {
        while c.open {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    // The call hears the shutdown too and ends itself.
                    c.await_end().await;
                    c.close(1001, "server shutting down").await;
                    break;
                }
                _ = sleep_until_opt(expiry), if expiry.is_some() => {
                    c.send_error(ErrorCode::Unauthorized, "token expired", true).await;
                    c.end_call(EndReason::TokenExpired).await;
                    c.close(1008, "token expired").await;
                    break;
                }
                _ = c.out.closed() => {
                    // The writer gave up: the client stopped taking frames, or the connection
                    // broke. Nothing more can be delivered.
                    c.open = false;
                    break;
                }
                Some(event) = next_event(&mut c.active) => c.on_event(event).await,
                msg = inbound.recv() => match msg {
                    Some(m) => c.on_inbound(m).await,
                    None => break,
                },
            }
        }
        // Closing the call's event channel ends it (`connection_lost`) at once, even if it was
        // waiting to hand this connection an event; waiting to send it an input might not.
        drop(c.active.take());
        debug!("session closed");
    }
    .instrument(span)
    .await
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next event of the active call; pending while there is none.
async fn next_event(active: &mut Option<Active>) -> Option<CallEvent> {
    match active {
        Some(a) => a.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn send(&mut self, msg: ServerMessage) {
        if self.open && self.out.send(Outbound::Message(msg)).await.is_err() {
            self.open = false;
        }
    }

    async fn send_error(&mut self, code: ErrorCode, message: impl Into<String>, fatal: bool) {
        self.svc.metrics.error(code);
        self.send(ServerMessage::error(code, message, fatal)).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .out
            .send(Outbound::Close(code, reason.to_string()))
            .await;
        self.open = false;
    }

    /// Forwards a call event; the call's end frees the connection for another call.
    async fn on_event(&mut self, event: CallEvent) {
        let ended = matches!(event, CallEvent::Ended { .. });
        let moved = matches!(
            event,
            CallEvent::Ended {
                reason: EndReason::Moved,
                ..
            }
        );
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let messages = a.output.translate(event);
        if ended {
            self.active = None;
        }
        for m in messages {
            self.send(m).await;
        }
        if moved {
            // The client reconnects and resumes the call where it lives now.
            self.close(1001, "call moved to another node").await;
        }
    }

    /// Forwards the active call's events until it has ended (or goes quiet too long).
    async fn await_end(&mut self) {
        let deadline = tokio::time::Instant::now() + END_WAIT;
        while self.active.is_some() {
            match tokio::time::timeout_at(deadline, next_event(&mut self.active)).await {
                Ok(Some(event)) => self.on_event(event).await,
                Ok(None) | Err(_) => {
                    self.active = None;
                }
            }
        }
    }

    /// Ends the active call and forwards what it says until it has ended.
    async fn end_call(&mut self, reason: EndReason) {
        self.input(CallInput::End(reason)).await;
        self.await_end().await;
    }

    /// Sends the active call an input, forwarding its events meanwhile (the call may be
    /// waiting for room to send them).
    async fn input(&mut self, input: CallInput) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let handle = a.handle.clone();
        let mut send = std::pin::pin!(handle.send(input));
        loop {
            tokio::select! {
                biased;
                r = &mut send => {
                    if r.is_err() {
                        // The call ended by itself; its `Ended` is on its way.
                        self.await_end().await;
                    }
                    return;
                }
                Some(event) = next_event(&mut self.active) => self.on_event(event).await,
            }
        }
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        let msg = match inbound {
            Inbound::Message(m) => *m,
            Inbound::Audio(bytes) => return self.on_audio_bytes(bytes.to_vec()).await,
            Inbound::Invalid(code, message) => return self.send_error(code, message, false).await,
            Inbound::Fatal(code, message, close) => {
                self.send_error(code, message, true).await;
                self.end_call(EndReason::FatalError).await;
                return self.close(close, code.as_str()).await;
            }
            Inbound::Idle => {
                self.end_call(EndReason::PingTimeout).await;
                return self.close(1001, "ping timeout").await;
            }
        };
        match msg {
            ClientMessage::Ping { id } => self.send(ServerMessage::Pong { id }).await,
            ClientMessage::StartCall {
                call_id,
                agent,
                audio_format,
                output_format,
                variables,
                turn_detection,
                record,
            } => {
                let formats = (audio_format, output_format);
                let settings = (turn_detection, record);
                self.start_call(call_id, agent, formats, variables, settings)
                    .await
            }
            _ if self.active.is_none() => {
                self.send_error(ErrorCode::NoActiveCall, "send start_call first", false)
                    .await
            }
            ClientMessage::UpdateCall { turn_detection } => {
                self.input(CallInput::UpdateDetection(turn_detection)).await
            }
            ClientMessage::Audio { audio, .. } => match base64_decode(&audio) {
                Ok(bytes) => self.on_audio_bytes(bytes).await,
                Err(e) => {
                    self.send_error(ErrorCode::InvalidBase64, e.to_string(), false)
                        .await
                }
            },
            ClientMessage::Commit => self.input(CallInput::Commit).await,
            ClientMessage::Text { text } => self.input(CallInput::Text(text)).await,
            ClientMessage::Dtmf { digits } => self.input(CallInput::Dtmf(digits)).await,
            ClientMessage::Playback { item_id, played_ms } => {
                self.input(CallInput::Playback { item_id, played_ms }).await
            }
            ClientMessage::Interrupt => self.input(CallInput::Interrupt).await,
            ClientMessage::EndCall => self.end_call(EndReason::ClientEnded).await,
        }
    }

    /// Audio in the call's `audio_format`, from a JSON `audio` message or a binary frame.
    async fn on_audio_bytes(&mut self, bytes: Vec<u8>) {
        let Some(a) = self.active.as_mut() else {
            return self
                .send_error(ErrorCode::NoActiveCall, "send start_call first", false)
                .await;
        };
        let Some(mut decoder) = a.input.take() else {
            return;
        };
        // Decoding and resampling cost in proportion to the chunk: large ones off the async
        // threads.
        let decoded = if bytes.len() > INLINE_CHUNK_BYTES {
            tokio::task::spawn_blocking(move || {
                let r = decoder.decode(&bytes);
                (decoder, r)
            })
            .await
            .ok()
        } else {
            let r = decoder.decode(&bytes);
            Some((decoder, r))
        };
        let result = match decoded {
            Some((decoder, r)) => {
                if let Some(a) = self.active.as_mut() {
                    a.input = Some(decoder);
                }
                r
            }
            None => Err(AudioError::Decode("the decoder stopped".into())),
        };
        match result {
            Ok(samples) if samples.is_empty() => {}
            Ok(samples) => self.input(CallInput::Audio(samples)).await,
            Err(e) => {
                self.send_error(ErrorCode::InvalidAudio, e.to_string(), false)
                    .await
            }
        }
    }

    async fn start_call(
        &mut self,
        resume: Option<String>,
        agent: Option<String>,
        (audio_format, output_format): (Option<AudioFormat>, Option<AudioFormat>),
        variables: HashMap<String, String>,
        (turn_detection, record): (Option<TurnDetectionUpdate>, Option<bool>),
    ) {
        if let Some(a) = &self.active {
            let id = a.handle.call_id.clone();
            return self
                .send_error(
                    ErrorCode::CallAlreadyActive,
                    format!("call {id} is in progress; end_call first"),
                    false,
                )
                .await;
        }
        let input_format = audio_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: ENGINE_RATE,
        });
        let checked = output_format
            .map_or(Ok(0), |f| check_rate(f.sample_rate))
            .and_then(|_| InputDecoder::new(input_format));
        let decoder = match checked {
            Ok(d) => d,
            Err(e) => {
                return self
                    .send_error(ErrorCode::UnsupportedFormat, e.to_string(), false)
                    .await
            }
        };
        let request = StartRequest {
            owner: self.owner.clone(),
            agent,
            token_agent: self.token_agent.clone(),
            resume,
            variables,
            detection: turn_detection,
            greet: true,
            push_to_talk: false,
            record,
            session: self.call_session.clone(),
        };
        let started = match call::start(&self.svc, request).await {
            Ok(s) => s,
            Err(e) => match e.limit {
                Some(limit) => {
                    self.svc.metrics.error(e.code);
                    return self
                        .send(ServerMessage::limit_reached(limit, e.message))
                        .await;
                }
                None => return self.send_error(e.code, e.message, false).await,
            },
        };
        let output_format = output_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: started.output_rate,
        });
        if let Err(e) = OutputEncoder::new(started.output_rate, output_format) {
            let _ = started
                .handle
                .send(CallInput::End(EndReason::ClientEnded))
                .await;
            return self
                .send_error(ErrorCode::UnsupportedFormat, e.to_string(), false)
                .await;
        }
        self.active = Some(Active {
            handle: started.handle,
            events: started.events,
            input: Some(decoder),
            output: Output::new(output_format),
        });
        self.send(ServerMessage::CallStarted {
            call_id: started.call_id,
            agent: started.agent,
            audio_format: input_format,
            output_format,
            resumed: started.resumed,
            history_len: started.history_len,
            turn_detection: started.detection,
        })
        .await;
    }
}
