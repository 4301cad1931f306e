//! What the caller says: audio chunks go through the listener (decode, speech detection); speech
//! start and stop become events, pauses start a speculative reply, long enough speech over the
//! agent interrupts it, and partial transcripts are made while the caller is still speaking. In
//! semantic mode a short pause asks the end-of-turn model, off the actor, whether the turn is
//! complete; a "complete" ends it at once.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::actor::Call;
use super::event::CallEvent;
use super::handle::AudioStream;
use super::listen::{energy_scorer, Heard, Listener};
use super::turn::TurnInput;
use crate::audio::resample::StreamResampler;
use crate::audio::vad::SpeechScorer;
use crate::audio::ENGINE_RATE;
use crate::engines::stt::LiveTranscription;
use crate::engines::turn::Verdict;
use crate::protocol::{DetectionMode, EndOfTurn, EndOfTurnBy, ErrorCode, TurnDetection};

/// Chunks up to this many samples (1 s) are scored on the actor's own thread, well under a
/// millisecond of work. Larger ones go to a blocking thread.
const INLINE_SAMPLES: usize = ENGINE_RATE as usize;

/// Caller audio held while the detection pool is busy (1 s); more is dropped.
const MAX_BACKLOG_SAMPLES: usize = ENGINE_RATE as usize;

/// Shortest utterance worth a partial transcript.
const PARTIAL_MIN_SAMPLES: usize = ENGINE_RATE as usize;

/// A partial transcript (or `None` when it failed or was cancelled) of utterance `item_id`.
pub struct Partial {
    pub item_id: u64,
    pub text: Option<String>,
}

/// The end-of-turn model's answer (`None`: it failed or was refused) about pause `id`.
pub struct Judged {
    pub id: u64,
    pub verdict: Option<Verdict>,
}

/// The utterance in progress, transcribed as it is spoken by an engine that streams.
struct Live {
    stream: Box<dyn LiveTranscription>,
    /// Samples of the utterance sent so far.
    sent: usize,
}

pub struct Caller {
    /// `None` only while it is away on a blocking thread.
    listener: Option<Listener>,
    settings: TurnDetection,
    /// Conversation item of the utterance in progress.
    pub user_item: Option<u64>,
    /// The partial transcript being made: its item and its cancellation.
    partial: Option<(u64, CancellationToken)>,
    last_partial: Option<Instant>,
    /// A detector failure was reported already.
    detector_failed: bool,
    live: Option<Live>,
    /// Audio the busy detection pool has not scored yet.
    backlog: Vec<f32>,
    /// Brings reply audio to 16 kHz for the echo reference: its rate and resampler.
    reference: Option<(u32, StreamResampler)>,
    /// Audio dropped in the current busy spell; `None` when the detector keeps up.
    busy_dropped_ms: Option<u64>,
    /// The pause the end-of-turn model is judging: its id and the request's cancellation.
    judging: Option<(u64, CancellationToken)>,
    next_judging: u64,
    /// The model's last answer in this utterance.
    verdict: Option<Verdict>,
    /// The model ended the utterance (rather than the silence).
    model_ended: bool,
}

impl Caller {
    pub fn new(listener: Listener) -> Self {
        Self {
            settings: *listener.settings(),
            listener: Some(listener),
            user_item: None,
            partial: None,
            last_partial: None,
            detector_failed: false,
            live: None,
            backlog: Vec::new(),
            busy_dropped_ms: None,
            judging: None,
            next_judging: 0,
            verdict: None,
            model_ended: false,
            reference: None,
        }
    }

    pub fn settings(&self) -> &TurnDetection {
        &self.settings
    }

    pub fn update(
        &mut self,
        settings: TurnDetection,
        scorer: Option<Option<Box<dyn SpeechScorer>>>,
    ) {
        self.settings = settings;
        // The utterance in progress, if any, is transcribed whole at its end.
        self.live = None;
        self.stop_judging();
        if let Some(l) = self.listener.as_mut() {
            l.update(settings, scorer);
        }
    }

