//! Server frames as the load generator sees them: only the fields it measures, each optional and
//! loosely typed, so new frame types and fields (or a changed field type) never stop a run.
//! Audio payloads are skipped without being copied.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct Frame {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    turn_id: Value,
    #[serde(default)]
    reason: Value,
    #[serde(default)]
    code: Value,
    #[serde(default)]
    turn_detection: Value,
    #[serde(default)]
    stt_ms: Value,
    #[serde(default)]
    llm_first_token_ms: Value,
    #[serde(default)]
    tts_first_audio_ms: Value,
    #[serde(default)]
    voice_to_voice_ms: Value,
    #[serde(default)]
    end_of_speech_ms: Value,
}

/// The stage timings a `metrics` frame reports, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerTimings {
    pub stt_ms: Option<f64>,
    pub llm_first_token_ms: Option<f64>,
    pub tts_first_audio_ms: Option<f64>,
    pub voice_to_voice_ms: Option<f64>,
    pub end_of_speech_ms: Option<f64>,
}

impl Frame {
    /// `None` for text that is not a JSON object.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn turn_id(&self) -> Option<u64> {
        self.turn_id.as_u64()
    }

    pub fn reason(&self) -> Option<&str> {
        self.reason.as_str()
    }

    pub fn code(&self) -> &str {
        self.code.as_str().unwrap_or("unknown")
    }

    /// `call_started.turn_detection.silence_duration_ms`, when the server states it.
    pub fn silence_ms(&self) -> Option<u64> {
        self.turn_detection.get("silence_duration_ms")?.as_u64()
    }

    /// Frames that belong to a reply; a caller turn is recognised by the first of them.
    pub fn is_turn_output(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "transcript" | "response" | "audio_response" | "response_done"
        )
    }

    pub fn timings(&self) -> ServerTimings {
        ServerTimings {
            stt_ms: self.stt_ms.as_f64(),
            llm_first_token_ms: self.llm_first_token_ms.as_f64(),
            tts_first_audio_ms: self.tts_first_audio_ms.as_f64(),
            voice_to_voice_ms: self.voice_to_voice_ms.as_f64(),
            end_of_speech_ms: self.end_of_speech_ms.as_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_fields_are_accepted() {
        let f =
            Frame::parse(r#"{"type":"speech_started","item_id":"item_1","at_ms":120}"#).unwrap();
        assert_eq!(f.kind, "speech_started");
        assert_eq!(f.turn_id(), None);
        let f = Frame::parse(
            r#"{"type":"audio_response","turn_id":3,"item_id":"x","audio":"AAAA","seq":0}"#,
        )
        .unwrap();
        assert!(f.is_turn_output());
        assert_eq!(f.turn_id(), Some(3));
    }

    #[test]
    fn a_changed_field_type_reads_as_absent() {
        let f = Frame::parse(r#"{"type":"response_done","turn_id":"t1","reason":"completed"}"#)
            .unwrap();
        assert_eq!(f.turn_id(), None);
        assert_eq!(f.reason(), Some("completed"));
        assert!(Frame::parse("[1, 2]").is_none());
    }

    #[test]
    fn metrics_and_call_started_fields() {
        let f = Frame::parse(
            r#"{"type":"metrics","turn_id":1,"stt_ms":12.5,"voice_to_voice_ms":40,"total_ms":50}"#,
        )
        .unwrap();
        let t = f.timings();
        assert_eq!(t.stt_ms, Some(12.5));
        assert_eq!(t.voice_to_voice_ms, Some(40.0));
        assert_eq!(t.end_of_speech_ms, None);
        let f = Frame::parse(
            r#"{"type":"call_started","turn_detection":{"type":"server_vad","silence_duration_ms":450}}"#,
        )
        .unwrap();
        assert_eq!(f.silence_ms(), Some(450));
    }
}
