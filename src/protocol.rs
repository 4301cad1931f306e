//! The wire contract of `/ws`: typed client and server messages (JSON text frames tagged by
//! `type`) and the stable error codes. `protocol.md` documents every message and code; keep the two
//! in step.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Subprotocol name the server speaks and selects when a client offers it.
pub const PROTOCOL: &str = "voxwire.v1";

/// Audio encodings understood on input and produced on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Raw little-endian signed 16-bit mono samples.
    Pcm16,
    /// A complete RIFF/WAVE file per chunk.
    Wav,
    /// G.711 mu-law bytes, 8 bits per sample (telephony).
    Mulaw,
}

/// An audio format: encoding and sample rate (always mono).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioFormat {
    pub encoding: Encoding,
    pub sample_rate: u32,
}

/// What a client may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    StartCall {
        #[serde(default)]
        call_id: Option<String>,
        #[serde(default)]
        agent: Option<String>,
        #[serde(default)]
        audio_format: Option<AudioFormat>,
        #[serde(default)]
        output_format: Option<AudioFormat>,
        #[serde(default)]
        variables: HashMap<String, String>,
        #[serde(default)]
        turn_detection: Option<TurnDetectionUpdate>,
        /// `false`: do not record this call; `true`: record it (the agent must record calls).
        #[serde(default)]
        record: Option<bool>,
    },
    /// Changes the call's settings mid-call; answered by `call_updated`.
    UpdateCall {
        turn_detection: TurnDetectionUpdate,
    },
    Audio {
        audio: String,
        #[serde(default)]
        seq: Option<u64>,
    },
    Commit,
    Text {
        text: String,
    },
    /// Keys pressed on a keypad (DTMF): 1 to 32 of `0-9`, `*`, `#` and `A-D`.
    Dtmf {
        digits: String,
    },
    /// How much of a reply's audio the client has played so far.
    Playback {
        item_id: u64,
        played_ms: u64,
    },
    /// Stops the current reply now.
    Interrupt,
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    EndCall,
}

/// How the end of the caller's turn is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionMode {
    /// Silero finds speech; at a short pause the Smart Turn model judges whether the turn is
    /// complete (then it ends at once) or not (then it waits for more speech, up to a longer
    /// silence).
    Semantic,
    /// The Silero neural voice activity detector.
    Silero,
    /// A frame-energy detector: no model, cruder in noise.
    Energy,
    /// No detection: the client ends each turn with `commit` (push-to-talk).
    Manual,
}

/// The call's turn detection settings in force (sent in `call_started` and `call_updated`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TurnDetection {
    pub mode: DetectionMode,
    /// Silero speech probability (0-1) above which a frame is speech.
    pub threshold: f32,
    /// Energy mode: frame level (dBFS) above which a frame is speech.
    pub energy_threshold_db: f32,
    /// Audio kept from before the detected start of speech.
    pub prefix_padding_ms: u64,
    /// Silence after speech that ends the turn.
    pub silence_duration_ms: u64,
    /// Speech needed before `speech_started` (shorter sounds are ignored).
    pub min_speech_ms: u64,
    /// Speech needed to interrupt the agent; shorter sounds while it talks (a cough, "mhm") are
    /// ignored.
    pub min_interrupt_ms: u64,
    /// Semantic mode: silence after speech before the end-of-turn model is asked.
    pub semantic_pause_ms: u64,
    /// Semantic mode: silence that ends a turn the model found incomplete (or could not judge).
    /// Always longer than `semantic_pause_ms`.
    pub semantic_max_silence_ms: u64,
}

/// Changes to [`TurnDetection`]; absent fields keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnDetectionUpdate {
    #[serde(default)]
    pub mode: Option<DetectionMode>,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub energy_threshold_db: Option<f32>,
    #[serde(default)]
    pub prefix_padding_ms: Option<u64>,
    #[serde(default)]
    pub silence_duration_ms: Option<u64>,
    #[serde(default)]
    pub min_speech_ms: Option<u64>,
    #[serde(default)]
    pub min_interrupt_ms: Option<u64>,
    #[serde(default)]
    pub semantic_pause_ms: Option<u64>,
    #[serde(default)]
    pub semantic_max_silence_ms: Option<u64>,
}

