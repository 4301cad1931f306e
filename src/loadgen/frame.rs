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
    is_final: Value,
    /// Length of the base64 `audio`, read without copying it.
    #[serde(default, rename = "audio", deserialize_with = "str_len")]
    audio_len: Option<usize>,
    #[serde(default)]
    encoding: Value,
    #[serde(default)]
    sample_rate: Value,
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

    /// A frame that only comes once the server has ended the caller's turn: anything of the
    /// reply, or the final transcript (partial transcripts come while the caller talks).
    pub fn ends_speech(&self) -> bool {
        match self.kind.as_str() {
            "transcript" => self.is_final.as_bool().unwrap_or(true),
            "response" | "audio_response" | "response_done" => true,
            _ => false,
        }
    }

    /// How long the audio of an `audio_response` plays, in ms.
    pub fn audio_ms(&self) -> Option<f64> {
        let bytes = self.audio_len? * 3 / 4;
        let rate = self.sample_rate.as_f64().filter(|r| *r > 0.0)?;
        let samples = match self.encoding.as_str()? {
            "pcm16" => bytes / 2,
            "mulaw" => bytes,
            "wav" => bytes.saturating_sub(44) / 2,
            _ => return None,
        };
        Some(samples as f64 * 1000.0 / rate)
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

/// The length of a string field, or `None` for anything else; the string is not copied.
fn str_len<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess};

    struct Len;

    impl<'de> serde::de::Visitor<'de> for Len {
        type Value = Option<usize>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any value")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.len()))
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E: Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E: Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E: Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    d.deserialize_any(Len)
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
    fn reply_audio_length_and_partial_transcripts() {
        // 8000 bytes of pcm16 at 16 kHz: 250 ms.
        let audio = "A".repeat(8000 / 3 * 4 + 4);
        let text = format!(
            r#"{{"type":"audio_response","turn_id":1,"audio":"{audio}","encoding":"pcm16","sample_rate":16000}}"#
        );
        let ms = Frame::parse(&text).unwrap().audio_ms().unwrap();
        assert!((ms - 250.0).abs() < 0.1, "{ms}");
        let partial =
            Frame::parse(r#"{"type":"transcript","turn_id":2,"text":"What","is_final":false}"#)
                .unwrap();
        assert!(partial.is_turn_output() && !partial.ends_speech());
        let final_ =
            Frame::parse(r#"{"type":"transcript","turn_id":2,"text":"What","is_final":true}"#)
                .unwrap();
        assert!(final_.ends_speech());
    }

    #[test]
    fn a_changed_field_type_reads_as_absent() {
        let f = Frame::parse(r#"{"type":"response_done","turn_id":"t1","reason":"completed"}"#)
            .unwrap();
        assert_eq!(f.turn_id(), None);
        assert_eq!(f.reason(), Some("completed"));
        for audio in ["null", "5", "[1, {\"a\": 2}]", "{\"b\": [3]}"] {
            let text = format!(r#"{{"type":"audio_response","turn_id":1,"audio":{audio}}}"#);
            let f = Frame::parse(&text).unwrap();
            assert_eq!((f.turn_id(), f.audio_ms()), (Some(1), None), "{text}");
        }
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
