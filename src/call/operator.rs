//! Operators acting on a live call: take it over (the agent stops talking at once and stops
//! answering; the caller's speech is still transcribed), say a line in the agent's voice, hand
//! it back, add a note to the agent's context, end it. Each command is a call input answered
//! through its own oneshot; each action is a call event naming the operator, so the event log,
//! the monitor stream and the caller's transport all hear of it from the one write path.

use std::collections::VecDeque;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::actor::Call;
use super::event::CallEvent;
use super::turn::{TurnEvent, TurnInput};
use crate::engines::llm::Role;
use crate::engines::EngineError;
use crate::protocol::{EndReason, ErrorCode};

/// Longest operator line or note, in characters.
pub const MAX_OPERATOR_TEXT: usize = 2000;
/// Context notes a call takes at most.
pub const MAX_NOTES: usize = 20;
/// Caller turns transcribed at once while the call is taken over; past that the oldest is
/// dropped.
const MAX_LISTENING: usize = 4;
/// Chunks of an operator's live voice queued for the turn speaking them; past that (the turn is
/// behind) a chunk is dropped rather than held.
const VOICE_QUEUE: usize = 64;

/// Who sends a command: the token's `sub`, and whether it is an admin's (who may force).
#[derive(Debug, Clone)]
pub struct Operator {
    pub sub: String,
    pub admin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// Take the call over; `force` (admins only) takes it from another operator.
    Takeover { force: bool },
    /// Hand the call back to the agent; `force` (admins only) releases another's takeover.
    Release { force: bool },
    /// Speak a line to the caller in the agent's voice (only while this operator holds it).
    Say(String),
    /// A note the agent sees in its context from its next turn on.
    Context(String),
    /// End the call (`ended_by_operator`).
    End,
}

impl OperatorAction {
    /// The command's route name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Takeover { .. } => "takeover",
            Self::Release { .. } => "release",
            Self::Say(_) => "say",
            Self::Context(_) => "context",
            Self::End => "end",
        }
    }
}

/// What an operator command is answered with.
pub type OperatorResult = Result<OperatorView, OperatorRefusal>;

#[derive(Debug)]
pub struct OperatorCommand {
    pub by: Operator,
    pub action: OperatorAction,
    pub reply: oneshot::Sender<OperatorResult>,
}

impl OperatorCommand {
    /// A command and the receiver of its answer.
    pub fn new(by: Operator, action: OperatorAction) -> (Self, oneshot::Receiver<OperatorResult>) {
        let (reply, rx) = oneshot::channel();
        (Self { by, action, reply }, rx)
    }
}

/// The call's state as operator routes answer it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorView {
    pub call_id: String,
    /// `listening`, `thinking`, `speaking`, `waiting` (for an operator), `taken_over` or
    /// `ended`.
    pub state: Cow<'static, str>,
    pub taken_over_by: Option<String>,
    /// Context notes added so far.
    pub notes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
}

/// Why the call refused a command.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRefusal {
    #[error("the call is taken over by `{0}`")]
    AlreadyTakenOver(String),
    #[error("the call is not taken over by this operator{}", .0.as_ref().map(|s| format!(" (it is held by `{s}`)")).unwrap_or_default())]
    NotTakenOver(Option<String>),
    #[error("the call holds {MAX_NOTES} context notes already")]
    TooManyNotes,
}

impl OperatorRefusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadyTakenOver(_) => ErrorCode::AlreadyTakenOver,
            Self::NotTakenOver(_) => ErrorCode::NotTakenOver,
            Self::TooManyNotes => ErrorCode::TooManyNotes,
        }
    }

    /// The operator holding the call, when that is why the command was refused.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::AlreadyTakenOver(s) => Some(s),
            Self::NotTakenOver(s) => s.as_deref(),
            Self::TooManyNotes => None,
        }
    }
}

/// What an operator did, as the event log and the monitor stream name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorEventKind {
    TakeoverStarted,
    TakeoverEnded,
    Said,
    Note,
    Ended,
}

impl OperatorEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TakeoverStarted => "takeover_started",
            Self::TakeoverEnded => "takeover_ended",
            Self::Said => "operator_say",
            Self::Note => "operator_context",
            Self::Ended => "operator_end",
        }
    }
}

/// A caller turn transcribed, not answered, while the call is taken over.
struct Listening {
    run: u64,
    turn_id: u64,
    item_id: u64,
    cancel: CancellationToken,
}

