//! Call events as a carrier's frames: reply audio as mu-law at 8 kHz in 20 ms `media` frames, a
//! `mark` after each piece of a reply (named `<item>:<piece>`), `clear` when a reply is cut.
//! The carrier echoes each mark once the audio before it has played: [`Output::echoed`] turns
//! the echo into how many ms of the reply the caller has heard.

use std::collections::VecDeque;

use super::Wire;
use crate::audio::decode::base64_encode;
use crate::audio::encode::OutputEncoder;
use crate::call::CallEvent;
use crate::protocol::{AudioFormat, Encoding};

/// The phone's audio: mu-law at 8 kHz.
pub const PHONE_FORMAT: AudioFormat = AudioFormat {
    encoding: Encoding::Mulaw,
    sample_rate: 8_000,
};

/// One 20 ms frame of 8 kHz mu-law.
pub const FRAME_BYTES: usize = 160;
/// Mu-law bytes per ms.
const BYTES_PER_MS: u64 = 8;
/// Mu-law silence, to fill a reply's last frame.
const SILENCE: u8 = 0xFF;
/// Marks kept while waiting for their echo; past that the oldest are forgotten (their echo
/// then reports nothing; a later one does).
const MAX_MARKS: usize = 512;

/// The reply being sent.
struct Reply {
    item_id: u64,
    encoder: OutputEncoder,
    /// Encoded bytes short of a whole frame, sent with the next ones.
    carry: Vec<u8>,
    /// Bytes of this reply sent so far.
    sent: u64,
    /// The next piece's number.
    piece: u64,
}

pub struct Output {
    wire: Box<dyn Wire>,
    current: Option<Reply>,
    /// Marks sent and not yet echoed, oldest first: item, piece, and the ms of the item's
    /// audio sent before the mark.
    marks: VecDeque<(u64, u64, u64)>,
}

impl Output {
    pub fn new(wire: Box<dyn Wire>) -> Self {
        Self {
            wire,
            current: None,
            marks: VecDeque::new(),
        }
    }

    /// The frames for one event, in order.
    pub fn translate(&mut self, event: &CallEvent) -> Vec<String> {
        match event {
            CallEvent::Audio {
                item_id,
                samples,
                sample_rate,
                ..
            } => {
                if self.current.as_ref().map(|r| r.item_id) != Some(*item_id) {
                    self.current =
                        OutputEncoder::new(*sample_rate, PHONE_FORMAT)
                            .ok()
                            .map(|encoder| Reply {
                                item_id: *item_id,
                                encoder,
                                carry: Vec::new(),
                                sent: 0,
                                piece: 0,
                            });
                }
                let Some(r) = self.current.as_mut() else {
                    return Vec::new();
                };
                let bytes = r.encoder.encode(samples);
                r.carry.extend_from_slice(&bytes);
                self.send_piece(false)
            }
            CallEvent::ResponseText { item_id, .. }
                if self.current.as_ref().map(|r| r.item_id) == Some(*item_id) =>
            {
                let out = self.send_piece(true);
                self.current = None;
                out
            }
            CallEvent::Interrupted { item_id, .. } => {
                if self.current.as_ref().map(|r| r.item_id) == Some(*item_id) {
                    self.current = None;
                }
                // What the carrier echoes after a `clear` was never heard.
                self.marks.retain(|m| m.0 != *item_id);
                vec![self.wire.clear()]
            }
            _ => Vec::new(),
        }
    }

    /// The whole frames of the current reply, then its mark; `last` flushes the encoder and
    /// fills the last frame with silence.
    fn send_piece(&mut self, last: bool) -> Vec<String> {
        let Some(r) = self.current.as_mut() else {
            return Vec::new();
        };
        if last {
            let tail = r.encoder.finish();
            r.carry.extend_from_slice(&tail);
            let short = (FRAME_BYTES - r.carry.len() % FRAME_BYTES) % FRAME_BYTES;
            r.carry.resize(r.carry.len() + short, SILENCE);
        }
        let whole = r.carry.len() / FRAME_BYTES * FRAME_BYTES;
        if whole == 0 {
            return Vec::new();
        }
        let mut out: Vec<String> = r.carry[..whole]
            .chunks(FRAME_BYTES)
            .map(|f| self.wire.media(&base64_encode(f)))
            .collect();
        r.carry.drain(..whole);
        r.sent += whole as u64;
        let name = format!("{}:{}", r.item_id, r.piece);
        self.marks
            .push_back((r.item_id, r.piece, r.sent / BYTES_PER_MS));
        r.piece += 1;
        if self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
        out.push(self.wire.mark(&name));
        out
    }

