//! The per-connection actor. It owns the call state (formats, input buffer, speech detector,
//! running turn) and sits between the socket's reader and writer tasks: client messages come in
//! on one channel, turn events on another, and server messages go out on a third. It never awaits
//! an engine itself; turns run in their own tasks and are cancelled through their token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, Instrument};

use super::store::{LiveCall, Owner, StoreError};
use super::turn::{run_turn, TurnEvent, TurnInput, TurnRequest, TurnSink};
use crate::agents::Agent;
use crate::audio::decode::{base64_decode, decode_wav, mulaw_to_f32, pcm16_to_f32};
use crate::audio::encode::OutputEncoder;
use crate::audio::resample::StreamResampler;
use crate::audio::vad::{EnergyVad, VadEvent, VadParams};
use crate::audio::{check_rate, duration_ms, AudioError, ENGINE_RATE};
use crate::auth::Claims;
use crate::engines::llm::Role;
use crate::engines::EngineError;
use crate::protocol::{
    AudioFormat, ClientMessage, DoneReason, Encoding, EndReason, ErrorCode, ServerMessage,
};
use crate::server::AppState;

/// From the reader task.
pub enum Inbound {
    Message(ClientMessage),
    /// A frame that could not be accepted; the call goes on.
    Invalid(ErrorCode, String),
    /// The socket cannot go on: send the error, then close with this code.
    Fatal(ErrorCode, String, u16),
}

/// To the writer task.
pub enum Outbound {
    Message(ServerMessage),
    Close(u16, String),
}

/// Audio kept before detected speech, so its first syllable is not cut.
const PREFIX_MS: u64 = 300;
/// Audio kept after detected end of speech.
const SUFFIX_MS: u64 = 250;

fn samples_for_ms(ms: u64) -> usize {
    (ms * u64::from(ENGINE_RATE) / 1000) as usize
}

/// Turns client chunks of the call's input format into 16 kHz samples.
struct InputDecoder {
    format: AudioFormat,
    carry: Option<u8>,
    resampler: StreamResampler,
    /// For WAV chunks, whose rate comes with each chunk.
    wav: Option<(u32, StreamResampler)>,
}

impl InputDecoder {
    fn new(format: AudioFormat) -> Result<Self, AudioError> {
        Ok(Self {
            format,
            carry: None,
            resampler: StreamResampler::new(format.sample_rate, ENGINE_RATE)?,
            wav: None,
        })
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
        match self.format.encoding {
            Encoding::Pcm16 => Ok(self.resampler.push(&pcm16_to_f32(bytes, &mut self.carry))),
            Encoding::Mulaw => Ok(self.resampler.push(&mulaw_to_f32(bytes))),
            Encoding::Wav => {
                let d = decode_wav(bytes)?;
                if self.wav.as_ref().map(|(r, _)| *r) != Some(d.sample_rate) {
                    self.wav = Some((
                        d.sample_rate,
                        StreamResampler::new(d.sample_rate, ENGINE_RATE)?,
                    ));
                }
                Ok(self
                    .wav
                    .as_mut()
                    .map(|(_, r)| r.push(&d.samples))
                    .unwrap_or_default())
            }
        }
    }
}

struct RunningTurn {
    id: u64,
    cancel: CancellationToken,
    encoder: Option<OutputEncoder>,
    seq: u64,
    /// Reply sentences whose audio has gone out: what the caller has (probably) heard.
    spoken: String,
}

struct ActiveCall {
    live: LiveCall,
    /// Child of the connection's token; parent of each turn's.
    cancel: CancellationToken,
    agent: Arc<Agent>,
    system: String,
    output_format: AudioFormat,
    input: InputDecoder,
    vad: EnergyVad,
    /// 16 kHz audio of the caller's current turn; `buffer[0]` is at `buffer_start` samples.
    buffer: Vec<f32>,
    buffer_start: u64,
    /// Samples received on this call so far.
    received: u64,
    deadline: tokio::time::Instant,
    next_turn: u64,
    turn: Option<RunningTurn>,
}