/// The call's operator side: who holds it taken over, the notes added, and the caller turns
/// being transcribed meanwhile.
#[derive(Default)]
pub struct Takeover {
    by: Option<String>,
    notes: usize,
    listening: VecDeque<Listening>,
    /// The operator's live voice being spoken: its turn takes the chunks.
    voice: Option<mpsc::Sender<Vec<f32>>>,
    /// The call's flow put it in the operators' queue: the agent does not answer, caller
    /// turns are only transcribed, until an operator takes it over.
    pub(super) queued: bool,
}

impl Takeover {
    /// Whether the agent is silent: an operator holds the call, or it waits for one.
    pub fn active(&self) -> bool {
        self.by.is_some() || self.queued
    }
}

impl Call {
    /// Handles an operator command; `Some` when the call is to end.
    pub(super) async fn on_operator(&mut self, cmd: OperatorCommand) -> Option<EndReason> {
        let OperatorCommand { by, action, reply } = cmd;
        let (result, end) = match action {
            OperatorAction::Takeover { force } => (self.take_over(&by, force).await, None),
            OperatorAction::Release { force } => (self.hand_back(&by, force).await, None),
            OperatorAction::Say(text) => (self.operator_say(&by, text).await, None),
            OperatorAction::Context(text) => (self.add_note(&by, text).await, None),
            OperatorAction::End => {
                self.operator_event(OperatorEventKind::Ended, &by, None, None)
                    .await;
                (Ok(()), Some(EndReason::EndedByOperator))
            }
        };
        let _ = reply.send(result.map(|()| self.operator_view(end)));
        end
    }

    fn operator_view(&self, end: Option<EndReason>) -> OperatorView {
        let state = match (&end, &self.takeover.by) {
            (Some(_), _) => "ended",
            (None, Some(_)) => "taken_over",
            (None, None) => match self.record.state() {
                super::CallState::Listening => "listening",
                super::CallState::Thinking => "thinking",
                super::CallState::Speaking => "speaking",
                super::CallState::Waiting => "waiting",
            },
        };
        OperatorView {
            call_id: self.id().to_string(),
            state: Cow::Borrowed(state),
            taken_over_by: self.takeover.by.clone(),
            notes: self.takeover.notes,
            end_reason: end,
        }
    }

    async fn operator_event(
        &mut self,
        kind: OperatorEventKind,
        by: &Operator,
        text: Option<String>,
        item_id: Option<u64>,
    ) {
        self.emit(CallEvent::Operator {
            kind,
            operator: by.sub.clone(),
            text,
            item_id,
        })
        .await;
    }

    async fn take_over(&mut self, by: &Operator, force: bool) -> Result<(), OperatorRefusal> {
        match &self.takeover.by {
            Some(holder) if *holder == by.sub => return Ok(()),
            Some(holder) if !(force && by.admin) => {
                return Err(OperatorRefusal::AlreadyTakenOver(holder.clone()))
            }
            _ => {}
        }
        // The agent falls silent at once, as if the caller had talked over it; history keeps
        // what was heard. A reply prepared ahead is dropped.
        self.interrupt_reply(true).await;
        self.cancel_pending();
        self.takeover.voice = None;
        self.takeover.by = Some(by.sub.clone());
        self.takeover.queued = false;
        self.record.set_waiting(false);
        self.record.set_taken_over_by(Some(by.sub.clone()));
        self.operator_event(OperatorEventKind::TakeoverStarted, by, None, None)
            .await;
        Ok(())
    }

    async fn hand_back(&mut self, by: &Operator, force: bool) -> Result<(), OperatorRefusal> {
        match &self.takeover.by {
            Some(holder) if *holder == by.sub || (force && by.admin) => {}
            other => return Err(OperatorRefusal::NotTakenOver(other.clone())),
        }
        self.takeover.by = None;
        self.takeover.voice = None;
        self.record.set_taken_over_by(None);
        self.operator_event(OperatorEventKind::TakeoverEnded, by, None, None)
            .await;
        Ok(())
    }

    async fn operator_say(&mut self, by: &Operator, text: String) -> Result<(), OperatorRefusal> {
        if self.takeover.by.as_deref() != Some(by.sub.as_str()) {
            return Err(OperatorRefusal::NotTakenOver(self.takeover.by.clone()));
        }
        let text = text.trim().to_string();
        self.start_reply(TurnInput::Say(text.clone()), Instant::now(), None, None)
            .await;
        // Announced before any of the line's own events, which come back from its turn task.
        let item_id = self.reply_mut().map(|r| r.item_id);
        self.operator_event(OperatorEventKind::Said, by, Some(text), item_id)
            .await;
        Ok(())
    }