    /// A mark the carrier echoed: the reply item and how many ms of it have played. `None` for a
    /// mark this server did not send or no longer waits for.
    pub fn echoed(&mut self, name: &str) -> Option<(u64, u64)> {
        let (item, piece) = name.split_once(':')?;
        let (item, piece): (u64, u64) = (item.parse().ok()?, piece.parse().ok()?);
        let at = self
            .marks
            .iter()
            .position(|m| m.0 == item && m.1 == piece)?;
        let (_, _, played_ms) = self.marks.drain(..=at).next_back()?;
        Some((item, played_ms))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Frames as Twilio writes them.
    struct TestWire;

    impl Wire for TestWire {
        fn media(&self, payload: &str) -> String {
            serde_json::json!({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})
                .to_string()
        }
        fn mark(&self, name: &str) -> String {
            serde_json::json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}})
                .to_string()
        }
        fn clear(&self) -> String {
            serde_json::json!({"event": "clear", "streamSid": "MZ1"}).to_string()
        }
    }

    fn audio(item_id: u64, ms: usize) -> CallEvent {
        CallEvent::Audio {
            turn_id: 1,
            item_id,
            samples: Arc::from(vec![0.1f32; 16 * ms]),
            sample_rate: 16_000,
        }
    }

    fn event(frame: &str) -> serde_json::Value {
        serde_json::from_str(frame).unwrap()
    }

    #[test]
    fn replies_go_out_in_frames_with_marks_and_echoes_report_playback() {
        let mut o = Output::new(Box::new(TestWire));
        let first = o.translate(&audio(4, 105));
        let kinds: Vec<String> = first
            .iter()
            .map(|f| event(f)["event"].as_str().unwrap().to_string())
            .collect();
        assert!(
            kinds.iter().filter(|k| *k == "media").count() >= 4,
            "{kinds:?}"
        );
        assert_eq!(kinds.last().unwrap(), "mark");
        for f in first.iter().filter(|f| event(f)["event"] == "media") {
            let payload = event(f)["media"]["payload"].as_str().unwrap().to_string();
            let bytes = crate::audio::decode::base64_decode(&payload).unwrap();
            assert_eq!(bytes.len(), FRAME_BYTES);
            assert_eq!(event(f)["streamSid"], "MZ1");
        }
        let done = o.translate(&CallEvent::ResponseText {
            turn_id: 1,
            item_id: 4,
            text: "Hello.".into(),
        });
        assert_eq!(event(done.last().unwrap())["mark"]["name"], "4:1");
        let (_, played_first) = o.echoed("4:0").unwrap();
        assert_eq!(played_first % 20, 0);
        let (item, played_all) = o.echoed("4:1").unwrap();
        assert_eq!(item, 4);
        assert!(played_all >= 100, "{played_all}");
        assert_eq!(o.echoed("4:1"), None);
        assert_eq!(o.echoed("junk"), None);
    }

    #[test]
    fn a_cut_reply_clears_and_forgets_its_marks() {
        let mut o = Output::new(Box::new(TestWire));
        o.translate(&audio(7, 200));
        let out = o.translate(&CallEvent::Interrupted {
            turn_id: 1,
            item_id: 7,
            played_ms: 40,
            heard: String::new(),
        });
        assert_eq!(
            event(&out[0]),
            serde_json::json!({"event": "clear", "streamSid": "MZ1"})
        );
        assert_eq!(o.echoed("7:0"), None);
        assert!(o
            .translate(&CallEvent::ResponseText {
                turn_id: 1,
                item_id: 7,
                text: String::new(),
            })
            .is_empty());
    }
}
