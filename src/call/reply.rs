//! The agent's replies. Each reply is a turn task whose events come back here, where they get
//! the turn and item ids, are encoded in the call's output format and sent, and update history.
//! A speculative reply (started while the caller pauses) keeps its events until the caller's
//! turn is known to be over, then plays them at once; if the caller goes on, it is dropped
//! unseen. Interrupting a reply cuts its history entry to what the caller heard.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::playback::PlaybackTrack;
use super::session::Session;
use super::turn::{ms_since, run_turn, TurnEvent, TurnInput, TurnRequest, TurnSink};
use crate::audio::encode::OutputEncoder;
use crate::engines::llm::Role;
use crate::engines::EngineError;
use crate::protocol::{DoneReason, ErrorCode, ServerMessage};

/// Events a speculative reply may hold back before it is dropped as runaway.
const MAX_HELD_EVENTS: usize = 4096;

/// A reply prepared while the caller pauses; nothing of it has been sent.
pub struct Pending {
    run: u64,
    cancel: CancellationToken,
    held: Vec<TurnEvent>,
    /// End of the caller's speech.
    anchor: Instant,
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
    encoder: Option<OutputEncoder>,
    seq: u64,
    track: PlaybackTrack,
    anchor: Instant,
    pub end_of_speech_ms: Option<f64>,
    first_audio_ms: Option<f64>,
}

impl Reply {
    /// Generating, or its audio still playing, and not interrupted.
    pub fn speaking(&self, now: Instant) -> bool {
        !self.interrupted && (self.running || self.track.playing(now))
    }
}

impl Session {
    /// Spawns a turn task for the call; returns its key and token.
    fn spawn_turn(
        &mut self,
        input: TurnInput,
        anchor: Instant,
    ) -> Option<(u64, CancellationToken)> {
        let call = self.call.as_ref()?;
        let run = self.next_run;
        self.next_run += 1;
        let cancel = call.cancel.child_token();
        let request = TurnRequest {
            engines: call.engines.clone(),
            agent: call.agent.clone(),
            system: call.system.clone(),
            session_id: call.id().to_string(),
            history: call.live.record.history().messages(),
            input,
            anchor,
        };
        let sink = TurnSink {
            turn_id: run,
            tx: self.turn_tx.clone(),
        };
        let span = info_span!("turn", call_id = %call.id(), run);
        tokio::spawn(run_turn(request, cancel.clone(), sink).instrument(span));
        Some((run, cancel))
    }

    pub(super) fn agent_speaking(&self) -> bool {
        let now = Instant::now();
        self.call
            .as_ref()
            .and_then(|c| c.reply.as_ref())
            .is_some_and(|r| r.speaking(now))
    }