    /// Reply audio at `rate` was sent to the caller: the echo canceller's reference.
    pub fn played(&mut self, samples: &[f32], rate: u32) {
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        if self.reference.as_ref().is_none_or(|(r, _)| *r != rate) {
            self.reference = StreamResampler::new(rate, ENGINE_RATE)
                .ok()
                .map(|s| (rate, s));
        }
        if let Some((_, resampler)) = self.reference.as_mut() {
            listener.play(&resampler.push(samples));
        }
    }

    /// The reply was cut: its audio stops playing.
    pub fn stopped_playing(&mut self) {
        if let Some(l) = self.listener.as_mut() {
            l.stop_playing();
        }
    }

    pub(super) fn in_speech(&self) -> bool {
        self.listener.as_ref().is_some_and(|l| l.in_speech())
    }

    fn cancel_partial(&mut self) {
        if let Some((_, c)) = &self.partial {
            c.cancel();
        }
    }

    /// Forgets the pause being judged (speech came back, or the turn ended).
    fn stop_judging(&mut self) {
        if let Some((_, c)) = self.judging.take() {
            c.cancel();
        }
    }

    /// How the utterance that just ended was ended, in semantic mode; resets for the next.
    fn end_of_turn(&mut self) -> Option<EndOfTurn> {
        self.stop_judging();
        let verdict = self.verdict.take();
        let by_model = std::mem::take(&mut self.model_ended);
        (self.settings.mode == DetectionMode::Semantic).then(|| EndOfTurn {
            by: if by_model {
                EndOfTurnBy::Model
            } else {
                EndOfTurnBy::Silence
            },
            probability: verdict.map(|v| f64::from(v.probability)),
            model_ms: verdict.map(|v| v.ms),
        })
    }
}

impl Call {
    /// Caller audio at the engine rate: buffered, scored for speech, and acted on.
    pub(super) async fn on_audio(&mut self, samples: Vec<f32>) {
        self.recorder.caller_audio(samples.len());
        if let Some(m) = self.recording.as_mut() {
            m.caller(&samples);
        }
        if self.has_listeners() {
            let copy: Arc<[f32]> = samples.as_slice().into();
            self.listened(AudioStream::Caller, &copy, ENGINE_RATE);
        }
        // Audio held back while the detector was busy goes first.
        let samples = match std::mem::take(&mut self.caller.backlog) {
            held if held.is_empty() => samples,
            mut held => {
                held.extend_from_slice(&samples);
                held
            }
        };
        let neural = self.svc.engines.vad.is_some();
        let Some(mut listener) = self.caller.listener.take() else {
            return;
        };
        // The neural detector takes a millisecond or two per chunk, any detector costs in
        // proportion to the chunk, and so does echo cancellation while a reply plays: Silero
        // (also under semantic detection), large chunks and echo cancellation run on the
        // detection pool, whose bounded queue answers busy instead of piling up blocking
        // threads.
        let model_mode = matches!(
            self.caller.settings.mode,
            DetectionMode::Silero | DetectionMode::Semantic
        );
        let offload =
            (neural && model_mode) || samples.len() > INLINE_SAMPLES || listener.echo_active();
        let pushed = if offload {
            match self.svc.engines.detector.slot(&self.cancel).await {
                Ok(slot) => slot
                    .run(move |_| {
                        let r = listener.push(&samples);
                        Ok((listener, r))
                    })
                    .await
                    .ok(),
                Err(e) => {
                    self.caller.listener = Some(listener);
                    return self.detector_busy(samples, e).await;
                }
            }
        } else {
            let r = listener.push(&samples);
            Some((listener, r))
        };
        self.caller.busy_dropped_ms = None;
        let (heard, failure) = match pushed {
            Some((listener, r)) => {
                self.caller.listener = Some(listener);
                r
            }
            None => {
                // The detector panicked: carry on with the energy detector.
                warn!("speech detector failed; falling back to the energy detector");
                let settings = self.caller.settings;
                self.caller.listener = Some(
                    Listener::new(
                        settings,
                        Some(energy_scorer(&settings)),
                        self.svc.turn.speculate_ms,
                        self.svc.limits.max_turn_audio_ms,
                    )
                    .with_echo_cancellation(self.svc.turn.echo_cancellation),
                );
                (Vec::new(), Some("the speech detector stopped".to_string()))
            }
        };
        if let Some(reason) = failure {
            if !std::mem::replace(&mut self.caller.detector_failed, true) {
                warn!(%reason, "speech detection failed on a chunk");
                self.send_error(
                    ErrorCode::EngineError,
                    format!("speech detection failed: {reason}"),
                )
                .await;
            }
        }
        for h in heard {
            self.on_heard(h).await;
        }
        self.feed_live();
        self.check_barge_in().await;
        self.maybe_partial();
        self.enforce_turn_limit().await;
    }

