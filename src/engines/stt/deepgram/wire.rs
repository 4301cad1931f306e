//! The Deepgram live socket's messages: audio as 16-bit PCM, control messages, replies parsed,
//! the utterance text built from finals and interims, and a refused upgrade in words.

use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::{header, StatusCode};
use tokio_tungstenite::tungstenite::Message;

use crate::engines::http::provider_message;

/// A control message: `KeepAlive`, `Finalize` or `CloseStream`.
pub(super) fn control(kind: &str) -> Message {
    Message::text(format!(r#"{{"type":"{kind}"}}"#))
}

/// An upgrade refused with a status: what went wrong, whether to retry, and the wait the
/// provider asked for.
pub(super) fn rejected(response: &Response) -> (String, bool, Option<Duration>) {
    let status = response.status();
    let wait = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)));
    let message = match status {
        // The body of a refused key may echo the key: never shown.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "{status}: the provider rejected the API key (check the key's environment variable)"
        ),
        _ => {
            let body = response.body().as_deref().unwrap_or_default();
            match provider_message(&String::from_utf8_lossy(body)) {
                Some(m) => format!("{status}: {m}"),
                None => status.to_string(),
            }
        }
    };
    let retryable = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error();
    (message, retryable, wait)
}

/// Samples in [-1, 1] as little-endian 16-bit PCM, clamped.
pub(super) fn to_pcm16(audio: &[f32]) -> Vec<u8> {
    audio
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect()
}

/// One reply of the live socket.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    Results {
        transcript: String,
        is_final: bool,
        from_finalize: bool,
    },
    Metadata,
    Error(String),
    Other,
}

pub(super) fn parse_reply(text: &str) -> Result<Reply, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|_| "the provider sent a reply that is not JSON")?;
    let flag = |name: &str| v.get(name).and_then(Value::as_bool).unwrap_or(false);
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("Results") => Reply::Results {
            transcript: v
                .pointer("/channel/alternatives/0/transcript")
                .and_then(Value::as_str)
                .ok_or("the provider sent results without a transcript")?
                .to_string(),
            is_final: flag("is_final"),
            from_finalize: flag("from_finalize"),
        },
        Some("Metadata") => Reply::Metadata,
        Some("Error") => Reply::Error(
            ["/description", "/message", "/err_msg"]
                .iter()
                .find_map(|p| v.pointer(p).and_then(Value::as_str))
                .unwrap_or("the provider reported an error")
                .to_string(),
        ),
        _ => Reply::Other,
    })
}

/// The finals heard so far and the latest interim.
#[derive(Default)]
pub(super) struct Utterance {
    finals: Vec<String>,
    interim: String,
}

impl Utterance {
    pub(super) fn apply(&mut self, transcript: &str, is_final: bool) {
        let transcript = transcript.trim();
        if is_final {
            if !transcript.is_empty() {
                self.finals.push(transcript.to_string());
            }
            self.interim.clear();
        } else {
            self.interim = transcript.to_string();
        }
    }

    pub(super) fn text(&self) -> String {
        self.finals.join(" ")
    }

    /// The whole utterance so far, for an interim.
    pub(super) fn so_far(&self) -> String {
        let mut text = self.text();
        if !self.interim.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(&self.interim);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        let r = r#"{"type":"Results","is_final":true,"speech_final":true,"from_finalize":true,
            "channel":{"alternatives":[{"transcript":"hello there","confidence":0.9}]}}"#;
        assert_eq!(
            parse_reply(r),
            Ok(Reply::Results {
                transcript: "hello there".into(),
                is_final: true,
                from_finalize: true
            })
        );
        assert_eq!(
            parse_reply(r#"{"type":"Metadata","request_id":"x"}"#),
            Ok(Reply::Metadata)
        );
        assert_eq!(parse_reply(r#"{"type":"UtteranceEnd"}"#), Ok(Reply::Other));
        assert!(parse_reply(r#"{"type":"Results","channel":"#).is_err());
        assert!(parse_reply(r#"{"type":"Results","is_final":true}"#).is_err());
    }

    #[test]
    fn finals_and_interims_make_the_utterance() {
        let mut u = Utterance::default();
        u.apply("hello", false);
        assert_eq!(u.so_far(), "hello");
        u.apply("hello there", true);
        u.apply("", true);
        u.apply("general", false);
        assert_eq!(u.so_far(), "hello there general");
        u.apply("general kenobi", true);
        assert_eq!(u.text(), "hello there general kenobi");
    }

    #[test]
    fn refused_upgrades_are_explained() {
        let refuse = |status: u16, retry_after: Option<&str>, body: &str| {
            let mut r = Response::new(Some(body.as_bytes().to_vec()));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(v) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, v.parse().unwrap());
            }
            rejected(&r)
        };
        let (message, retryable, _) =
            refuse(401, None, r#"{"err_msg":"Invalid credentials: k-123"}"#);
        assert!(message.contains("rejected the API key") && !message.contains("k-123"));
        assert!(!retryable);
        let (message, retryable, wait) = refuse(429, Some("2"), r#"{"err_msg":"Too many"}"#);
        assert_eq!(message, "429 Too Many Requests: Too many");
        assert!(retryable);
        assert_eq!(wait, Some(Duration::from_secs(2)));
        assert_eq!(refuse(503, Some("soon"), "").2, None);
        assert!(!refuse(400, None, "bad query").1);
    }

    #[test]
    fn pcm_is_clamped_little_endian() {
        let pcm = to_pcm16(&[0.0, 1.0, -1.0, 2.0, -2.0, 0.5]);
        let samples: Vec<i16> = pcm
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, [0, 32767, -32767, 32767, -32767, 16384]);
    }
}