    fn new_reply(
        &mut self,
        run: u64,
        cancel: CancellationToken,
        anchor: Instant,
        user_item: Option<u64>,
        turn_id: Option<u64>,
    ) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let rate = call.engines.tts.sample_rate();
        let record = &call.live.record;
        let turn_id = turn_id.unwrap_or_else(|| record.new_turn_id());
        if let Some(old) = call.reply.take().filter(|r| r.interrupted) {
            call.cut = Some(old);
        }
        call.reply = Some(Reply {
            run,
            turn_id,
            item_id: record.new_item_id(),
            user_item,
            cancel,
            running: true,
            interrupted: false,
            encoder: OutputEncoder::new(rate, call.output_format).ok(),
            seq: 0,
            track: PlaybackTrack::default(),
            anchor,
            end_of_speech_ms: None,
            first_audio_ms: None,
        });
    }

    /// Starts a reply now, interrupting the current one. `turn_id` is given for the greeting
    /// (turn 0), otherwise the next number.
    pub(super) async fn start_reply(
        &mut self,
        input: TurnInput,
        anchor: Instant,
        user_item: Option<u64>,
        turn_id: Option<u64>,
    ) {
        self.interrupt_reply(false).await;
        self.cancel_pending();
        if let Some((run, cancel)) = self.spawn_turn(input, anchor) {
            self.new_reply(run, cancel, anchor, user_item, turn_id);
        }
    }

    /// Prepares a reply to the caller's words so far, held back until the turn ends.
    pub(super) fn start_pending(&mut self, input: TurnInput, anchor: Instant) {
        self.cancel_pending();
        if let Some((run, cancel)) = self.spawn_turn(input, anchor) {
            if let Some(call) = self.call.as_mut() {
                call.pending = Some(Pending {
                    run,
                    cancel,
                    held: Vec::new(),
                    anchor,
                });
            }
        }
    }

    pub(super) fn cancel_pending(&mut self) {
        if let Some(p) = self.call.as_mut().and_then(|c| c.pending.take()) {
            p.cancel.cancel();
        }
    }

    /// The caller's turn is over: makes the speculative reply the current one and sends what
    /// it has so far. False when there is none.
    pub(super) async fn adopt_pending(&mut self, user_item: u64) -> bool {
        let Some(pending) = self.call.as_mut().and_then(|c| c.pending.take()) else {
            return false;
        };
        self.interrupt_reply(false).await;
        self.new_reply(
            pending.run,
            pending.cancel,
            pending.anchor,
            Some(user_item),
            None,
        );
        if let Some(r) = self.call.as_mut().and_then(|c| c.reply.as_mut()) {
            r.end_of_speech_ms = Some(ms_since(pending.anchor));
        }
        for event in pending.held {
            self.on_reply_event(event).await;
        }
        true
    }

    pub(super) async fn on_turn_event(&mut self, run: u64, event: TurnEvent) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if let Some(p) = call.pending.as_mut().filter(|p| p.run == run) {
            p.held.push(event);
            if p.held.len() > MAX_HELD_EVENTS {
                self.cancel_pending();
            }
            return;
        }
        if call
            .reply
            .as_ref()
            .is_some_and(|r| r.run == run && r.running)
        {
            self.on_reply_event(event).await;
        }
    }

    async fn on_reply_event(&mut self, event: TurnEvent) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let rate = call.engines.tts.sample_rate();
        let format = call.output_format;
        let Some(r) = call.reply.as_mut() else {
            return;
        };
        let (turn_id, item_id) = (r.turn_id, r.item_id);
        let user_item = r.user_item.unwrap_or(item_id);
        match event {
            TurnEvent::Transcript(text) => {
                call.live
                    .record
                    .history()
                    .push_item(Role::User, text.clone(), Some(user_item));
                self.send(ServerMessage::Transcript {
                    turn_id,
                    item_id: user_item,
                    text,
                    is_final: true,
                })
                .await;
            }
            TurnEvent::NoSpeech => {
                call.reply = None;
                self.send(ServerMessage::Transcript {
                    turn_id,
                    item_id: user_item,
                    text: String::new(),
                    is_final: true,
                })
                .await;
                self.send(ServerMessage::ResponseDone {
                    turn_id,
                    item_id,
                    reason: DoneReason::NoSpeech,
                })
                .await;
            }
            TurnEvent::Delta(delta) => {
                self.send(ServerMessage::Response {
                    turn_id,
                    item_id,
                    delta: Some(delta),
                    text: None,
                    is_final: false,
                })
                .await;
            }
            TurnEvent::Audio { samples, sentence } => {
                let now = Instant::now();
                let ms = samples.len() as f64 * 1000.0 / f64::from(rate.max(1));
                r.track.sent(sentence.as_deref(), ms, now);
                r.first_audio_ms.get_or_insert_with(|| ms_since(r.anchor));
                let bytes = r
                    .encoder
                    .as_mut()
                    .map(|e| e.encode(&samples))
                    .unwrap_or_default();
                if let Some(m) = audio_message(r, format, &bytes) {
                    self.send(m).await;
                }
            }
            TurnEvent::Done { reply, mut timings } => {
                let tail = r.encoder.as_mut().map(|e| e.finish()).unwrap_or_default();
                let tail_msg = audio_message(r, format, &tail);
                r.running = false;
                timings.end_of_speech_ms = r.end_of_speech_ms;
                timings.voice_to_voice_ms = r.first_audio_ms;
                call.live
                    .record
                    .history()
                    .push_item(Role::Assistant, reply.clone(), Some(item_id));
                call.live.record.turns.fetch_add(1, Ordering::SeqCst);
                self.state.metrics.turn(&timings);
                if let Some(m) = tail_msg {
                    self.send(m).await;
                }
                self.send(ServerMessage::Response {
                    turn_id,
                    item_id,
                    delta: None,
                    text: Some(reply),
                    is_final: true,
                })
                .await;
                self.send(ServerMessage::ResponseDone {
                    turn_id,
                    item_id,
                    reason: DoneReason::Completed,
                })
                .await;
                self.send(ServerMessage::Metrics { turn_id, timings }).await;
            }
            TurnEvent::Failed { error } => {
                call.reply = None;
                let code = match error {
                    EngineError::Busy { .. } => ErrorCode::EngineBusy,
                    _ => ErrorCode::EngineError,
                };
                tracing::warn!(turn_id, %error, "turn failed");
                self.send_error(code, error.to_string(), false).await;
                self.send(ServerMessage::ResponseDone {
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
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(r) = call
            .reply
            .as_mut()
            .filter(|r| r.speaking(now) && (playing || r.running))
        else {
            return;
        };
        r.cancel.cancel();
        r.interrupted = true;
        let was_running = std::mem::replace(&mut r.running, false);
        let played = r.track.played_ms(now);
        let heard = r.track.heard_text(played);
        let (turn_id, item_id) = (r.turn_id, r.item_id);
        {
            let mut history = call.live.record.history();
            if was_running {
                history.push_item(Role::Assistant, heard.clone(), Some(item_id));
            } else {
                history.set_item(item_id, &heard);
            }
        }
        self.send(ServerMessage::Interrupted {
            turn_id,
            item_id,
            played_ms: played.round() as u64,
            text: heard,
        })
        .await;
        if was_running {
            self.send(ServerMessage::ResponseDone {
                turn_id,
                item_id,
                reason: DoneReason::Interrupted,
            })
            .await;
        }
    }

    /// A `playback` report. After an interruption, the client's final report corrects what
    /// history keeps of the reply.
    pub(super) fn on_playback(&mut self, item_id: u64, played_ms: u64) {
        let now = Instant::now();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(r) = [call.reply.as_mut(), call.cut.as_mut()]
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
            call.live.record.history().set_item(item_id, &heard);
        }
    }
}

fn audio_message(
    r: &mut Reply,
    format: crate::protocol::AudioFormat,
    bytes: &[u8],
) -> Option<ServerMessage> {
    if bytes.is_empty() {
        return None;
    }
    let seq = r.seq;
    r.seq += 1;
    Some(ServerMessage::AudioResponse {
        turn_id: r.turn_id,
        item_id: r.item_id,
        audio: crate::audio::decode::base64_encode(bytes),
        encoding: format.encoding,
        sample_rate: format.sample_rate,
        seq,
    })
}
