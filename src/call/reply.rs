//! The agent's replies. Each reply is a turn task whose events come back here, where they get
//! the turn and item ids, are emitted as call events, and update history.
//! A speculative reply (started while the caller pauses) keeps its events until the caller's
//! turn is known to be over, then plays them at once; if the caller goes on, it is dropped
//! unseen. Interrupting a reply cuts its history entry to what the caller heard.
//!
//! Tool calls a reply makes go into history as they happen (the call, then its result); one
//! still running when the reply is interrupted is cancelled and gets a `cancelled` result, so
//! the conversation stays whole. What a built-in tool asks (`end_call`, `transfer`) happens
//! only once the reply is complete; an interrupted reply's request is dropped with it.

use std::sync::atomic::Ordering;
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::actor::Call;
use super::event::{CallEvent, ToolEvent};
use super::playback::PlaybackTrack;
use super::turn::{ms_since, run_turn, TurnEvent, TurnInput, TurnRequest, TurnSink};
use crate::engines::llm::{ChatMessage, Role, ToolCall};
use crate::engines::EngineError;
use crate::protocol::{DoneReason, EndOfTurn, ErrorCode};
use crate::store::{
    LLM_COMPLETION_CHARS, LLM_COMPLETION_TOKENS, LLM_PROMPT_TOKENS, STT_AUDIO_MS, TTS_CHARS,
};
use crate::tools::{Effect, ToolOutcome};

/// Events a speculative reply may hold back before it is dropped as runaway.
const MAX_HELD_EVENTS: usize = 4096;

/// A reply prepared while the caller pauses; nothing of it has been sent.
pub struct Pending {
    run: u64,
    cancel: CancellationToken,
    held: Vec<TurnEvent>,
    /// End of the caller's speech.
    anchor: Instant,
    /// Set once the reply is adopted: its tools may run from then on.
    live: tokio::sync::watch::Sender<bool>,
}

/// What the agent says: the reply being prepared ahead, the current one, and the last one cut
/// short (for late playback reports).
#[derive(Default)]
pub struct Speaker {
    /// A reply being prepared before the caller's turn is known to be over.
    pending: Option<Pending>,
    /// The current reply: running, playing, or the last one (for playback reports).
    reply: Option<Reply>,
    /// The last interrupted reply once another has replaced it, for late playback reports.
    cut: Option<Reply>,
    /// Key of the next turn task (internal; distinct from the public turn ids).
    next_run: u64,
}

pub struct Reply {
    /// Key of the turn task's events.
    run: u64,
    pub turn_id: u64,
    pub item_id: u64,
    /// The caller's item this replies to (none for the greeting).
    user_item: Option<u64>,
    cancel: CancellationToken,
    /// The turn task is still producing.
    running: bool,
    interrupted: bool,
    track: PlaybackTrack,
    anchor: Instant,
    pub end_of_speech_ms: Option<f64>,
    /// How the caller's turn was found to be over (semantic mode).
    pub end_of_turn: Option<EndOfTurn>,
    first_audio_ms: Option<f64>,
    /// The live voice of an operator rather than a spoken text.
    pub live_voice: bool,
    /// Tool calls made and not answered yet.
    open_tools: Vec<ToolCall>,
    /// What a built-in tool asked to happen once the reply is complete.
    after: Option<Effect>,
}

impl Speaker {
    /// Whether the current reply is an operator's live voice (coming in or still playing).
    pub fn live_voice(&self) -> bool {
        self.reply
            .as_ref()
            .is_some_and(|r| r.live_voice && !r.interrupted)
    }
}

impl Reply {
    /// Generating, or its audio still playing, and not interrupted.
    pub fn speaking(&self, now: Instant) -> bool {
        !self.interrupted && (self.running || self.track.playing(now))
    }
}

impl Call {
    /// Spawns a turn task for the call; returns its key and token. Without `answer` the turn
    /// only transcribes the caller (the call is taken over).
    pub(super) fn spawn_turn(
        &mut self,
        input: TurnInput,
        anchor: Instant,
        answer: bool,
    ) -> (u64, CancellationToken) {
        // Live from the start: nothing waits for it.
        let (_, live) = tokio::sync::watch::channel(true);
        self.spawn_gated_turn(input, anchor, answer, live)
    }

