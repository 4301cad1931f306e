//! Telnyx media streaming's JSON messages: what Telnyx sends on the media socket (`connected`,
//! `start`, `media`, `dtmf`, `mark`, `stop`, `error`) and what the server sends back on a
//! bidirectional RTP stream (`media`, `mark`, `clear`). Unlike Twilio's, the frames back name
//! no stream: the socket is the stream. Fields the server does not read are ignored.

use serde::Deserialize;
use serde_json::{json as json_value, Value};

use crate::protocol::ErrorCode;
use crate::transport::phone::json;
use crate::transport::phone::{PhoneIn, PhoneStart, Wire};

/// Telnyx's `start`.
#[derive(Debug, Deserialize)]
struct TelnyxStart {
    #[serde(default)]
    stream_id: String,
    start: StreamStart,
}

#[derive(Debug, Deserialize)]
struct StreamStart {
    #[serde(default)]
    call_control_id: String,
    media_format: MediaFormat,
}

#[derive(Debug, Deserialize)]
struct MediaFormat {
    encoding: String,
    /// A number (Telnyx has also been seen to send it as a string).
    sample_rate: Value,
    #[serde(default)]
    channels: Option<Value>,
}

/// A number, or a string holding one.
fn number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// Parses one text frame from Telnyx.
pub fn parse(text: &str) -> Result<Box<PhoneIn>, (ErrorCode, String)> {
    json::parse(text, "Telnyx", |TelnyxStart { stream_id, start }| {
        let f = &start.media_format;
        let rate = number(&f.sample_rate);
        let channels = f.channels.as_ref().map_or(Some(1), number);
        PhoneStart {
            mulaw_8k: f.encoding.eq_ignore_ascii_case("PCMU")
                && rate == Some(8_000)
                && channels == Some(1),
            format: format!("{} at {} Hz", f.encoding, f.sample_rate),
            // The pass comes in the socket's URL.
            pass: None,
            stream_id,
            call_id: start.call_control_id,
        }
    })
}

/// Telnyx's frames back.
pub struct TelnyxWire;

impl TelnyxWire {
    pub fn boxed(_stream_id: &str) -> Box<dyn Wire> {
        Box::new(Self)
    }
}

impl Wire for TelnyxWire {
    /// `media`: base64 mu-law (PCMU) RTP payload for the caller.
    fn media(&self, payload: &str) -> String {
        json_value!({"event": "media", "media": {"payload": payload}}).to_string()
    }

    /// `mark`: sent back by Telnyx once the audio before it has played.
    fn mark(&self, name: &str) -> String {
        json_value!({"event": "mark", "mark": {"name": name}}).to_string()
    }

    /// `clear`: drops the audio Telnyx holds for the caller.
    fn clear(&self) -> String {
        json_value!({"event": "clear"}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_telnyx_messages() {
        let start = r#"{"event":"start","sequence_number":"1","start":{"user_id":"u1",
            "call_control_id":"v3:abc","client_state":null,"from":"+15551230000","to":"+15550001111",
            "media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}},"stream_id":"32DE"}"#;
        match *parse(start).unwrap() {
            PhoneIn::Start(s) => {
                assert_eq!(
                    (s.stream_id.as_str(), s.call_id.as_str()),
                    ("32DE", "v3:abc")
                );
                assert!(s.mulaw_8k);
            }
            other => panic!("{other:?}"),
        }
        let l16 = r#"{"event":"start","stream_id":"1","start":{"call_control_id":"v3:abc",
            "media_format":{"encoding":"L16","sample_rate":"16000","channels":1}}}"#;
        assert!(matches!(*parse(l16).unwrap(), PhoneIn::Start(s) if !s.mulaw_8k));
        let media = r#"{"event":"media","sequence_number":"4","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"//8="},"stream_id":"32DE"}"#;
        assert!(matches!(*parse(media).unwrap(), PhoneIn::Media(p) if p == "//8="));
        let theirs = r#"{"event":"media","media":{"track":"outbound","payload":"//8="}}"#;
        assert!(matches!(*parse(theirs).unwrap(), PhoneIn::Other));
        let dtmf = r#"{"event":"dtmf","stream_id":"32DE","occurred_at":"2026-01-01T00:00:00Z","sequence_number":"5","dtmf":{"digit":"7"}}"#;
        assert!(matches!(*parse(dtmf).unwrap(), PhoneIn::Dtmf(d) if d == "7"));
        let stop = r#"{"event":"stop","sequence_number":"9","stop":{"user_id":"u1","call_control_id":"v3:abc"},"stream_id":"32DE"}"#;
        assert!(matches!(*parse(stop).unwrap(), PhoneIn::Stop));
        assert!(matches!(
            *parse(r#"{"event":"connected","version":"1.0.0"}"#).unwrap(),
            PhoneIn::Other
        ));
        assert!(parse(r#"{"event":"media"}"#).is_err());
        let clear: Value = serde_json::from_str(&TelnyxWire.clear()).unwrap();
        assert_eq!(clear, json_value!({"event": "clear"}));
    }
}
