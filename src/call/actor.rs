//! The call actor: one task per live call. It owns the call's state and takes typed inputs from
//! whoever holds the call's handle (its transport, or any other part of the server); it emits
//! typed events to its own transport and to subscribers. It never awaits an engine itself: turns
//! run in their own tasks and are cancelled through their token. What the caller says is handled
//! in `caller.rs`, the agent's replies and what was heard of them in `reply.rs`.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::caller::{Caller, Judged, Partial};
use super::event::{CallEvent, CallInput};
use super::handle::{AudioStream, ListenAudio};
use super::keys::Keypad;
use super::operator::Takeover;
use super::record::Recorder;
use super::recording::Mixer;
use super::reply::Speaker;
use super::services::CallServices;
use super::store::{CallRecord, CallState, LiveCall};
use super::turn::{SharedFlow, TurnEvent, TurnInput};
use super::usage::{LimitWatch, Meter, WRITE_EVERY};
use crate::agents::Agent;
use crate::engines::Engines;
use crate::protocol::{EndReason, ErrorCode, LimitKind, TurnDetectionUpdate};
use crate::store::{AGENT_AUDIO_MS, CALLER_AUDIO_MS};

pub struct Call {
    pub(super) svc: Arc<CallServices>,
    pub(super) record: Arc<CallRecord>,
    /// Holds the call live in the registry; dropped just before `Ended` is sent, so that a
    /// client may resume the call the moment it hears it ended.
    live: Option<LiveCall>,
    /// Child of the server's token; parent of each turn's.
    pub(super) cancel: CancellationToken,
    pub(super) agent: Arc<Agent>,
    /// The agent's engines (its own chains, else the server's).
    pub(super) engines: Engines,
    pub(super) system: String,
    /// What the caller says.
    pub(super) caller: Caller,
    /// What the agent says, and what was heard of it.
    pub(super) speaker: Speaker,
    /// Operators: who holds the call taken over, notes, caller turns only transcribed.
    pub(super) takeover: Takeover,
    /// Keys the caller is pressing (DTMF), until their entry is complete.
    pub(super) keys: Keypad,
    /// The agent's flow, if it has one (see `flow.rs`).
    pub(super) flow: Option<SharedFlow>,
    /// When the flow's node stops waiting for the caller's answer.
    pub(super) flow_wait: Option<Instant>,
    /// The flow waits for the agent to stop speaking before its timer starts.
    pub(super) flow_poll: bool,
    deadline: Instant,
    pub(super) turn_tx: mpsc::Sender<(u64, TurnEvent)>,
    turn_rx: Option<mpsc::Receiver<(u64, TurnEvent)>>,
    pub(super) partial_tx: mpsc::Sender<Partial>,
    partial_rx: Option<mpsc::Receiver<Partial>>,
    /// Answers of the end-of-turn model.
    pub(super) judged_tx: mpsc::Sender<Judged>,
    judged_rx: Option<mpsc::Receiver<Judged>>,
    /// The call's own transport; false once it is gone.
    owner: mpsc::Sender<CallEvent>,
    owner_open: bool,
    events: broadcast::Sender<CallEvent>,
    /// Both sides' audio for operators listening in; copied only while someone listens.
    listen: broadcast::Sender<ListenAudio>,
    /// Writes the call's record from its events.
    pub(super) recorder: Recorder,
    /// The call's recording, if it is recorded.
    pub(super) recording: Option<Mixer>,
    /// The running usage of this stretch of the call.
    pub(super) meter: Option<Meter>,
    /// Watches the org's and subject's daily minutes, until the call runs.
    watch: Option<LimitWatch>,
    /// A daily allowance ran out, or the agent ended the call: the last reply is being said;
    /// the call ends when it has been, or at this deadline.
    pub(super) closing: Option<Instant>,
    /// Why the call ends once `closing` comes.
    ending: EndReason,
}

/// The longest the limit message may take to be said before the call ends anyway.
const CLOSING_GRACE: Duration = Duration::from_secs(30);
/// How often a closing call looks whether its limit message has been played.
const CLOSING_POLL: Duration = Duration::from_millis(100);

/// How long an ended call waits for its writes before checking again (the database may be away).
const FORGET_RETRY: Duration = Duration::from_secs(5);