impl TurnDetection {
    /// Applies an update, checking every value's range; on error nothing changes.
    pub fn apply(&self, u: &TurnDetectionUpdate) -> Result<Self, String> {
        fn range<T: PartialOrd + std::fmt::Display + Copy>(
            name: &str,
            v: Option<T>,
            cur: T,
            lo: T,
            hi: T,
        ) -> Result<T, String> {
            match v {
                None => Ok(cur),
                Some(v) if v >= lo && v <= hi => Ok(v),
                Some(v) => Err(format!(
                    "turn_detection.{name} is {v}; allowed: {lo} to {hi}"
                )),
            }
        }
        let next = Self {
            mode: u.mode.unwrap_or(self.mode),
            threshold: range("threshold", u.threshold, self.threshold, 0.05, 0.95)?,
            energy_threshold_db: range(
                "energy_threshold_db",
                u.energy_threshold_db,
                self.energy_threshold_db,
                -90.0,
                0.0,
            )?,
            prefix_padding_ms: range(
                "prefix_padding_ms",
                u.prefix_padding_ms,
                self.prefix_padding_ms,
                0,
                2000,
            )?,
            silence_duration_ms: range(
                "silence_duration_ms",
                u.silence_duration_ms,
                self.silence_duration_ms,
                100,
                5000,
            )?,
            min_speech_ms: range(
                "min_speech_ms",
                u.min_speech_ms,
                self.min_speech_ms,
                0,
                2000,
            )?,
            min_interrupt_ms: range(
                "min_interrupt_ms",
                u.min_interrupt_ms,
                self.min_interrupt_ms,
                0,
                5000,
            )?,
            semantic_pause_ms: range(
                "semantic_pause_ms",
                u.semantic_pause_ms,
                self.semantic_pause_ms,
                50,
                5000,
            )?,
            semantic_max_silence_ms: range(
                "semantic_max_silence_ms",
                u.semantic_max_silence_ms,
                self.semantic_max_silence_ms,
                100,
                10_000,
            )?,
        };
        if next.semantic_max_silence_ms <= next.semantic_pause_ms {
            return Err(format!(
                "turn_detection.semantic_max_silence_ms ({}) must be longer than \
                 semantic_pause_ms ({})",
                next.semantic_max_silence_ms, next.semantic_pause_ms
            ));
        }
        Ok(next)
    }
}

/// Limits announced in `connected`; each is enforced by the server.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_turn_audio_ms: u64,
    pub max_call_secs: u64,
    pub max_calls_per_user: usize,
    pub max_text_chars: usize,
}

/// Per-stage timings of one turn, in milliseconds, anchored at the end of the caller's speech.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TurnTimings {
    /// How long after the end of speech the server decided the turn was over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_speech_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_first_token_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tts_first_audio_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_to_voice_ms: Option<f64>,
    pub total_ms: f64,
    /// Semantic mode: what the end-of-turn model said at the caller's last pause, and what
    /// ended the turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_turn: Option<EndOfTurn>,
}

/// How a turn's end was decided in semantic mode.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct EndOfTurn {
    /// `model`: the model found the turn complete; `silence`: the silence reached
    /// `semantic_max_silence_ms` first.
    pub by: EndOfTurnBy,
    /// The model's probability that the turn was complete, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// How long the model took to answer, waiting for a free slot included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndOfTurnBy {
    Model,
    #[default]
    Silence,
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    Completed,
    Interrupted,
    /// The caller's audio held no words.
    NoSpeech,
    Error,
}