    /// The detection pool refused the chunk: it is held (up to [`MAX_BACKLOG_SAMPLES`]) and
    /// scored with the next one; past that, held audio is dropped and the caller told once
    /// per busy spell.
    async fn detector_busy(&mut self, samples: Vec<f32>, e: crate::engines::EngineError) {
        if samples.len() <= MAX_BACKLOG_SAMPLES {
            self.caller.backlog = samples;
            return;
        }
        let ms = samples.len() as u64 * 1000 / ENGINE_RATE as u64;
        self.svc.metrics.detector_dropped_ms.inc_by(ms);
        let first = self.caller.busy_dropped_ms.is_none();
        *self.caller.busy_dropped_ms.get_or_insert(0) += ms;
        if first {
            warn!(error = %e, dropped_ms = ms, "speech detection is busy; caller audio dropped");
            self.send_error(
                ErrorCode::EngineBusy,
                format!("speech detection is overloaded: {ms} ms of audio were not heard"),
            )
            .await;
        }
    }

    /// Instant at which the caller said the sample at `at_ms` (they stream in real time).
    fn spoken_at(&self, at_ms: u64) -> Instant {
        let lag = self.caller.listener.as_ref().map_or(0, |l| l.lag_ms(at_ms));
        let now = Instant::now();
        now.checked_sub(Duration::from_millis(lag)).unwrap_or(now)
    }

    async fn on_heard(&mut self, heard: Heard) {
        let speculate = self.svc.turn.speculate_ms > 0;
        match heard {
            Heard::Started { at_ms } => {
                let item_id = self.record.new_item_id();
                self.caller.user_item = Some(item_id);
                self.caller.last_partial = Some(Instant::now());
                self.start_live(item_id);
                self.emit(CallEvent::SpeechStarted {
                    item_id,
                    audio_start_ms: at_ms,
                })
                .await;
            }
            Heard::Paused { at_ms, audio } => {
                let anchor = self.spoken_at(at_ms);
                self.caller.cancel_partial();
                // A streaming engine has the words already: no second transcription ahead.
                let live = self.caller.live.is_some();
                if speculate && !live && !self.agent_speaking() {
                    self.start_pending(TurnInput::Audio(audio.into()), anchor);
                }
            }
            Heard::Check { at_ms, audio } => self.judge(at_ms, audio),
            Heard::Resumed => {
                self.caller.stop_judging();
                self.caller.verdict = None;
                self.cancel_pending();
            }
            Heard::Stopped {
                at_ms,
                speech_ms,
                audio,
            } => {
                let anchor = self.spoken_at(at_ms);
                let min_interrupt = self.caller.settings.min_interrupt_ms;
                let speaking = self.agent_speaking();
                let end_of_turn = self.caller.end_of_turn();
                self.caller.cancel_partial();
                let live = self.caller.live.take().map(|mut l| {
                    l.stream.push(audio.get(l.sent..).unwrap_or(&[]));
                    l.stream.finish()
                });
                let item_id = match self.caller.user_item.take() {
                    Some(i) => i,
                    None => self.record.new_item_id(),
                };
                self.emit(CallEvent::SpeechStopped {
                    item_id,
                    audio_end_ms: at_ms,
                })
                .await;
                if speaking && speech_ms < min_interrupt {
                    // A cough or a "mhm" over the agent: not a turn.
                    debug!(speech_ms, "short sound while the agent speaks ignored");
                    return self.cancel_pending();
                }
                if !self.adopt_pending(item_id, end_of_turn).await {
                    let input = match live {
                        Some(transcript) => TurnInput::Live {
                            audio: audio.into(),
                            transcript,
                        },
                        None => TurnInput::Audio(audio.into()),
                    };
                    self.start_reply(input, anchor, Some(item_id), None).await;
                    if let Some(r) = self.reply_mut() {
                        r.end_of_speech_ms = Some(crate::call::turn::ms_since(anchor));
                        r.end_of_turn = end_of_turn;
                    }
                }
            }
        }
    }

