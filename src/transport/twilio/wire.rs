//! Twilio Media Streams' JSON messages: what Twilio sends on the media socket (`connected`,
//! `start`, `media`, `dtmf`, `mark`, `stop`) and what the server sends back (`media`, `mark`,
//! `clear`). Fields Twilio adds that the server does not read are ignored. Parsed messages are
//! the phone doors' [`PhoneIn`].

use std::collections::HashMap;

use serde::Deserialize;

use crate::protocol::ErrorCode;
use crate::transport::phone::json;
use crate::transport::phone::{PhoneIn, PhoneStart, Wire};

/// Twilio's `start`.
#[derive(Debug, Deserialize)]
pub struct TwilioStart {
    start: StreamStart,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStart {
    pub stream_sid: String,
    #[serde(default)]
    pub call_sid: String,
    /// The `<Parameter>`s of the TwiML `<Stream>`.
    #[serde(default)]
    pub custom_parameters: HashMap<String, String>,
    pub media_format: MediaFormat,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    #[serde(default = "one")]
    pub channels: u32,
}

fn one() -> u32 {
    1
}

/// Parses one text frame from Twilio.
pub fn parse(text: &str) -> Result<Box<PhoneIn>, (ErrorCode, String)> {
    json::parse(text, "Twilio", |TwilioStart { mut start }| {
        let f = &start.media_format;
        PhoneStart {
            mulaw_8k: f.encoding == "audio/x-mulaw" && f.sample_rate == 8_000 && f.channels == 1,
            format: format!("{} at {} Hz", f.encoding, f.sample_rate),
            pass: start.custom_parameters.remove("token"),
            stream_id: start.stream_sid,
            call_id: start.call_sid,
        }
    })
}

/// Twilio's frames for one stream, each naming it.
pub struct TwilioWire {
    stream_sid: String,
}

impl TwilioWire {
    pub fn boxed(stream_sid: &str) -> Box<dyn Wire> {
        Box::new(Self {
            stream_sid: stream_sid.to_string(),
        })
    }
}

impl Wire for TwilioWire {
    /// `media`: base64 mu-law audio for the caller.
    fn media(&self, payload: &str) -> String {
        serde_json::json!({"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}})
            .to_string()
    }

    /// `mark`: echoed by Twilio once the audio sent before it has played.
    fn mark(&self, name: &str) -> String {
        serde_json::json!({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            .to_string()
    }

    /// `clear`: drops the audio Twilio holds for the caller.
    fn clear(&self) -> String {
        serde_json::json!({"event": "clear", "streamSid": self.stream_sid}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_twilio_messages() {
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1",
            "streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"token":"t"},
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;
        match *parse(start).unwrap() {
            PhoneIn::Start(start) => {
                assert_eq!(start.stream_id, "MZ1");
                assert_eq!(start.call_id, "CA1");
                assert_eq!(start.pass.as_deref(), Some("t"));
                assert!(start.mulaw_8k);
            }
            other => panic!("{other:?}"),
        }
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert!(matches!(*parse(dtmf).unwrap(), PhoneIn::Dtmf(d) if d == "1"));
        assert!(matches!(
            *parse(r#"{"event":"future"}"#).unwrap(),
            PhoneIn::Other
        ));
        assert!(parse(r#"{"event":"media"}"#).is_err());
        assert!(parse("nope").is_err());
        let m: serde_json::Value =
            serde_json::from_str(&TwilioWire::boxed("MZ1").mark("3:1")).unwrap();
        assert_eq!(m["mark"]["name"], "3:1");
    }
}