/// What the server sends.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Connected {
        session_id: String,
        protocol: &'static str,
        limits: Limits,
        engines: EngineNames,
    },
    CallStarted {
        call_id: String,
        agent: String,
        audio_format: AudioFormat,
        output_format: AudioFormat,
        resumed: bool,
        history_len: usize,
        turn_detection: TurnDetection,
    },
    CallUpdated {
        turn_detection: TurnDetection,
    },
    SpeechStarted {
        item_id: u64,
        audio_start_ms: u64,
    },
    SpeechStopped {
        item_id: u64,
        audio_end_ms: u64,
    },
    Transcript {
        turn_id: u64,
        item_id: u64,
        text: String,
        is_final: bool,
    },
    Response {
        turn_id: u64,
        item_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        is_final: bool,
        /// `operator` on an operator's line; absent on the agent's own replies.
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<ReplyFrom>,
    },
    AudioResponse {
        turn_id: u64,
        item_id: u64,
        audio: String,
        encoding: Encoding,
        sample_rate: u32,
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<ReplyFrom>,
    },
    ResponseDone {
        turn_id: u64,
        item_id: u64,
        reason: DoneReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<ReplyFrom>,
    },
    /// An operator took the call over: the agent stops answering until `takeover_ended`.
    TakeoverStarted,
    /// The operator handed the call back: the agent answers again from the next turn.
    TakeoverEnded,
    /// Stop playing this reply: the caller interrupted it. `text` is what history keeps of it.
    Interrupted {
        turn_id: u64,
        item_id: u64,
        played_ms: u64,
        text: String,
    },
    Metrics {
        turn_id: u64,
        #[serde(flatten)]
        timings: TurnTimings,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    CallEnded {
        call_id: String,
        reason: EndReason,
        turns: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
        fatal: bool,
        /// `limit_reached`: which limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<LimitKind>,
    },
}

/// Names of the engines in force, announced in `connected`.
#[derive(Debug, Clone, Serialize)]
pub struct EngineNames {
    pub stt: String,
    pub llm: String,
    pub tts: String,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    ClientEnded,
    MaxDuration,
    ServerShutdown,
    /// A fatal `error` closed the socket (e.g. a frame far above the size limit).
    FatalError,
    /// Nothing came from the client, not even an answer to the server's pings, for
    /// `VOXWIRE_WS_IDLE_TIMEOUT_SECS`; the socket is closed with 1001.
    PingTimeout,
    /// The token expired during the call (the socket is closed with 1008).
    TokenExpired,
    /// The server could not deliver to the client: a frame was not taken within
    /// `VOXWIRE_WS_WRITE_TIMEOUT_SECS` (the client stopped reading), or the connection broke.
    ConnectionLost,
    /// An operator or admin of the call's org ended it (`POST /api/calls/{id}/end`).
    EndedByOperator,
    /// The org's or the subject's daily minutes ran out; the agent said the limit message
    /// (`VOXWIRE_LIMIT_MESSAGE`) first.
    LimitReached,
    /// The agent's language model called its `end_call` tool; the call ended once that reply
    /// had been said.
    AgentEnded,
    /// The agent's language model called its `transfer` tool; the call ended once that reply
    /// had been said (the target is in the event log; phone transfers come with the phone
    /// transports).
    Transferred,
    /// Several nodes: another node holds the call now (this one lost its lease, cut off from
    /// Redis for longer than `VOXWIRE_LEASE_MS`). Only this node's part of the call ends:
    /// nothing is stored as its end, and the socket closes with 1001 so the client resumes.
    Moved,
}

/// Which of an org's limits refused a call or ended it (`PUT /api/limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Live calls of the org on this node.
    ConcurrentCalls,
    /// Call minutes of the org in the UTC day.
    DailyMinutes,
    /// Live calls of one subject of the org on this node.
    SubjectConcurrentCalls,
    /// Call minutes of one subject of the org in the UTC day.
    SubjectDailyMinutes,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::ConcurrentCalls,
        LimitKind::DailyMinutes,
        LimitKind::SubjectConcurrentCalls,
        LimitKind::SubjectDailyMinutes,
    ];

    /// The limit's wire name, e.g. `daily_minutes`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::ConcurrentCalls => "concurrent_calls",
            LimitKind::DailyMinutes => "daily_minutes",
            LimitKind::SubjectConcurrentCalls => "subject_concurrent_calls",
            LimitKind::SubjectDailyMinutes => "subject_daily_minutes",
        }
    }
}