    /// [`Self::spawn_turn`], for a reply whose tools wait until `live` says so.
    fn spawn_gated_turn(
        &mut self,
        input: TurnInput,
        anchor: Instant,
        answer: bool,
        live: tokio::sync::watch::Receiver<bool>,
    ) -> (u64, CancellationToken) {
        if let TurnInput::Audio(audio) | TurnInput::Live { audio, .. } = &input {
            let ms = audio.len() as i64 * 1000 / i64::from(crate::audio::ENGINE_RATE);
            let stt = self.engines.stt.usage_label();
            self.meter(STT_AUDIO_MS, &stt, ms);
        }
        let run = self.speaker.next_run;
        self.speaker.next_run += 1;
        let cancel = self.cancel.child_token();
        let request = TurnRequest {
            engines: self.engines.clone(),
            agent: self.agent.clone(),
            system: self.system.clone(),
            session_id: self.id().to_string(),
            history: self.record.history().messages(),
            input,
            anchor,
            answer,
            live,
            flow: self.flow.clone(),
        };
        let sink = TurnSink {
            turn_id: run,
            tx: self.turn_tx.clone(),
        };
        let span = info_span!("turn", call_id = %self.id(), run);
        tokio::spawn(run_turn(request, cancel.clone(), sink).instrument(span));
        (run, cancel)
    }

    pub(super) fn agent_speaking(&self) -> bool {
        let now = Instant::now();
        self.speaker.reply.as_ref().is_some_and(|r| r.speaking(now))
    }

    fn new_reply(
        &mut self,
        run: u64,
        cancel: CancellationToken,
        anchor: Instant,
        user_item: Option<u64>,
        turn_id: Option<u64>,
    ) {
        let record = &self.record;
        let turn_id = turn_id.unwrap_or_else(|| record.new_turn_id());
        let item_id = record.new_item_id();
        let s = &mut self.speaker;
        if let Some(old) = s.reply.take().filter(|r| r.interrupted) {
            s.cut = Some(old);
        }
        s.reply = Some(Reply {
            run,
            turn_id,
            item_id,
            user_item,
            cancel,
            running: true,
            interrupted: false,
            track: PlaybackTrack::default(),
            anchor,
            end_of_speech_ms: None,
            end_of_turn: None,
            first_audio_ms: None,
            live_voice: false,
            open_tools: Vec::new(),
            after: None,
        });
    }

    /// The current reply, to note when the caller's speech ended.
    pub(super) fn reply_mut(&mut self) -> Option<&mut Reply> {
        self.speaker.reply.as_mut()
    }

    /// Starts a reply now, interrupting the current one. `turn_id` is given for the greeting
    /// (turn 0), otherwise the next number. While the call is taken over, a caller's turn is
    /// only transcribed.
    pub(super) async fn start_reply(
        &mut self,
        input: TurnInput,
        anchor: Instant,
        user_item: Option<u64>,
        turn_id: Option<u64>,
    ) {
        if let (Some(item), true) = (user_item, self.takeover.active()) {
            self.cancel_pending();
            return self.start_listening(input, anchor, item);
        }
        self.interrupt_reply(false).await;
        self.cancel_pending();
        let (run, cancel) = self.spawn_turn(input, anchor, true);
        self.new_reply(run, cancel, anchor, user_item, turn_id);
    }

    /// Prepares a reply to the caller's words so far, held back until the turn ends.
    pub(super) fn start_pending(&mut self, input: TurnInput, anchor: Instant) {
        self.cancel_pending();
        // A flow moves on each turn: only a turn known to be over may move it.
        if self.takeover.active() || self.flow.is_some() {
            return;
        }
        let (live, gate) = tokio::sync::watch::channel(false);
        let (run, cancel) = self.spawn_gated_turn(input, anchor, true, gate);
        self.speaker.pending = Some(Pending {
            run,
            cancel,
            held: Vec::new(),
            anchor,
            live,
        });
    }

    pub(super) fn cancel_pending(&mut self) {
        if let Some(p) = self.speaker.pending.take() {
            p.cancel.cancel();
        }
    }

    /// The caller's turn is over: makes the speculative reply the current one and sends what
    /// it has so far. False when there is none.
    /// `end_of_turn` says how the turn was found to be over (semantic mode).
    pub(super) async fn adopt_pending(
        &mut self,
        user_item: u64,
        end_of_turn: Option<EndOfTurn>,
    ) -> bool {
        if self.takeover.active() {
            self.cancel_pending();
            return false;
        }
        let Some(pending) = self.speaker.pending.take() else {
            return false;
        };
        self.interrupt_reply(false).await;
        let _ = pending.live.send(true);
        self.new_reply(
            pending.run,
            pending.cancel,
            pending.anchor,
            Some(user_item),
            None,
        );
        if let Some(r) = self.speaker.reply.as_mut() {
            r.end_of_speech_ms = Some(ms_since(pending.anchor));
            r.end_of_turn = end_of_turn;
        }
        for event in pending.held {
            self.on_reply_event(event).await;
        }
        true
    }