/// Waits until `at`, or forever when there is none.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A deadline that never comes (about thirty years away).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl Call {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        svc: Arc<CallServices>,
        live: LiveCall,
        agent: Arc<Agent>,
        engines: Engines,
        system: String,
        caller: Caller,
        max_call: Duration,
        owner: mpsc::Sender<CallEvent>,
        events: broadcast::Sender<CallEvent>,
        listen: broadcast::Sender<ListenAudio>,
        recorder: Recorder,
    ) -> Self {
        let (turn_tx, turn_rx) = mpsc::channel(64);
        let (partial_tx, partial_rx) = mpsc::channel(4);
        let (judged_tx, judged_rx) = mpsc::channel(4);
        let cancel = svc.shutdown.child_token();
        Self {
            record: live.record.clone(),
            live: Some(live),
            cancel,
            agent,
            engines,
            system,
            caller,
            speaker: Speaker::default(),
            takeover: Takeover::default(),
            keys: Keypad::default(),
            flow: None,
            flow_wait: None,
            flow_poll: false,
            deadline: Instant::now()
                .checked_add(max_call)
                .unwrap_or_else(far_future),
            turn_tx,
            turn_rx: Some(turn_rx),
            partial_tx,
            partial_rx: Some(partial_rx),
            judged_tx,
            judged_rx: Some(judged_rx),
            owner,
            owner_open: true,
            events,
            listen,
            recorder,
            recording: None,
            meter: None,
            watch: None,
            closing: None,
            ending: EndReason::LimitReached,
            svc,
        }
    }

    /// Meters the call into `meter`, and ends it when `watch` says a daily allowance ran out.
    pub(super) fn with_usage(mut self, mut meter: Meter, watch: Option<LimitWatch>) -> Self {
        meter.audio_engine = self.engines.tts.usage_label();
        self.meter = Some(meter);
        self.watch = watch;
        self
    }

    /// Adds to the call's usage.
    pub(super) fn meter(&mut self, metric: &'static str, engine: &str, amount: i64) {
        if let Some(m) = self.meter.as_mut() {
            m.add(metric, engine, amount);
        }
    }

    /// Writes the call's running usage (with the audio each side sent so far).
    fn write_usage(&mut self) {
        let (caller_ms, agent_ms) = self.recorder.stretch_audio_ms();
        if let Some(m) = self.meter.as_mut() {
            m.observe(CALLER_AUDIO_MS, "", caller_ms);
            let tts = m.audio_engine.clone();
            m.observe(AGENT_AUDIO_MS, &tts, agent_ms);
            m.write();
        }
    }

    /// A daily allowance ran out: the agent says the limit message, then the call ends.
    async fn limit_reached(&mut self, kind: LimitKind) {
        info!(call_id = %self.record.id, limit = kind.as_str(), "a daily limit ran out");
        self.cancel_pending();
        self.interrupt_reply(true).await;
        self.closing = Some(Instant::now() + CLOSING_GRACE);
        self.ending = EndReason::LimitReached;
        let message = self.svc.usage.limit_message.clone();
        self.start_reply(TurnInput::Say(message), Instant::now(), None, None)
            .await;
    }

    /// Ends the call with `reason` once the current reply has been played (at most
    /// [`CLOSING_GRACE`] from now); the caller starts no other turn meanwhile.
    pub(super) fn close_after_speaking(&mut self, reason: EndReason) {
        if self.closing.is_none() {
            self.closing = Some(Instant::now() + CLOSING_GRACE);
            self.ending = reason;
        }
    }

    /// Runs the agent's flow: it decides each reply.
    pub(super) fn with_flow(mut self, flow: Option<SharedFlow>) -> Self {
        self.flow = flow;
        self
    }

    /// Records the call into `recording`.
    pub(super) fn with_recording(mut self, recording: Option<Mixer>) -> Self {
        self.recording = recording;
        self
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Runs the call until it ends; `greeting` is spoken first.
    pub(super) async fn run(
        mut self,
        mut inputs: mpsc::Receiver<CallInput>,
        greeting: Option<TurnInput>,
    ) {
        let (Some(mut turn_rx), Some(mut partial_rx), Some(mut judged_rx)) = (
            self.turn_rx.take(),
            self.partial_rx.take(),
            self.judged_rx.take(),
        ) else {
            return;
        };
        let warm = crate::engines::llm::ChatRequest {
            session_id: self.id().to_string(),
            system: self.system.clone(),
            messages: self.record.history().messages(),
            max_tokens: self.agent.max_tokens,
            temperature: self.agent.temperature,
            json: false,
            tokens: None,
            tools: None,
            first_words: None,
        };
        tokio::spawn(self.engines.llm.warm_up(warm, self.cancel.clone()));
        if let Some(greeting) = greeting {
            self.start_reply(greeting, Instant::now(), None, Some(0))
                .await;
        }
        let (limit_tx, mut limit_rx) = tokio::sync::oneshot::channel();
        let mut watching = match self.watch.take() {
            Some(watch) => {
                tokio::spawn(watch.run(self.cancel.clone(), limit_tx));
                true
            }
            None => false,
        };
        let mut usage_tick = tokio::time::interval(WRITE_EVERY);
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break EndReason::ServerShutdown,
                _ = tokio::time::sleep_until(self.deadline) => break EndReason::MaxDuration,
                _ = sleep_until_some(self.closing) => break self.ending,
                kind = &mut limit_rx, if watching => {
                    watching = false;
                    if let Ok(kind) = kind {
                        self.limit_reached(kind).await;
                    }
                }
                _ = usage_tick.tick() => self.write_usage(),
                _ = sleep_until_some(self.keys.deadline()) => {
                    if let Some(entry) = self.keys.pause() {
                        self.keyed(entry).await;
                    }
                }
                _ = tokio::time::sleep(CLOSING_POLL), if self.closing.is_some() => {}
                _ = sleep_until_some(self.flow_wait) => self.flow_silence().await,
                _ = tokio::time::sleep(CLOSING_POLL), if self.flow_poll => {}
                _ = self.owner.closed(), if self.owner_open => break EndReason::ConnectionLost,
                input = inputs.recv() => match input {
                    None => break EndReason::ConnectionLost,
                    Some(CallInput::End(reason)) => break reason,
                    Some(CallInput::Operator(cmd)) => {
                        if let Some(reason) = self.on_operator(cmd).await {
                            break reason;
                        }
                    }
                    Some(input) => self.on_input(input).await,
                },
                Some((run, event)) = turn_rx.recv() => self.on_turn_event(run, event).await,
                Some(partial) = partial_rx.recv() => self.on_partial(partial).await,
                Some(judged) = judged_rx.recv() => self.on_judged(judged).await,
            }
            if !self.owner_open {
                break EndReason::ConnectionLost;
            }
            if self.closing.is_some() && !self.agent_speaking() {
                break self.ending;
            }
            self.arm_flow_timer();
        };
        self.finish(reason).await;
    }

    async fn on_input(&mut self, input: CallInput) {
        if self.closing.is_some() {
            // The call is ending: the caller does not start another turn.
            if let CallInput::Audio(_)
            | CallInput::Commit
            | CallInput::Text(_)
            | CallInput::Dtmf(_)
            | CallInput::Interrupt = input
            {
                return;
            }
        }
        match input {
            CallInput::Audio(samples) => self.on_audio(samples).await,
            CallInput::Commit => self.commit().await,
            CallInput::Text(text) => self.on_text(text).await,
            CallInput::Dtmf(digits) => self.on_keys(digits).await,
            CallInput::Playback { item_id, played_ms } => {
                self.on_playback(item_id, played_ms).await
            }
            CallInput::Interrupt => self.interrupt_reply(true).await,
            CallInput::UpdateDetection(update) => self.update_detection(update).await,
            CallInput::OperatorVoice { operator, samples } => {
                self.operator_voice(operator, samples).await
            }
            CallInput::OperatorVoiceEnd { operator } => self.operator_voice_end(&operator),
            CallInput::End(_) | CallInput::Operator(_) => {}
        }
    }

    /// Emits an event to the call's transport (waiting for room) and to its subscribers (never
    /// waiting).
    pub(super) async fn emit(&mut self, event: CallEvent) {
        self.recorder.on_event(&event);
        match &event {
            CallEvent::Transcript { is_final: true, .. } => {
                self.record.set_state(CallState::Thinking)
            }
            CallEvent::Audio { .. } => self.record.set_state(CallState::Speaking),
            CallEvent::ResponseDone { .. } | CallEvent::Interrupted { .. } => {
                self.record.set_state(CallState::Listening)
            }
            _ => {}
        }
        if let CallEvent::Audio {
            samples,
            sample_rate,
            ..
        } = &event
        {
            self.listened(AudioStream::Agent, samples, *sample_rate);
        }
        self.record_audio(&event);
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event.clone());
        }
        if self.owner_open && self.owner.send(event).await.is_err() {
            self.owner_open = false;
        }
    }

    /// The recording follows what the caller hears; a caller who opts out ends it.
    fn record_audio(&mut self, event: &CallEvent) {
        let Some(m) = self.recording.as_mut() else {
            return;
        };
        m.catch_up(Instant::now());
        match event {
            CallEvent::Audio {
                samples,
                sample_rate,
                ..
            } => m.heard(samples, *sample_rate),
            CallEvent::Interrupted { .. } => m.cut(),
            CallEvent::Transcript {
                is_final: true,
                text,
                ..
            } if self.agent.opts_out(text) => self.opt_out_of_recording(),
            _ => {}
        }
    }

    /// The caller asked not to be recorded: the recording stops and is deleted.
    fn opt_out_of_recording(&mut self) {
        if let Some(m) = self.recording.take() {
            m.discard();
            info!(call_id = %self.record.id, "the caller opted out of the recording");
            self.recorder.recording_opted_out();
        }
    }

    /// Keys pressed by the caller: told to subscribers, checked against the agent's opt-out
    /// code, and each complete entry given to the agent as a caller turn.
    async fn on_keys(&mut self, digits: String) {
        let pressed = self.keys.press(
            &digits,
            self.agent.recording_opt_out_digits.as_deref(),
            Instant::now(),
        );
        self.emit(CallEvent::Dtmf { digits }).await;
        if pressed.opted_out {
            self.opt_out_of_recording();
        }
        for entry in pressed.entries {
            self.keyed(entry).await;
        }
    }

    /// A complete keypad entry: a caller turn, stored like a typed one (`source: dtmf`).
    async fn keyed(&mut self, entry: String) {
        if self.closing.is_some() {
            return;
        }
        let item = self.record.new_item_id();
        self.recorder.keyed(item);
        self.start_reply(TurnInput::Keys(entry), Instant::now(), Some(item), None)
            .await;
    }

    /// Hands a chunk of the call's audio to operators listening in, if any.
    pub(super) fn listened(&self, stream: AudioStream, samples: &Arc<[f32]>, sample_rate: u32) {
        if self.listen.receiver_count() > 0 {
            let _ = self.listen.send(ListenAudio {
                stream,
                samples: samples.clone(),
                sample_rate,
            });
        }
    }

    /// Whether any operator listens to the call's audio.
    pub(super) fn has_listeners(&self) -> bool {
        self.listen.receiver_count() > 0
    }

    pub(super) async fn send_error(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.svc.metrics.error(code);
        self.emit(CallEvent::Error {
            code,
            message: message.into(),
        })
        .await;
    }

    async fn update_detection(&mut self, update: TurnDetectionUpdate) {
        let current = *self.caller.settings();
        let next = match self.svc.checked_detection(&current, Some(&update)) {
            Ok(d) => d,
            Err(e) => return self.send_error(ErrorCode::InvalidSetting, e).await,
        };
        let scorer = (next.mode != current.mode).then(|| self.svc.scorer(&next));
        self.caller.update(next, scorer);
        self.emit(CallEvent::DetectionUpdated(next)).await;
    }

    async fn on_text(&mut self, text: String) {
        let max = self.svc.limits.max_text_chars;
        let text = text.trim().to_string();
        if text.is_empty() {
            return self.send_error(ErrorCode::EmptyTurn, "text is empty").await;
        }
        if text.chars().count() > max {
            return self
                .send_error(
                    ErrorCode::TextTooLong,
                    format!("text is longer than {max} characters"),
                )
                .await;
        }
        let item = self.record.new_item_id();
        self.recorder.typed(item);
        self.start_reply(TurnInput::Text(text), Instant::now(), Some(item), None)
            .await;
    }

    async fn finish(mut self, reason: EndReason) {
        self.interrupt_reply(false).await;
        if let Some(m) = self.recording.take() {
            m.finish(Instant::now());
        }
        // Stops the running turn, any speculative one and the warm-up with them.
        self.cancel.cancel();
        self.engines.llm.release(self.id());
        self.svc.metrics.live_calls.dec();
        let turns = self.record.turns.load(std::sync::atomic::Ordering::SeqCst);
        let call_id = self.record.id.clone();
        info!(call_id = %call_id, ?reason, turns, "call ended");
        self.svc.calls.detach(&call_id);
        if let Some(cluster) = &self.svc.cluster {
            // Before `Ended` is sent: a caller told the call ended may start another at once.
            cluster.free_slots(&call_id).await;
        }
        drop(self.live.take());
        let record = self.record.clone();
        if self.agent.summary {
            let pending = super::record::PendingSummary {
                agent: self.agent.clone(),
                llm: self.engines.llm.clone(),
                messages: record.history().messages(),
            };
            self.recorder
                .summarize_on_end(self.svc.summaries.clone(), pending);
        }
        self.write_usage();
        self.emit(CallEvent::Ended {
            call_id,
            reason,
            turns,
        })
        .await;
        record.set_totals(self.recorder.totals());
        // Once the store has the call's last writes, memory lets go of it.
        let svc = self.svc.clone();
        let stretch = record.stretch();
        self.svc.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = svc.shutdown.cancelled() => return,
                    written = svc.writer.flush(FORGET_RETRY) => if written { break },
                }
            }
            svc.calls.forget(&record.id, stretch);
        });
    }
}