    /// A chunk of the holding operator's live voice: goes on the line being spoken, or starts
    /// one (a reply marked as the operator's, like `say`). Anyone else's voice is dropped.
    pub(super) async fn operator_voice(&mut self, operator: String, samples: Vec<f32>) {
        if self.takeover.by.as_deref() != Some(operator.as_str()) || samples.is_empty() {
            return;
        }
        let samples = match self.takeover.voice.as_ref() {
            None => samples,
            Some(tx) => match tx.try_send(samples) {
                Ok(()) | Err(TrySendError::Full(_)) => return,
                // The line ended (cut, or long enough): the audio starts a new one.
                Err(TrySendError::Closed(s)) => s,
            },
        };
        self.start_voice(operator, samples).await;
    }

    async fn start_voice(&mut self, operator: String, samples: Vec<f32>) {
        let (tx, rx) = mpsc::channel(VOICE_QUEUE);
        let _ = tx.try_send(samples);
        self.takeover.voice = Some(tx);
        self.start_reply(TurnInput::Voice(rx), Instant::now(), None, None)
            .await;
        let item_id = self.reply_mut().map(|r| {
            r.live_voice = true;
            r.item_id
        });
        let by = Operator {
            sub: operator,
            admin: false,
        };
        self.operator_event(OperatorEventKind::Said, &by, None, item_id)
            .await;
    }

    /// The holding operator stopped talking: the line being spoken is complete.
    pub(super) fn operator_voice_end(&mut self, operator: &str) {
        if self.takeover.by.as_deref() == Some(operator) {
            self.takeover.voice = None;
        }
    }

    async fn add_note(&mut self, by: &Operator, text: String) -> Result<(), OperatorRefusal> {
        if self.takeover.notes >= MAX_NOTES {
            return Err(OperatorRefusal::TooManyNotes);
        }
        let text = text.trim().to_string();
        let item_id = self.record.new_item_id();
        self.record
            .history()
            .push_item(Role::System, text.clone(), Some(item_id));
        self.takeover.notes += 1;
        self.operator_event(OperatorEventKind::Note, by, Some(text), Some(item_id))
            .await;
        Ok(())
    }

    /// A caller turn while the call is taken over: transcribed and shown, not answered.
    pub(super) fn start_listening(&mut self, input: TurnInput, anchor: Instant, item_id: u64) {
        if self.takeover.listening.len() >= MAX_LISTENING {
            if let Some(old) = self.takeover.listening.pop_front() {
                old.cancel.cancel();
            }
        }
        let (run, cancel) = self.spawn_turn(input, anchor, false);
        let turn_id = self.record.new_turn_id();
        self.takeover.listening.push_back(Listening {
            run,
            turn_id,
            item_id,
            cancel,
        });
    }

    /// Routes an event of a transcribe-only turn; false when `run` is not one.
    pub(super) async fn on_listen_event(&mut self, run: u64, event: &TurnEvent) -> bool {
        let Some(i) = self.takeover.listening.iter().position(|l| l.run == run) else {
            return false;
        };
        let (turn_id, item_id) = match self.takeover.listening.get(i) {
            Some(l) => (l.turn_id, l.item_id),
            None => return false,
        };
        let done = |s: &mut Self| {
            s.takeover.listening.remove(i);
            s.record.set_state(super::CallState::Listening);
        };
        match event {
            TurnEvent::Transcript(text) => {
                self.record
                    .history()
                    .push_item(Role::User, text.clone(), Some(item_id));
                self.emit(CallEvent::Transcript {
                    turn_id,
                    item_id,
                    text: text.clone(),
                    is_final: true,
                })
                .await;
                self.record.set_state(super::CallState::Listening);
            }
            TurnEvent::NoSpeech => {
                done(self);
                self.emit(CallEvent::Transcript {
                    turn_id,
                    item_id,
                    text: String::new(),
                    is_final: true,
                })
                .await;
            }
            TurnEvent::Failed { error } => {
                done(self);
                let code = match error {
                    EngineError::Busy { .. } => ErrorCode::EngineBusy,
                    _ => ErrorCode::EngineError,
                };
                self.send_error(code, error.to_string()).await;
            }
            TurnEvent::Done { .. } => done(self),
            // A turn that only listens writes no reply and calls no tool.
            TurnEvent::Delta(_)
            | TurnEvent::Audio { .. }
            | TurnEvent::ToolCall(_)
            | TurnEvent::ToolResult { .. }
            | TurnEvent::Flow(_) => {}
        }
        true
    }
}