/// Who a reply's words come from, on reply frames that are not the agent's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyFrom {
    /// An operator who took the call over typed the line; it is spoken in the agent's voice.
    Operator,
}

/// Stable error codes carried by `error` frames and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownType,
    InvalidMessage,
    MessageTooLarge,
    NoActiveCall,
    CallAlreadyActive,
    CallNotFound,
    TooManyCalls,
    TooManyConnections,
    /// The org holds as many monitor streams as `VOXWIRE_MAX_MONITORS` allows.
    TooManyMonitors,
    /// A `Last-Event-ID` that is not a stream id.
    InvalidLastEventId,
    /// A query parameter with a value the route does not take.
    InvalidParameter,
    UnknownAgent,
    UnsupportedFormat,
    InvalidBase64,
    InvalidAudio,
    TurnAudioLimit,
    TextTooLong,
    EmptyTurn,
    InvalidSetting,
    EngineBusy,
    EngineError,
    StoreUnavailable,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    RequestTimeout,
    NotFound,
    Internal,
    /// Operator routes: the call is taken over by another operator.
    AlreadyTakenOver,
    /// Operator routes: `say` or `release` while this operator does not hold the call.
    NotTakenOver,
    /// Operator routes: the call has ended.
    CallEnded,
    /// Operator routes: the call did not take the command in time; try again.
    CallBusy,
    /// Operator routes: the call holds as many context notes as it may.
    TooManyNotes,
    /// `DELETE /api/subjects/{sub}`: the subject has a live call; nothing was erased.
    SubjectLive,
    /// Agents API: the definition is not a valid agent (the message says why).
    InvalidAgent,
    /// Agents API: an agent of that name exists already.
    AgentExists,
    /// Agents API: the agent is defined in `agents.toml` and changed there only.
    AgentFromFile,
    /// Agents API: the agent changed meanwhile; read it again and retry.
    AgentConflict,
    /// Agents API: a phone number of the agent answers for another agent already.
    NumberTaken,
    /// `POST /api/sessions` and other key routes: the API key is malformed, unknown or revoked.
    InvalidApiKey,
    /// `start_call` with a session token already bound to another call.
    SessionUsed,
    /// `start_call`: one of the org's limits is reached (the error's `limit` says which).
    LimitReached,
    /// Too many HTTP requests from one address or one token subject; see `Retry-After`.
    RateLimited,
    /// A route whose configuration is not set on this server (phone calls without
    /// `TWILIO_AUTH_TOKEN` or `VOXWIRE_PUBLIC_URL`).
    NotConfigured,
    /// `POST /api/calls/outbound`: the carrier (Twilio) could not be reached or refused the
    /// call (the message has its reason).
    CarrierError,
}

