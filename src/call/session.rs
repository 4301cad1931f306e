//! The per-connection actor. It owns the call state and sits between the socket's reader and
//! writer tasks: client messages come in on one channel, turn events and partial transcripts on
//! others, and server messages go out on a fourth. It never awaits an engine itself; turns run in
//! their own tasks and are cancelled through their token. What the caller says is handled in
//! `caller.rs`, the agent's replies in `reply.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use super::caller::{Caller, Partial};
use super::listen::{energy_scorer, Listener};
use super::reply::{Pending, Reply};
use super::store::{LiveCall, Owner, StoreError};
use super::turn::{TurnEvent, TurnInput};
use crate::agents::Agent;
use crate::audio::encode::OutputEncoder;
use crate::audio::vad::SpeechScorer;
use crate::audio::{check_rate, ENGINE_RATE};
use crate::auth::Claims;
use crate::engines::Engines;
use crate::protocol::{
    AudioFormat, ClientMessage, DetectionMode, Encoding, EndReason, ErrorCode, ServerMessage,
    TurnDetection, TurnDetectionUpdate,
};
use crate::server::AppState;

/// From the reader task.
pub enum Inbound {
    Message(ClientMessage),
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
    Close(u16, String),
}

pub(super) struct ActiveCall {
    pub live: LiveCall,
    /// Child of the connection's token; parent of each turn's.
    pub cancel: CancellationToken,
    pub agent: Arc<Agent>,
    /// The agent's engines (its own chains, else the server's).
    pub engines: Engines,
    pub system: String,
    pub output_format: AudioFormat,
    pub caller: Caller,
    pub deadline: tokio::time::Instant,
    /// A reply being prepared before the caller's turn is known to be over.
    pub pending: Option<Pending>,
    /// The current reply: running, playing, or the last one (for playback reports).
    pub reply: Option<Reply>,
    /// The last interrupted reply once another has replaced it, for late playback reports.
    pub cut: Option<Reply>,
}

impl ActiveCall {
    pub fn id(&self) -> &str {
        &self.live.record.id
    }
}

pub struct Session {
    pub(super) state: Arc<AppState>,
    owner: Owner,
    token_agent: Option<String>,
    out: mpsc::Sender<Outbound>,
    pub(super) turn_tx: mpsc::Sender<(u64, TurnEvent)>,
    pub(super) partial_tx: mpsc::Sender<Partial>,
    pub(super) call: Option<ActiveCall>,
    /// Key of the next turn task (internal; distinct from the public turn ids).
    pub(super) next_run: u64,
    cancel: CancellationToken,
    /// False once the writer is gone.
    open: bool,
}

/// Runs the actor until the client goes, the token expires or the server shuts down.
pub async fn run(
    state: Arc<AppState>,
    claims: Claims,
    session_id: String,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
) {
    let (turn_tx, mut turn_rx) = mpsc::channel(64);
    let (partial_tx, mut partial_rx) = mpsc::channel(4);
    // Checked: a token's `exp` is the client's number, and `Instant + Duration` panics on
    // overflow. A moment too far to represent is never.
    let expiry = tokio::time::Instant::now().checked_add(claims.remaining());
    let span = info_span!("session", session_id = %session_id, sub = %claims.sub);
    let mut s = Session {
        state,
        owner: Owner {
            sub: claims.sub,
            org: claims.org,
        },
        token_agent: claims.agent,
        out,
        turn_tx,
        partial_tx,
        call: None,
        next_run: 1,
        cancel,
        open: true,
    };
    async move {
        while s.open {
            let deadline = s.call.as_ref().map(|c| c.deadline);
            tokio::select! {
                biased;
                _ = s.cancel.cancelled() => {
                    s.end_call(EndReason::ServerShutdown).await;
                    s.close(1001, "server shutting down").await;
                    break;
                }
                _ = sleep_until_opt(expiry), if expiry.is_some() => {
                    s.send_error(ErrorCode::Unauthorized, "token expired", true).await;
                    s.close(1008, "token expired").await;
                    break;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    s.end_call(EndReason::MaxDuration).await;
                }
                _ = s.out.closed() => {
                    // The writer gave up: the client stopped taking frames, or the connection
                    // broke. Nothing more can be delivered.
                    s.open = false;
                    s.end_call(EndReason::ConnectionLost).await;
                    break;
                }
                msg = inbound.recv() => match msg {
                    Some(m) => s.on_inbound(m).await,
                    None => break,
                },
                Some((run, event)) = turn_rx.recv() => s.on_turn_event(run, event).await,
                Some(partial) = partial_rx.recv() => s.on_partial(partial).await,
            }
        }
        if s.call.is_some() && s.out.is_closed() {
            // The writer gave up while the actor was sending.
            s.end_call(EndReason::ConnectionLost).await;
        }
        s.drop_call();
        debug!("session closed");
    }
    .instrument(span)
    .await
}