    pub(super) async fn on_turn_event(&mut self, run: u64, event: TurnEvent) {
        // What the speech engine was given, spoken or not (a dropped speculative reply too).
        if let TurnEvent::Audio {
            sentence: Some(s), ..
        } = &event
        {
            let tts = self.engines.tts.usage_label();
            self.meter(TTS_CHARS, &tts, s.chars().count() as i64);
        }
        if self.on_listen_event(run, &event).await {
            return;
        }
        if let Some(p) = self.speaker.pending.as_mut().filter(|p| p.run == run) {
            p.held.push(event);
            if p.held.len() > MAX_HELD_EVENTS {
                self.cancel_pending();
            }
            return;
        }
        if self
            .speaker
            .reply
            .as_ref()
            .is_some_and(|r| r.run == run && r.running)
        {
            self.on_reply_event(event).await;
        }
    }

    async fn on_reply_event(&mut self, event: TurnEvent) {
        let rate = self.engines.tts.sample_rate();
        let Some(r) = self.speaker.reply.as_mut() else {
            return;
        };
        let (turn_id, item_id) = (r.turn_id, r.item_id);
        let user_item = r.user_item.unwrap_or(item_id);
        match event {
            TurnEvent::Transcript(text) => {
                self.record
                    .history()
                    .push_item(Role::User, text.clone(), Some(user_item));
                self.emit(CallEvent::Transcript {
                    turn_id,
                    item_id: user_item,
                    text,
                    is_final: true,
                })
                .await;
            }
            TurnEvent::NoSpeech => {
                self.speaker.reply = None;
                self.emit(CallEvent::Transcript {
                    turn_id,
                    item_id: user_item,
                    text: String::new(),
                    is_final: true,
                })
                .await;
                self.emit(CallEvent::ResponseDone {
                    turn_id,
                    item_id,
                    reason: DoneReason::NoSpeech,
                })
                .await;
            }
            TurnEvent::Delta(delta) => {
                self.emit(CallEvent::ResponseDelta {
                    turn_id,
                    item_id,
                    delta,
                })
                .await;
            }
            TurnEvent::Audio { samples, sentence } => {
                let now = Instant::now();
                let ms = samples.len() as f64 * 1000.0 / f64::from(rate.max(1));
                r.track.sent(sentence.as_deref(), ms, now);
                r.first_audio_ms.get_or_insert_with(|| ms_since(r.anchor));
                self.caller.played(&samples, rate);
                self.emit(CallEvent::Audio {
                    turn_id,
                    item_id,
                    samples: samples.into(),
                    sample_rate: rate,
                })
                .await;
            }
            TurnEvent::Done {
                reply,
                mut timings,
                tokens,
            } => {
                r.running = false;
                let after = r.after.take();
                // A reply to the caller (not a spoken line or an operator's voice) was written
                // by the language model.
                let written =
                    (r.user_item.is_some() && !r.live_voice).then(|| reply.chars().count() as i64);
                timings.end_of_speech_ms = r.end_of_speech_ms;
                timings.end_of_turn = r.end_of_turn;
                // An operator's live voice answers nobody's turn: no voice-to-voice figure.
                timings.voice_to_voice_ms = r.first_audio_ms.filter(|_| !r.live_voice);
                self.record
                    .history()
                    .push_item(Role::Assistant, reply.clone(), Some(item_id));
                self.record.turns.fetch_add(1, Ordering::SeqCst);
                self.svc.metrics.turn(&timings);
                if let Some(chars) = written {
                    let llm = self.engines.llm.usage_label();
                    self.meter(LLM_COMPLETION_CHARS, &llm, chars);
                }
                if let Some(t) = tokens {
                    self.meter(LLM_PROMPT_TOKENS, &t.engine, t.prompt as i64);
                    self.meter(LLM_COMPLETION_TOKENS, &t.engine, t.completion as i64);
                }
                self.emit(CallEvent::ResponseText {
                    turn_id,
                    item_id,
                    text: reply,
                })
                .await;
                self.emit(CallEvent::ResponseDone {
                    turn_id,
                    item_id,
                    reason: DoneReason::Completed,
                })
                .await;
                self.emit(CallEvent::Metrics {
                    turn_id,
                    timings: Box::new(timings),
                })
                .await;
                if let Some(after) = after {
                    self.end_after_reply(turn_id, after).await;
                }
            }
            TurnEvent::ToolCall(call) => {
                r.open_tools.push(call.clone());
                self.record
                    .history()
                    .push_message(None, ChatMessage::tool_calls("", vec![call.clone()]));
                self.emit(CallEvent::Tool(ToolEvent::Call {
                    turn_id,
                    item_id,
                    call_id: call.id,
                    name: call.name,
                    arguments: call.arguments,
                }))
                .await;
            }
            TurnEvent::Flow(step) => self.on_flow_step(turn_id, step).await,
            TurnEvent::ToolResult { call, outcome, ms } => {
                r.open_tools.retain(|c| c.id != call.id);
                match &outcome.effect {
                    Effect::EndCall | Effect::Transfer { .. } => {
                        r.after = Some(outcome.effect.clone())
                    }
                    Effect::Message { .. } | Effect::None => {}
                }
                self.tool_result(turn_id, item_id, call, outcome, ms).await;
            }
            TurnEvent::Failed { error } => {
                self.speaker.reply = None;
                let code = match error {
                    EngineError::Busy { .. } => ErrorCode::EngineBusy,
                    _ => ErrorCode::EngineError,
                };
                tracing::warn!(turn_id, %error, "turn failed");
                self.send_error(code, error.to_string()).await;
                self.emit(CallEvent::ResponseDone {
                    turn_id,
                    item_id,
                    reason: DoneReason::Error,
                })
                .await;
            }
        }
    }

