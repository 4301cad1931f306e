//! Twilio Media Streams' JSON messages: what Twilio sends on the media socket (`connected`,
//! `start`, `media`, `dtmf`, `mark`, `stop`) and what the server sends back (`media`, `mark`,
//! `clear`). Fields Twilio adds that the server does not read are ignored.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::protocol::ErrorCode;

/// A message from Twilio.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TwilioIn {
    Connected,
    Start {
        start: StreamStart,
    },
    Media {
        media: Media,
    },
    Dtmf {
        dtmf: Dtmf,
    },
    /// A mark the server sent, echoed when the audio before it has played.
    Mark {
        mark: Mark,
    },
    Stop,
    /// Events this server does not read.
    #[serde(other)]
    Other,
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

#[derive(Debug, Deserialize)]
pub struct Media {
    /// `inbound` (the caller); a bidirectional stream sends nothing else.
    #[serde(default)]
    pub track: Option<String>,
    /// Base64 mu-law at 8 kHz.
    pub payload: String,
}

#[derive(Debug, Deserialize)]
pub struct Dtmf {
    pub digit: String,
}

#[derive(Debug, Deserialize)]
pub struct Mark {
    pub name: String,
}

/// Parses one text frame from Twilio.
pub fn parse(text: &str) -> Result<Box<TwilioIn>, (ErrorCode, String)> {
    serde_json::from_str(text).map(Box::new).map_err(|e| {
        (
            ErrorCode::InvalidMessage,
            format!("not a Twilio message: {e}"),
        )
    })
}

/// `media`: base64 mu-law audio for the caller.
pub fn media(stream_sid: &str, payload: &str) -> String {
    json!({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}).to_string()
}

/// `mark`: echoed by Twilio once the audio sent before it has played.
pub fn mark(stream_sid: &str, name: &str) -> String {
    json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).to_string()
}

/// `clear`: drops the audio Twilio holds for the caller.
pub fn clear(stream_sid: &str) -> String {
    json!({"event": "clear", "streamSid": stream_sid}).to_string()
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
            TwilioIn::Start { start } => {
                assert_eq!(start.stream_sid, "MZ1");
                assert_eq!(start.custom_parameters["token"], "t");
                assert_eq!(start.media_format.sample_rate, 8000);
            }
            other => panic!("{other:?}"),
        }
        let dtmf = r#"{"event":"dtmf","streamSid":"MZ1","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}"#;
        assert!(matches!(*parse(dtmf).unwrap(), TwilioIn::Dtmf { dtmf } if dtmf.digit == "1"));
        assert!(matches!(
            *parse(r#"{"event":"future"}"#).unwrap(),
            TwilioIn::Other
        ));
        assert!(parse(r#"{"event":"media"}"#).is_err());
        assert!(parse("nope").is_err());
        let m: serde_json::Value = serde_json::from_str(&mark("MZ1", "3:1")).unwrap();
        assert_eq!(m["mark"]["name"], "3:1");
    }
}