    /// Asks the end-of-turn model whether the utterance, silent since `at_ms`, is complete; the
    /// answer comes back to the actor as a [`Judged`].
    fn judge(&mut self, at_ms: u64, audio: Vec<f32>) {
        let Some(model) = self.svc.engines.turn_model.clone() else {
            return;
        };
        if self.caller.settings.mode != DetectionMode::Semantic {
            return;
        }
        self.caller.stop_judging();
        let id = self.caller.next_judging;
        self.caller.next_judging += 1;
        let cancel = self.cancel.child_token();
        self.caller.judging = Some((id, cancel.clone()));
        let tx = self.judged_tx.clone();
        tokio::spawn(async move {
            let verdict = match model.judge(audio.into(), &cancel).await {
                Ok(v) => Some(v),
                Err(crate::engines::EngineError::Cancelled) => return,
                Err(e) => {
                    warn!(error = %e, at_ms, "end-of-turn model failed; the silence ends the turn");
                    None
                }
            };
            let _ = tx.send(Judged { id, verdict }).await;
        });
    }

    /// The model's answer: a complete turn ends now, if the caller is still silent.
    pub(super) async fn on_judged(&mut self, judged: Judged) {
        self.svc
            .metrics
            .end_of_turn_verdict(judged.verdict.map(|v| v.complete()));
        if self.caller.judging.as_ref().map(|(id, _)| *id) != Some(judged.id) {
            return; // speech came back, or the turn ended, meanwhile
        }
        self.caller.judging = None;
        let Some(verdict) = judged.verdict else {
            return;
        };
        self.caller.verdict = Some(verdict);
        debug!(
            probability = verdict.probability,
            model_ms = verdict.ms,
            "end-of-turn model"
        );
        if !verdict.complete() {
            return;
        }
        let ended = self.caller.listener.as_mut().and_then(|l| l.end_turn());
        if let Some(heard) = ended {
            self.caller.model_ended = true;
            self.on_heard(heard).await;
        }
    }