impl ErrorCode {
    /// The code's wire name, e.g. `invalid_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::UnknownType => "unknown_type",
            Self::InvalidMessage => "invalid_message",
            Self::MessageTooLarge => "message_too_large",
            Self::NoActiveCall => "no_active_call",
            Self::CallAlreadyActive => "call_already_active",
            Self::CallNotFound => "call_not_found",
            Self::TooManyCalls => "too_many_calls",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyMonitors => "too_many_monitors",
            Self::InvalidLastEventId => "invalid_last_event_id",
            Self::InvalidParameter => "invalid_parameter",
            Self::UnknownAgent => "unknown_agent",
            Self::UnsupportedFormat => "unsupported_format",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidAudio => "invalid_audio",
            Self::TurnAudioLimit => "turn_audio_limit",
            Self::TextTooLong => "text_too_long",
            Self::EmptyTurn => "empty_turn",
            Self::InvalidSetting => "invalid_setting",
            Self::EngineBusy => "engine_busy",
            Self::EngineError => "engine_error",
            Self::StoreUnavailable => "store_unavailable",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::NotFound => "not_found",
            Self::Internal => "internal",
            Self::AlreadyTakenOver => "already_taken_over",
            Self::NotTakenOver => "not_taken_over",
            Self::CallEnded => "call_ended",
            Self::CallBusy => "call_busy",
            Self::TooManyNotes => "too_many_notes",
            Self::SubjectLive => "subject_live",
            Self::InvalidAgent => "invalid_agent",
            Self::AgentExists => "agent_exists",
            Self::AgentFromFile => "agent_from_file",
            Self::NumberTaken => "number_taken",
            Self::AgentConflict => "agent_conflict",
            Self::InvalidApiKey => "invalid_api_key",
            Self::SessionUsed => "session_used",
            Self::LimitReached => "limit_reached",
            Self::RateLimited => "rate_limited",
            Self::NotConfigured => "not_configured",
            Self::CarrierError => "carrier_error",
        }
    }
}

impl ServerMessage {
    /// A non-fatal or fatal `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, fatal: bool) -> Self {
        Self::Error {
            code,
            message: message.into(),
            fatal,
            limit: None,
        }
    }

    /// A non-fatal `limit_reached` error frame naming the limit.
    pub fn limit_reached(limit: LimitKind, message: impl Into<String>) -> Self {
        Self::Error {
            code: ErrorCode::LimitReached,
            message: message.into(),
            fatal: false,
            limit: Some(limit),
        }
    }
}

/// Parses one text frame, telling apart broken JSON, an unknown `type` and a known type whose
/// fields are wrong.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_string)
    else {
        return Err((
            ErrorCode::InvalidMessage,
            "a message must be a JSON object with a string field `type`".into(),
        ));
    };
    const KNOWN: [&str; 10] = [
        "start_call",
        "update_call",
        "audio",
        "commit",
        "text",
        "dtmf",
        "playback",
        "interrupt",
        "ping",
        "end_call",
    ];
    if !KNOWN.contains(&kind.as_str()) {
        let kind: String = kind.chars().take(64).collect();
        return Err((
            ErrorCode::UnknownType,
            format!("unknown message type `{kind}`"),
        ));
    }
    let msg: ClientMessage = serde_json::from_value(value)
        .map_err(|e| (ErrorCode::InvalidMessage, format!("{kind}: {e}")))?;
    if let ClientMessage::Dtmf { digits } = &msg {
        if !crate::call::keys::valid_digits(digits) {
            return Err((
                ErrorCode::InvalidMessage,
                format!(
                    "dtmf: digits must be 1 to {} keys of 0-9, *, # and A-D",
                    crate::call::keys::MAX_DIGITS
                ),
            ));
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_messages() {
        let m = parse_client_message(r#"{"type":"audio","audio":"AAAA","seq":3}"#).unwrap();
        assert!(matches!(m, ClientMessage::Audio { seq: Some(3), .. }));
        let m = parse_client_message(
            r#"{"type":"start_call","audio_format":{"encoding":"pcm16","sample_rate":8000}}"#,
        )
        .unwrap();
        match m {
            ClientMessage::StartCall { audio_format, .. } => {
                assert_eq!(audio_format.unwrap().sample_rate, 8000)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(
            parse_client_message("{nope").unwrap_err().0,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_client_message("[1]").unwrap_err().0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"dance"}"#).unwrap_err().0,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_client_message(r#"{"type":"text"}"#).unwrap_err().0,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"text","text":"hi","extra":1}"#)
                .unwrap_err()
                .0,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::InvalidJson,
            ErrorCode::TurnAudioLimit,
            ErrorCode::Internal,
            ErrorCode::InvalidApiKey,
            ErrorCode::SessionUsed,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
