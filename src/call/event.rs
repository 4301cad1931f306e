//! What goes into a call and what comes out of it, in the call's own terms: audio as samples at
//! the engine rate, text, and ids. No wire format lives here; each transport translates.

use std::sync::Arc;

use super::operator::{OperatorCommand, OperatorEventKind};
use crate::protocol::TurnTimings;
use crate::protocol::{DoneReason, EndReason, ErrorCode, TurnDetection, TurnDetectionUpdate};

/// An input to a live call, from its transport or from anywhere that holds its handle.
#[derive(Debug)]
pub enum CallInput {
    /// Caller audio: mono samples at the engine rate (16 kHz).
    Audio(Vec<f32>),
    /// The caller's turn is over (manual turn detection, push-to-talk).
    Commit,
    /// A typed message.
    Text(String),
    /// Keys pressed on the caller's keypad (DTMF), checked with `keys::valid_digits`.
    Dtmf(String),
    /// How much of reply `item_id` the caller has heard so far.
    Playback { item_id: u64, played_ms: u64 },
    /// Stop the agent's reply.
    Interrupt,
    /// Change the call's turn detection.
    UpdateDetection(TurnDetectionUpdate),
    /// End the call for this reason.
    End(EndReason),
    /// An operator's command (take over, say, release, note, end), answered through its
    /// own reply channel.
    Operator(OperatorCommand),
    /// The live voice of the operator holding the call: mono samples at the engine rate
    /// (16 kHz), spoken to the caller as they arrive. Ignored from anyone else.
    OperatorVoice { operator: String, samples: Vec<f32> },
    /// The operator stopped talking: their line is complete.
    OperatorVoiceEnd { operator: String },
}

/// Something a call did, in order. Subscribers get clones, so audio is shared.
#[derive(Debug, Clone)]
pub enum CallEvent {
    SpeechStarted {
        item_id: u64,
        audio_start_ms: u64,
    },
    SpeechStopped {
        item_id: u64,
        audio_end_ms: u64,
    },
    /// The caller's words: partial while they speak, then final.
    Transcript {
        turn_id: u64,
        item_id: u64,
        text: String,
        is_final: bool,
    },
    /// The next piece of the agent's reply text.
    ResponseDelta {
        turn_id: u64,
        item_id: u64,
        delta: String,
    },
    /// Reply audio at `sample_rate` (the text-to-speech engine's).
    Audio {
        turn_id: u64,
        item_id: u64,
        samples: Arc<[f32]>,
        sample_rate: u32,
    },
    /// The reply's whole text; its audio is complete.
    ResponseText {
        turn_id: u64,
        item_id: u64,
        text: String,
    },
    ResponseDone {
        turn_id: u64,
        item_id: u64,
        reason: DoneReason,
    },
    /// The reply was cut: stop playing it. `heard` is what history keeps of it.
    Interrupted {
        turn_id: u64,
        item_id: u64,
        played_ms: u64,
        heard: String,
    },
    /// The caller pressed keys (DTMF); a complete entry becomes a caller turn.
    Dtmf {
        digits: String,
    },
    /// A late playback report changed what the caller heard of cut reply `item_id`.
    Heard {
        item_id: u64,
        heard: String,
    },
    Metrics {
        turn_id: u64,
        /// Boxed: the largest variant, and rare.
        timings: Box<TurnTimings>,
    },
    DetectionUpdated(TurnDetection),
    /// An operator acted on the call. `item_id` is the operator's line (`Said`) or note
    /// (`Note`); `text` its words.
    Operator {
        kind: OperatorEventKind,
        operator: String,
        text: Option<String>,
        item_id: Option<u64>,
    },
    /// The agent's language model called a tool, a tool answered, or a built-in tool acted
    /// (monitor and event log; not sent to the caller).
    Tool(ToolEvent),
    /// The agent's flow moved on in turn `turn_id` (monitor and event log; not sent to the
    /// caller): the nodes entered, the node now waiting, a variable captured.
    Flow {
        turn_id: u64,
        path: Vec<String>,
        node: Option<String>,
        captured: Option<(String, String)>,
    },
    /// The call's flow put it in the operators' queue; it waits for an operator to take it
    /// over.
    Queued,
    /// Something the caller should know went wrong; the call goes on.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The last event of a call.
    Ended {
        call_id: String,
        reason: EndReason,
        turns: u64,
    },
}

/// A step of a tool call, within reply `item_id` of turn `turn_id`.
#[derive(Debug, Clone)]
pub enum ToolEvent {
    /// The model called tool `name` with `arguments` (JSON text, as the model wrote it).
    Call {
        turn_id: u64,
        item_id: u64,
        call_id: String,
        name: String,
        arguments: String,
    },
    /// The tool answered (or failed: `error` says why; `cancelled` when the caller
    /// interrupted). `result` is what the model was given.
    Result {
        turn_id: u64,
        item_id: u64,
        call_id: String,
        name: String,
        result: String,
        error: Option<&'static str>,
        ms: f64,
    },
    /// `take_message` took a message.
    Message {
        turn_id: u64,
        name: String,
        callback: String,
        message: String,
    },
    /// `transfer`: the call ends, handed on to `to`.
    Transfer { turn_id: u64, to: String },
}