    /// Starts transcribing utterance `item_id` as it is spoken, when the engine can; its
    /// interim text becomes partial transcripts.
    fn start_live(&mut self, item_id: u64) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(8);
        let Some(mut stream) = self.engines.stt.listen(tx, self.cancel.child_token()) else {
            return;
        };
        let partials = self.partial_tx.clone();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                let p = Partial {
                    item_id,
                    text: Some(text),
                };
                if partials.send(p).await.is_err() {
                    return;
                }
            }
        });
        let sent = self.caller.listener.as_ref().map_or(0, |l| {
            let audio = l.utterance_from(0);
            stream.push(audio);
            audio.len()
        });
        self.caller.live = Some(Live { stream, sent });
    }

    /// Sends the utterance's new audio to its live transcription.
    fn feed_live(&mut self) {
        let c = &mut self.caller;
        let (Some(live), Some(l)) = (c.live.as_mut(), c.listener.as_ref()) else {
            return;
        };
        let fresh = l.utterance_from(live.sent);
        live.stream.push(fresh);
        live.sent += fresh.len();
    }

    /// Speech over the agent for `min_interrupt_ms` stops its reply.
    async fn check_barge_in(&mut self) {
        let Some(l) = self.caller.listener.as_ref() else {
            return;
        };
        // An operator talking live is a person on the line, not a reply to cut: both may
        // speak at once, as on any phone call.
        if l.in_speech()
            && l.speech_ms() >= self.caller.settings.min_interrupt_ms
            && self.agent_speaking()
            && !self.speaker.live_voice()
        {
            self.interrupt_reply(true).await;
        }
    }

    /// Starts a partial transcript of the utterance in progress when one is due.
    fn maybe_partial(&mut self) {
        let interval = self.svc.turn.partial_interval_ms;
        let c = &mut self.caller;
        let Some(item_id) = c.user_item else { return };
        let due = c
            .last_partial
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(interval));
        let Some(l) = c.listener.as_ref() else { return };
        if interval == 0
            || c.live.is_some()
            || c.partial.is_some()
            || !due
            || !l.in_speech()
            || l.buffered() < PARTIAL_MIN_SAMPLES
        {
            return;
        }
        let audio: Arc<[f32]> = l.snapshot().into();
        let stt = self.engines.stt.clone();
        let tx = self.partial_tx.clone();
        let cancel = self.cancel.child_token();
        c.partial = Some((item_id, cancel.clone()));
        c.last_partial = Some(Instant::now());
        tokio::spawn(async move {
            let text = stt.transcribe(audio, cancel).await.ok().map(|t| t.text);
            let _ = tx.send(Partial { item_id, text }).await;
        });
    }

    pub(super) async fn on_partial(&mut self, p: Partial) {
        let c = &mut self.caller;
        if c.partial.as_ref().is_some_and(|(i, _)| *i == p.item_id) {
            c.partial = None;
        }
        let text = p.text.unwrap_or_default().trim().to_string();
        if text.is_empty() || c.user_item != Some(p.item_id) || !c.in_speech() {
            return;
        }
        let turn_id = self.record.peek_turn_id();
        self.emit(CallEvent::Transcript {
            turn_id,
            item_id: p.item_id,
            text,
            is_final: false,
        })
        .await;
    }

    /// Bounds the turn: at the turn audio limit the turn is ended there.
    async fn enforce_turn_limit(&mut self) {
        let manual = self.caller.settings.mode == DetectionMode::Manual;
        let over = self
            .caller
            .listener
            .as_ref()
            .is_some_and(|l| l.over_limit());
        if over && (manual || self.caller.in_speech()) {
            let limit_ms = self.svc.limits.max_turn_audio_ms;
            self.send_error(
                ErrorCode::TurnAudioLimit,
                format!("turn audio reached the {limit_ms} ms limit; the turn was ended there"),
            )
            .await;
            self.commit().await;
        }
    }

    pub(super) async fn commit(&mut self) {
        let audio = self
            .caller
            .listener
            .as_mut()
            .map(|l| l.take_all())
            .unwrap_or_default();
        if audio.is_empty() {
            return self
                .send_error(
                    ErrorCode::EmptyTurn,
                    "commit with no audio since the last turn",
                )
                .await;
        }
        self.caller.cancel_partial();
        self.caller.live = None;
        self.caller.stop_judging();
        self.caller.verdict = None;
        let item_id = match self.caller.user_item.take() {
            Some(i) => i,
            None => self.record.new_item_id(),
        };
        self.cancel_pending();
        self.start_reply(
            TurnInput::Audio(audio.into()),
            Instant::now(),
            Some(item_id),
            None,
        )
        .await;
    }
}