pub struct Session {
    state: Arc<AppState>,
    owner: Owner,
    token_agent: Option<String>,
    out: mpsc::Sender<Outbound>,
    turn_tx: mpsc::Sender<(u64, TurnEvent)>,
    call: Option<ActiveCall>,
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
    let expiry = tokio::time::Instant::now() + claims.remaining();
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
        call: None,
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
                _ = tokio::time::sleep_until(expiry) => {
                    s.send_error(ErrorCode::Unauthorized, "token expired", true).await;
                    s.close(1008, "token expired").await;
                    break;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    s.end_call(EndReason::MaxDuration).await;
                }
                msg = inbound.recv() => match msg {
                    Some(m) => s.on_inbound(m).await,
                    None => break,
                },
                Some((id, event)) = turn_rx.recv() => s.on_turn_event(id, event).await,
            }
        }
        s.drop_call();
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

impl Session {
    async fn send(&mut self, msg: ServerMessage) {
        if self.open && self.out.send(Outbound::Message(msg)).await.is_err() {
            self.open = false;
        }
    }

    async fn send_error(&mut self, code: ErrorCode, message: impl Into<String>, fatal: bool) {
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
                self.end_call(EndReason::ClientEnded).await;
                return self.close(close, code.as_str()).await;
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
            } => {
                self.start_call(call_id, agent, audio_format, output_format, variables)
                    .await
            }
            _ if self.call.is_none() => {
                self.send_error(ErrorCode::NoActiveCall, "send start_call first", false)
                    .await
            }
            ClientMessage::Audio { audio, .. } => self.on_audio(&audio).await,
            ClientMessage::Commit => self.commit().await,
            ClientMessage::Text { text } => self.on_text(text).await,
            ClientMessage::EndCall => self.end_call(EndReason::ClientEnded).await,
        }
    }

    async fn start_call(
        &mut self,
        resume: Option<String>,
        agent: Option<String>,
        audio_format: Option<AudioFormat>,
        output_format: Option<AudioFormat>,
        variables: std::collections::HashMap<String, String>,
    ) {
        if let Some(c) = &self.call {
            let id = c.live.record.id.clone();
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
        let input_format = audio_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: ENGINE_RATE,
        });
        let output_format = output_format.unwrap_or(AudioFormat {
            encoding: Encoding::Pcm16,
            sample_rate: self.state.engines.tts.sample_rate(),
        });
        let checked = check_rate(input_format.sample_rate)
            .and_then(|_| check_rate(output_format.sample_rate))
            .and_then(|_| InputDecoder::new(input_format))
            .and_then(|input| {
                OutputEncoder::new(self.state.engines.tts.sample_rate(), output_format)
                    .map(|_| input)
            });
        let input = match checked {
            Ok(i) => i,
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
        let params = VadParams {
            threshold_db: self.state.config.vad_threshold_db,
            min_speech: Duration::from_millis(100),
            silence: self.state.config.vad_silence,
        };
        let max_call = Duration::from_secs(self.state.config.limits.max_call_secs);
        let greeting = if resume.is_some() {
            None
        } else {
            agent.render_greeting(&variables)
        };
        let call_cancel = self.cancel.child_token();
        let warm = crate::engines::llm::ChatRequest {
            session_id: call_id.clone(),
            system: agent.render_prompt(&variables),
            messages: live.record.history().messages(),
            max_tokens: agent.max_tokens,
            temperature: agent.temperature,
        };
        tokio::spawn(self.state.engines.llm.warm_up(warm, call_cancel.clone()));
        self.call = Some(ActiveCall {
            cancel: call_cancel,
            live,
            system: agent.render_prompt(&variables),
            agent: agent.clone(),
            output_format,
            input,
            vad: EnergyVad::new(params),
            buffer: Vec::new(),
            buffer_start: 0,
            received: 0,
            deadline: tokio::time::Instant::now() + max_call,
            next_turn: 1,
            turn: None,
        });
        self.send(ServerMessage::CallStarted {
            call_id,
            agent: agent.name.clone(),
            audio_format: input_format,
            output_format,
            resumed: resume.is_some(),
            history_len,
        })
        .await;
        if let Some(text) = greeting {
            self.start_turn_with_id(TurnInput::Say(text), Instant::now(), Some(0))
                .await;
        }
    }

    async fn on_audio(&mut self, b64: &str) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let bytes = match base64_decode(b64) {
            Ok(b) => b,
            Err(e) => {
                return self
                    .send_error(ErrorCode::InvalidBase64, e.to_string(), false)
                    .await
            }
        };
        let samples = match call.input.decode(&bytes) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .send_error(ErrorCode::InvalidAudio, e.to_string(), false)
                    .await
            }
        };
        call.received += samples.len() as u64;
        call.buffer.extend_from_slice(&samples);
        let events = call.vad.push(&samples);
        for event in events {
            let Some(call) = self.call.as_mut() else {
                return;
            };
            match event {
                VadEvent::SpeechStarted { at_ms } => {
                    let keep_from = samples_for_ms(at_ms.saturating_sub(PREFIX_MS)) as u64;
                    let drop = keep_from
                        .saturating_sub(call.buffer_start)
                        .min(call.buffer.len() as u64) as usize;
                    call.buffer.drain(..drop);
                    call.buffer_start += drop as u64;
                }
                VadEvent::SpeechStopped { at_ms } => {
                    let end = samples_for_ms(at_ms + SUFFIX_MS) as u64;
                    let take = end
                        .saturating_sub(call.buffer_start)
                        .min(call.buffer.len() as u64) as usize;
                    let audio: Vec<f32> = call.buffer.drain(..take).collect();
                    call.buffer_start += take as u64;
                    // The anchor is the end of speech, not the moment it was detected.
                    let detect_delay = duration_ms(
                        (call.received - end.min(call.received)) as usize,
                        ENGINE_RATE,
                    );
                    let anchor = Instant::now()
                        .checked_sub(Duration::from_millis(detect_delay))
                        .unwrap_or_else(Instant::now);
                    self.start_turn(TurnInput::Audio(audio.into()), anchor)
                        .await;
                }
            }
        }
        self.enforce_turn_limit().await;
    }

    /// Bounds the input buffer: a turn longer than the limit is ended there; silence that never
    /// became speech is dropped from the front.
    async fn enforce_turn_limit(&mut self) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let max = samples_for_ms(self.state.config.limits.max_turn_audio_ms);
        if call.buffer.len() <= max {
            return;
        }
        if call.vad.in_speech() {
            let limit_ms = self.state.config.limits.max_turn_audio_ms;
            self.send_error(
                ErrorCode::TurnAudioLimit,
                format!("turn audio reached the {limit_ms} ms limit; the turn was ended there"),
                false,
            )
            .await;
            self.commit().await;
        } else {
            let drop = call.buffer.len() - samples_for_ms(PREFIX_MS);
            call.buffer.drain(..drop);
            call.buffer_start += drop as u64;
        }
    }

    async fn commit(&mut self) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.buffer.is_empty() {
            return self
                .send_error(
                    ErrorCode::EmptyTurn,
                    "commit with no audio since the last turn",
                    false,
                )
                .await;
        }
        let audio: Vec<f32> = std::mem::take(&mut call.buffer);
        call.buffer_start += audio.len() as u64;
        call.vad.reset();
        self.start_turn(TurnInput::Audio(audio.into()), Instant::now())
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
        self.start_turn(TurnInput::Text(text), Instant::now()).await;
    }

    /// Cancels the running turn, if any, keeping what the caller heard in history.
    async fn interrupt_turn(&mut self) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(turn) = call.turn.take() else { return };
        turn.cancel.cancel();
        call.live
            .record
            .history()
            .push(Role::Assistant, turn.spoken.trim());
        self.send(ServerMessage::ResponseDone {
            turn_id: turn.id,
            reason: DoneReason::Interrupted,
        })
        .await;
    }

    async fn start_turn(&mut self, input: TurnInput, anchor: Instant) {
        self.start_turn_with_id(input, anchor, None).await
    }

    /// Starts a turn; `id` is given for the greeting (turn 0), otherwise the next number.
    async fn start_turn_with_id(&mut self, input: TurnInput, anchor: Instant, id: Option<u64>) {
        self.interrupt_turn().await;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let id = id.unwrap_or_else(|| {
            call.next_turn += 1;
            call.next_turn - 1
        });
        let cancel = call.cancel.child_token();
        let encoder =
            OutputEncoder::new(self.state.engines.tts.sample_rate(), call.output_format).ok();
        call.turn = Some(RunningTurn {
            id,
            cancel: cancel.clone(),
            encoder,
            seq: 0,
            spoken: String::new(),
        });
        let request = TurnRequest {
            engines: self.state.engines.clone(),
            agent: call.agent.clone(),
            system: call.system.clone(),
            session_id: call.live.record.id.clone(),
            history: call.live.record.history().messages(),
            input,
            anchor,
        };
        let sink = TurnSink {
            turn_id: id,
            tx: self.turn_tx.clone(),
        };
        let span = info_span!("turn", call_id = %call.live.record.id, turn_id = id);
        tokio::spawn(run_turn(request, cancel, sink).instrument(span));
    }

    async fn on_turn_event(&mut self, id: u64, event: TurnEvent) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(turn) = call.turn.as_mut().filter(|t| t.id == id) else {
            return;
        };
        match event {
            TurnEvent::Transcript(text) => {
                call.live.record.history().push(Role::User, text.clone());
                self.send(ServerMessage::Transcript {
                    turn_id: id,
                    text,
                    is_final: true,
                })
                .await;
            }
            TurnEvent::NoSpeech => {
                call.turn = None;
                self.send(ServerMessage::Transcript {
                    turn_id: id,
                    text: String::new(),
                    is_final: true,
                })
                .await;
                self.send(ServerMessage::ResponseDone {
                    turn_id: id,
                    reason: DoneReason::NoSpeech,
                })
                .await;
            }
            TurnEvent::Delta(delta) => {
                self.send(ServerMessage::Response {
                    turn_id: id,
                    delta: Some(delta),
                    text: None,
                    is_final: false,
                })
                .await;
            }
            TurnEvent::Audio { samples, sentence } => {
                if let Some(s) = sentence {
                    turn.spoken.push_str(&s);
                    turn.spoken.push(' ');
                }
                let bytes = turn
                    .encoder
                    .as_mut()
                    .map(|e| e.encode(&samples))
                    .unwrap_or_default();
                let msg = audio_message(turn, call.output_format, &bytes);
                if let Some(m) = msg {
                    self.send(m).await;
                }
            }
            TurnEvent::Done { reply, timings } => {
                let tail = turn
                    .encoder
                    .as_mut()
                    .map(|e| e.finish())
                    .unwrap_or_default();
                let tail_msg = audio_message(turn, call.output_format, &tail);
                call.turn = None;
                call.live
                    .record
                    .history()
                    .push(Role::Assistant, reply.clone());
                call.live
                    .record
                    .turns
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.state.metrics.turn(&timings);
                if let Some(m) = tail_msg {
                    self.send(m).await;
                }
                self.send(ServerMessage::Response {
                    turn_id: id,
                    delta: None,
                    text: Some(reply),
                    is_final: true,
                })
                .await;
                self.send(ServerMessage::ResponseDone {
                    turn_id: id,
                    reason: DoneReason::Completed,
                })
                .await;
                self.send(ServerMessage::Metrics {
                    turn_id: id,
                    timings,
                })
                .await;
            }
            TurnEvent::Failed { error } => {
                call.turn = None;
                let code = match error {
                    EngineError::Busy { .. } => ErrorCode::EngineBusy,
                    _ => ErrorCode::EngineError,
                };
                tracing::warn!(turn_id = id, %error, "turn failed");
                self.send_error(code, error.to_string(), false).await;
                self.send(ServerMessage::ResponseDone {
                    turn_id: id,
                    reason: DoneReason::Error,
                })
                .await;
            }
        }
    }

    async fn end_call(&mut self, reason: EndReason) {
        if self.call.is_none() {
            return;
        }
        self.interrupt_turn().await;
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
        // Stops the running turn and the warm-up with it.
        call.cancel.cancel();
        self.state.engines.llm.release(&call.live.record.id);
        self.state.metrics.live_calls.dec();
    }

    fn drop_call(&mut self) {
        if let Some(call) = self.call.take() {
            self.finish_call(call);
        }
    }
}

fn audio_message(
    turn: &mut RunningTurn,
    format: AudioFormat,
    bytes: &[u8],
) -> Option<ServerMessage> {
    if bytes.is_empty() {
        return None;
    }
    let seq = turn.seq;
    turn.seq += 1;
    Some(ServerMessage::AudioResponse {
        turn_id: turn.id,
        audio: crate::audio::decode::base64_encode(bytes),
        encoding: format.encoding,
        sample_rate: format.sample_rate,
        seq,
    })
}