    /// Stops the current reply if it is still generating, or, with `playing`, if its audio is
    /// still playing: no more of its audio is sent, the client is told to stop playing it, and
    /// history keeps only what was heard. A new typed or committed turn and the end of the call
    /// stop only a reply still being generated; the caller's voice and `interrupt` stop both.
    pub(super) async fn interrupt_reply(&mut self, playing: bool) {
        let now = Instant::now();
        let Some(r) = self
            .speaker
            .reply
            .as_mut()
            .filter(|r| r.speaking(now) && (playing || r.running))
        else {
            return;
        };
        r.cancel.cancel();
        r.interrupted = true;
        self.caller.stopped_playing();
        let was_running = std::mem::replace(&mut r.running, false);
        let played = r.track.played_ms(now);
        let heard = r.track.heard_text(played);
        let (turn_id, item_id) = (r.turn_id, r.item_id);
        let open_tools = std::mem::take(&mut r.open_tools);
        r.after = None;
        for call in open_tools {
            self.tool_result(turn_id, item_id, call, ToolOutcome::cancelled(), 0.0)
                .await;
        }
        {
            let mut history = self.record.history();
            if was_running {
                history.push_item(Role::Assistant, heard.clone(), Some(item_id));
            } else {
                history.set_item(item_id, &heard);
            }
        }
        self.emit(CallEvent::Interrupted {
            turn_id,
            item_id,
            played_ms: played.round() as u64,
            heard,
        })
        .await;
        if was_running {
            self.emit(CallEvent::ResponseDone {
                turn_id,
                item_id,
                reason: DoneReason::Interrupted,
            })
            .await;
        }
    }

    /// A tool's result: into history (what the model was given) and out as an event; a message
    /// taken is an event of its own.
    async fn tool_result(
        &mut self,
        turn_id: u64,
        item_id: u64,
        call: ToolCall,
        outcome: ToolOutcome,
        ms: f64,
    ) {
        self.record.history().push_message(
            None,
            ChatMessage::tool_result(call.id.clone(), outcome.content.clone()),
        );
        self.emit(CallEvent::Tool(ToolEvent::Result {
            turn_id,
            item_id,
            call_id: call.id,
            name: call.name,
            result: outcome.content,
            error: outcome.error,
            ms,
        }))
        .await;
        if let Effect::Message {
            name,
            callback,
            message,
        } = outcome.effect
        {
            self.emit(CallEvent::Tool(ToolEvent::Message {
                turn_id,
                name,
                callback,
                message,
            }))
            .await;
        }
    }

    /// A complete reply called `end_call` or `transfer`: the call ends once it has been
    /// played (see the actor's closing).
    async fn end_after_reply(&mut self, turn_id: u64, after: Effect) {
        let reason = match after {
            Effect::Transfer { to } => {
                self.emit(CallEvent::Tool(ToolEvent::Transfer { turn_id, to }))
                    .await;
                crate::protocol::EndReason::Transferred
            }
            _ => crate::protocol::EndReason::AgentEnded,
        };
        self.close_after_speaking(reason);
    }

    /// A `playback` report. After an interruption, the client's final report corrects what
    /// history keeps of the reply.
    pub(super) async fn on_playback(&mut self, item_id: u64, played_ms: u64) {
        let now = Instant::now();
        let s = &mut self.speaker;
        let Some(r) = [s.reply.as_mut(), s.cut.as_mut()]
            .into_iter()
            .flatten()
            .find(|r| r.item_id == item_id)
        else {
            return;
        };
        r.track.report(played_ms, now);
        if r.interrupted {
            let heard = r
                .track
                .heard_text((played_ms as f64).min(r.track.sent_ms()));
            if self.record.history().set_item(item_id, &heard) {
                self.emit(CallEvent::Heard { item_id, heard }).await;
            }
        }
    }
}
