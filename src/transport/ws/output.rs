//! Call events as voxwire server messages: reply audio encoded in the call's `output_format`
//! (one encoder per reply, its tail flushed when the reply's text is final) and base64.

use crate::audio::decode::base64_encode;
use crate::audio::encode::OutputEncoder;
use crate::call::{CallEvent, OperatorEventKind};
use crate::protocol::{AudioFormat, ReplyFrom, ServerMessage};

pub struct Output {
    format: AudioFormat,
    /// The reply being encoded: its item, encoder and next audio `seq`.
    current: Option<(u64, OutputEncoder, u64)>,
    /// The operator's latest line: its frames carry `from: operator`.
    operator_item: Option<u64>,
}

impl Output {
    pub fn new(format: AudioFormat) -> Self {
        Self {
            format,
            current: None,
            operator_item: None,
        }
    }

    fn from(&self, item_id: u64) -> Option<ReplyFrom> {
        (self.operator_item == Some(item_id)).then_some(ReplyFrom::Operator)
    }

    fn audio(&mut self, turn_id: u64, item_id: u64, bytes: Vec<u8>) -> Option<ServerMessage> {
        let (_, _, seq) = self.current.as_mut()?;
        if bytes.is_empty() {
            return None;
        }
        let n = *seq;
        *seq += 1;
        Some(ServerMessage::AudioResponse {
            turn_id,
            item_id,
            audio: base64_encode(&bytes),
            encoding: self.format.encoding,
            sample_rate: self.format.sample_rate,
            seq: n,
            from: self.from(item_id),
        })
    }

    /// The messages for one event, in order.
    pub fn translate(&mut self, event: CallEvent) -> Vec<ServerMessage> {
        match event {
            CallEvent::SpeechStarted {
                item_id,
                audio_start_ms,
            } => vec![ServerMessage::SpeechStarted {
                item_id,
                audio_start_ms,
            }],
            CallEvent::SpeechStopped {
                item_id,
                audio_end_ms,
            } => vec![ServerMessage::SpeechStopped {
                item_id,
                audio_end_ms,
            }],
            CallEvent::Transcript {
                turn_id,
                item_id,
                text,
                is_final,
            } => vec![ServerMessage::Transcript {
                turn_id,
                item_id,
                text,
                is_final,
            }],
            CallEvent::ResponseDelta {
                turn_id,
                item_id,
                delta,
            } => vec![ServerMessage::Response {
                turn_id,
                item_id,
                delta: Some(delta),
                text: None,
                is_final: false,
                from: self.from(item_id),
            }],
            CallEvent::Audio {
                turn_id,
                item_id,
                samples,
                sample_rate,
            } => {
                if self.current.as_ref().map(|c| c.0) != Some(item_id) {
                    self.current = OutputEncoder::new(sample_rate, self.format)
                        .ok()
                        .map(|e| (item_id, e, 0));
                }
                let bytes = match self.current.as_mut() {
                    Some((_, e, _)) => e.encode(&samples),
                    None => return Vec::new(),
                };
                self.audio(turn_id, item_id, bytes).into_iter().collect()
            }
            CallEvent::ResponseText {
                turn_id,
                item_id,
                text,
            } => {
                let mut out = Vec::new();
                if self.current.as_ref().map(|c| c.0) == Some(item_id) {
                    let tail = match self.current.as_mut() {
                        Some((_, e, _)) => e.finish(),
                        None => Vec::new(),
                    };
                    out.extend(self.audio(turn_id, item_id, tail));
                    self.current = None;
                }
                out.push(ServerMessage::Response {
                    turn_id,
                    item_id,
                    delta: None,
                    text: Some(text),
                    is_final: true,
                    from: self.from(item_id),
                });
                out
            }
            CallEvent::ResponseDone {
                turn_id,
                item_id,
                reason,
            } => vec![ServerMessage::ResponseDone {
                turn_id,
                item_id,
                reason,
                from: self.from(item_id),
            }],
            CallEvent::Interrupted {
                turn_id,
                item_id,
                played_ms,
                heard,
            } => {
                // No more of this reply's audio, not even its tail.
                if self.current.as_ref().map(|c| c.0) == Some(item_id) {
                    self.current = None;
                }
                vec![ServerMessage::Interrupted {
                    turn_id,
                    item_id,
                    played_ms,
                    text: heard,
                }]
            }
            CallEvent::Operator { kind, item_id, .. } => match kind {
                OperatorEventKind::TakeoverStarted => vec![ServerMessage::TakeoverStarted],
                OperatorEventKind::TakeoverEnded => vec![ServerMessage::TakeoverEnded],
                OperatorEventKind::Said => {
                    self.operator_item = item_id;
                    Vec::new()
                }
                OperatorEventKind::Note | OperatorEventKind::Ended => Vec::new(),
            },
            // The client sent the report (or the keys); nothing to tell it.
            CallEvent::Heard { .. } | CallEvent::Dtmf { .. } => Vec::new(),
            // Tool calls are the agent's business: monitors and the event log see them.
            CallEvent::Tool(_) | CallEvent::Flow { .. } | CallEvent::Queued => Vec::new(),
            CallEvent::Metrics { turn_id, timings } => {
                vec![ServerMessage::Metrics {
                    turn_id,
                    timings: *timings,
                }]
            }
            CallEvent::DetectionUpdated(turn_detection) => {
                vec![ServerMessage::CallUpdated { turn_detection }]
            }
            CallEvent::Error { code, message } => vec![ServerMessage::error(code, message, false)],
            CallEvent::Ended {
                call_id,
                reason,
                turns,
            } => vec![ServerMessage::CallEnded {
                call_id,
                reason,
                turns,
            }],
        }
    }
}
