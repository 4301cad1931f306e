//! The call's side of its agent's flow (see `flow`): the turns move the flow and say its
//! steps (`turn.rs`); here the call acts on each step and keeps the menu's or question's
//! timeout. A step that ends in `hangup` or a transfer to a number ends the call once its
//! words have been said; a transfer to `operators` puts the call in the operators' queue
//! (the agent falls silent, the caller's turns are still transcribed) until an operator takes
//! it over. When the caller says nothing for the node's `timeout_ms` after it has been asked
//! (the agent silent, no speech, no keys), the flow gets a silence.

use tokio::time::Instant;

use super::actor::Call;
use super::event::{CallEvent, ToolEvent};
use super::turn::{FlowStep, TurnInput};
use crate::flow::{Then, OPERATORS};
use crate::protocol::EndReason;

impl Call {
    /// The flow moved on in turn `turn_id`.
    pub(super) async fn on_flow_step(&mut self, turn_id: u64, step: FlowStep) {
        self.emit(CallEvent::Flow {
            turn_id,
            path: step.path,
            node: step.node,
            captured: step.captured,
        })
        .await;
        match step.then {
            Then::Wait | Then::Answer { .. } => {}
            Then::Hangup => self.close_after_speaking(EndReason::AgentEnded),
            Then::Transfer { to } if to == OPERATORS => {
                self.takeover.queued = true;
                self.record.set_waiting(true);
                self.emit(CallEvent::Queued).await;
            }
            Then::Transfer { to } => {
                self.emit(CallEvent::Tool(ToolEvent::Transfer { turn_id, to }))
                    .await;
                self.close_after_speaking(EndReason::Transferred);
            }
        }
    }

    /// Whether the flow waits for the caller now: nobody speaks, nothing is being keyed,
    /// the call is neither ending nor held by an operator.
    fn flow_idle(&self) -> bool {
        self.closing.is_none()
            && !self.takeover.active()
            && !self.agent_speaking()
            && !self.caller.in_speech()
            && self.keys.deadline().is_none()
    }

    /// Starts the flow's silence timer when the call has gone quiet at a node that waits for
    /// an answer, and stops it when anything happens. Called after each of the actor's steps.
    pub(super) fn arm_flow_timer(&mut self) {
        let Some(flow) = &self.flow else {
            return;
        };
        if !self.flow_idle() {
            self.flow_wait = None;
            // The agent's words are still playing: look again shortly.
            self.flow_poll = self.closing.is_none();
            return;
        }
        if self.flow_wait.is_none() {
            let timeout = flow.lock().unwrap_or_else(|e| e.into_inner()).timeout();
            self.flow_wait = timeout.map(|t| Instant::now() + t);
        }
        self.flow_poll = false;
    }

    /// The caller said nothing for the node's timeout.
    pub(super) async fn flow_silence(&mut self) {
        self.flow_wait = None;
        if self.flow_idle() {
            self.start_reply(TurnInput::FlowSilence, Instant::now(), None, None)
                .await;
        }
    }
}