/// A deadline that never comes (about thirty years away).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Session {
    pub(super) async fn send(&mut self, msg: ServerMessage) {
        if self.open && self.out.send(Outbound::Message(msg)).await.is_err() {
            self.open = false;
        }
    }

    pub(super) async fn send_error(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        fatal: bool,
    ) {
        self.state.metrics.error(code);
        self.send(ServerMessage::error(code, message, fatal)).await;
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self
            .out
            .send(Outbound::Close(code, reason.to_string()))
            .await;
        self.open = false;
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        let msg = match inbound {
            Inbound::Message(m) => m,
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
            } => {
                let formats = (audio_format, output_format);
                self.start_call(call_id, agent, formats, variables, turn_detection)
                    .await
            }
            _ if self.call.is_none() => {
                self.send_error(ErrorCode::NoActiveCall, "send start_call first", false)
                    .await
            }
            ClientMessage::UpdateCall { turn_detection } => self.update_call(turn_detection).await,
            ClientMessage::Audio { audio, .. } => self.on_audio(&audio).await,
            ClientMessage::Commit => self.commit().await,
            ClientMessage::Text { text } => self.on_text(text).await,
            ClientMessage::Playback { item_id, played_ms } => self.on_playback(item_id, played_ms),
            ClientMessage::Interrupt => self.interrupt_reply(true).await,
            ClientMessage::EndCall => self.end_call(EndReason::ClientEnded).await,
        }
    }

    /// The call's turn detection after `update`, checked against what this server can do.
    fn checked_detection(
        &self,
        current: &TurnDetection,
        update: Option<&TurnDetectionUpdate>,
    ) -> Result<TurnDetection, String> {
        let Some(update) = update else {
            return Ok(*current);
        };
        let next = current.apply(update)?;
        if next.mode == DetectionMode::Silero && self.state.engines.vad.is_none() {
            return Err(
                "turn_detection.mode `silero` is not available on this server \
                        (VOXWIRE_VAD=energy); use `energy` or `manual`"
                    .into(),
            );
        }
        Ok(next)
    }

    /// The speech scorer for a mode; `None` in manual mode.
    fn scorer(&self, settings: &TurnDetection) -> Option<Box<dyn SpeechScorer>> {
        match settings.mode {
            DetectionMode::Manual => None,
            DetectionMode::Silero => match &self.state.engines.vad {
                Some(model) => Some(Box::new(model.stream())),
                None => Some(energy_scorer(settings)),
            },
            DetectionMode::Energy => Some(energy_scorer(settings)),
        }
    }

    /// The server's default turn detection.
    pub(super) fn default_detection(&self) -> TurnDetection {
        let mut d = self.state.config.turn.detection;
        if self.state.engines.vad.is_none() && d.mode == DetectionMode::Silero {
            d.mode = DetectionMode::Energy;
        }
        d
    }

    async fn start_call(
        &mut self,
        resume: Option<String>,
        agent: Option<String>,
        (audio_format, output_format): (Option<AudioFormat>, Option<AudioFormat>),
        variables: HashMap<String, String>,
        turn_detection: Option<TurnDetectionUpdate>,
    ) {
        if let Some(c) = &self.call {
            let id = c.id().to_string();
            return self
                .send_error(
                    ErrorCode::CallAlreadyActive,
                    format!("call {id} is in progress; end_call first"),
                    false,
                )
                .await;
        }
        let agent_name = agent.or_else(|| self.token_agent.clone());
        let Some(agent) = self.state.agents.get(agent_name.as_deref()) else {
            let known = self.state.agents.names().join(", ");
            let name: String = agent_name.unwrap_or_default().chars().take(64).collect();
            return self
                .send_error(
                    ErrorCode::UnknownAgent,
                    format!("unknown agent `{name}` (known: {known})"),
                    false,
                )
                .await;
        };
        let detection =
            match self.checked_detection(&self.default_detection(), turn_detection.as_ref()) {
                Ok(d) => d,
                Err(e) => return self.send_error(ErrorCode::InvalidSetting, e, false).await,
            };
        let input_format = audio_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: ENGINE_RATE,
        });
        let engines = self.state.engines.for_agent(&agent.name);
        let output_format = output_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: engines.tts.sample_rate(),
        });
        let turn = &self.state.config.turn;
        let checked = check_rate(input_format.sample_rate)
            .and_then(|_| check_rate(output_format.sample_rate))
            .and_then(|_| OutputEncoder::new(engines.tts.sample_rate(), output_format))
            .and_then(|_| {
                Listener::new(
                    input_format,
                    detection,
                    self.scorer(&detection),
                    turn.speculate_ms,
                    self.state.config.limits.max_turn_audio_ms,
                )
            });
        let listener = match checked {
            Ok(l) => l,
            Err(e) => {
                return self
                    .send_error(ErrorCode::UnsupportedFormat, e.to_string(), false)
                    .await
            }
        };
        let live = match self
            .state
            .calls
            .start(&self.owner, &agent.name, resume.as_deref())
        {
            Ok(l) => l,
            Err(e) => {
                let code = match e {
                    StoreError::TooMany(_) => ErrorCode::TooManyCalls,
                    StoreError::NotFound(_) => ErrorCode::CallNotFound,
                    StoreError::Live(_) => ErrorCode::CallAlreadyActive,
                };
                return self.send_error(code, e.to_string(), false).await;
            }
        };
        let call_id = live.record.id.clone();
        let history_len = live.record.history().len();
        info!(call_id = %call_id, agent = %agent.name, resumed = resume.is_some(), "call started");
        self.state.metrics.live_calls.inc();
        let max_call = Duration::from_secs(self.state.config.limits.max_call_secs);
        let greeting = if resume.is_some() {
            None
        } else {
            agent.render_greeting(&variables)
        };
        let call_cancel = self.cancel.child_token();
        // A resumed call keeps the prompt its variables gave it, unless new ones are sent.
        let system = match live.record.system_prompt() {
            Some(p) if resume.is_some() && variables.is_empty() => p,
            _ => agent.render_prompt(&variables),
        };
        live.record.set_system_prompt(&system);
        let warm = crate::engines::llm::ChatRequest {
            session_id: call_id.clone(),
            system: system.clone(),
            messages: live.record.history().messages(),
            max_tokens: agent.max_tokens,
            temperature: agent.temperature,
        };
        tokio::spawn(engines.llm.warm_up(warm, call_cancel.clone()));
        self.call = Some(ActiveCall {
            cancel: call_cancel,
            live,
            system,
            agent: agent.clone(),
            engines,
            output_format,
            caller: Caller::new(listener, input_format),
            deadline: tokio::time::Instant::now()
                .checked_add(max_call)
                .unwrap_or_else(far_future),
            pending: None,
            reply: None,
            cut: None,
        });
        self.send(ServerMessage::CallStarted {
            call_id,
            agent: agent.name.clone(),
            audio_format: input_format,
            output_format,
            resumed: resume.is_some(),
            history_len,
            turn_detection: detection,
        })
        .await;
        if let Some(text) = greeting {
            self.start_reply(TurnInput::Say(text), Instant::now(), None, Some(0))
                .await;
        }
    }

    async fn update_call(&mut self, update: TurnDetectionUpdate) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        let current = *call.caller.settings();
        let next = match self.checked_detection(&current, Some(&update)) {
            Ok(d) => d,
            Err(e) => return self.send_error(ErrorCode::InvalidSetting, e, false).await,
        };
        let scorer = (next.mode != current.mode).then(|| self.scorer(&next));
        if let Some(call) = self.call.as_mut() {
            call.caller.update(next, scorer);
        }
        self.send(ServerMessage::CallUpdated {
            turn_detection: next,
        })
        .await;
    }

    async fn on_text(&mut self, text: String) {
        let max = self.state.config.limits.max_text_chars;
        let text = text.trim().to_string();
        if text.is_empty() {
            return self
                .send_error(ErrorCode::EmptyTurn, "text is empty", false)
                .await;
        }
        if text.chars().count() > max {
            return self
                .send_error(
                    ErrorCode::TextTooLong,
                    format!("text is longer than {max} characters"),
                    false,
                )
                .await;
        }
        let item = self.call.as_ref().map(|c| c.live.record.new_item_id());
        self.start_reply(TurnInput::Text(text), Instant::now(), item, None)
            .await;
    }

    pub(super) async fn end_call(&mut self, reason: EndReason) {
        if self.call.is_none() {
            return;
        }
        self.interrupt_reply(false).await;
        if let Some(call) = self.call.take() {
            let record = call.live.record.clone();
            let turns = record.turns.load(std::sync::atomic::Ordering::SeqCst);
            self.finish_call(call);
            info!(call_id = %record.id, ?reason, turns, "call ended");
            self.send(ServerMessage::CallEnded {
                call_id: record.id.clone(),
                reason,
                turns,
            })
            .await;
        }
    }

    fn finish_call(&self, call: ActiveCall) {
        // Stops the running turn, any speculative one and the warm-up with them.
        call.cancel.cancel();
        call.engines.llm.release(call.id());
        self.state.metrics.live_calls.dec();
    }

    fn drop_call(&mut self) {
        if let Some(call) = self.call.take() {
            self.finish_call(call);
        }
    }
}
