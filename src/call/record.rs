//! The call's record in the durable store, written from its own events: the store writer is a
//! subscriber that never loses an event (its queue is bounded and counts what it drops) and
//! never makes the call wait. Conversation items, per-turn metrics and an append-only event log.
//! The call's webhook, if its agent has one, hears of its start, end and takeovers the same
//! way (after the writes they follow).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::event::{CallEvent, ToolEvent};
use super::feed::{CallMeta, Feed, RESPONSE_DELTA};
use super::operator::OperatorEventKind;
use crate::protocol::EndReason;
use crate::redact::Redactor;
use crate::store::{CallRow, EventRow, ItemRow, StoreWriter, TurnMetricsRow, Write};
use crate::webhooks::CallHook;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct Recorder {
    writer: Option<StoreWriter>,
    /// The monitor feed, and whose call this is.
    feed: Option<(Arc<Feed>, Arc<CallMeta>)>,
    call_id: String,
    /// Next event number; goes on across resumptions.
    seq: i64,
    /// Reply text so far, per reply item, for a reply cut before it was complete.
    replies: HashMap<u64, String>,
    /// User items that were typed.
    typed: HashSet<u64>,
    /// User items keyed in on a keypad (DTMF).
    keyed: HashSet<u64>,
    /// Reply items that are an operator's lines, until their text is recorded.
    operator_lines: HashSet<u64>,
    /// Item of the push-to-talk turn, if this is one.
    push_to_talk: bool,
    caller_samples: u64,
    agent_ms: f64,
    /// Audio of the call before this stretch of it (a resumed call).
    prior_caller_ms: i64,
    prior_agent_ms: i64,
    /// Masks the agent's sensitive kinds in every text written or published.
    redactor: Redactor,
    /// The call's webhook, if its agent has one.
    hook: Option<CallHook>,
    /// Arguments of the tool calls not answered yet, by the model's id of the call, for the
    /// webhook's `tool.called` (bounded: a call runs at most a few tools a turn).
    tool_args: Vec<(String, String)>,
    /// The operator holding the call, as the webhook was told.
    taken_over_by: Option<String>,
    /// Where the call's summary is made when it ends, and what it is made from.
    summary: Option<(crate::summary::Summaries, PendingSummary)>,
}

/// What an ending call's summary is made from.
pub struct PendingSummary {
    pub agent: Arc<crate::agents::Agent>,
    pub llm: Arc<dyn crate::engines::llm::LanguageModel>,
    pub messages: Vec<crate::engines::llm::ChatMessage>,
}

/// What a call's record carries from one stretch of the call to the next.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub next_seq: i64,
    pub caller_audio_ms: i64,
    pub agent_audio_ms: i64,
}

impl Recorder {
    pub fn new(writer: Option<StoreWriter>, call_id: &str, totals: Totals) -> Self {
        Self {
            writer,
            feed: None,
            call_id: call_id.to_string(),
            seq: totals.next_seq.max(1),
            prior_caller_ms: totals.caller_audio_ms,
            prior_agent_ms: totals.agent_audio_ms,
            replies: HashMap::new(),
            typed: HashSet::new(),
            keyed: HashSet::new(),
            operator_lines: HashSet::new(),
            push_to_talk: false,
            caller_samples: 0,
            agent_ms: 0.0,
            redactor: Redactor::default(),
            hook: None,
            tool_args: Vec::new(),
            taken_over_by: None,
            summary: None,
        }
    }

    /// When the call ends (next), `summaries` summarises `pending`; the call's `call.ended`
    /// webhook waits for it.
    pub fn summarize_on_end(
        &mut self,
        summaries: crate::summary::Summaries,
        pending: PendingSummary,
    ) {
        // A push-to-talk request is one turn: its reply says all there is.
        if !self.push_to_talk {
            self.summary = Some((summaries, pending));
        }
    }

    /// Tells `hook` of the call's start, end and takeovers.
    pub fn with_hook(mut self, hook: Option<CallHook>) -> Self {
        self.hook = hook;
        self
    }

    /// Masks what `redactor` masks in everything recorded and published from here on.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Publishes the call's monitored events to `feed` as well.
    pub fn with_feed(mut self, feed: Arc<Feed>, meta: CallMeta) -> Self {
        self.feed = Some((feed, Arc::new(meta)));
        self
    }

    fn write(&self, mut w: Write) {
        let r = &self.redactor;
        match &mut w {
            Write::Item(item) if r.is_active() => {
                item.text = r.redact(&item.text).into_owned();
                if let Some(heard) = item.heard.as_mut() {
                    *heard = r.redact(heard).into_owned();
                }
            }
            Write::ItemHeard { heard, .. } if r.is_active() => {
                *heard = r.redact(heard).into_owned();
            }
            _ => {}
        }
        if let Some(writer) = &self.writer {
            writer.send(w);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn started(
        &mut self,
        sub: &str,
        org: Option<&str>,
        agent: &str,
        variables: BTreeMap<String, String>,
        system_prompt: &str,
        turns: u64,
    ) {
        self.write(Write::CallStarted(CallRow {
            id: self.call_id.clone(),
            org: org.map(str::to_string),
            sub: sub.to_string(),
            agent: agent.to_string(),
            variables,
            system_prompt: Some(system_prompt.to_string()),
            started_at_ms: now_ms(),
            ended_at_ms: None,
            end_reason: None,
            turns: turns as i64,
            caller_audio_ms: 0,
            agent_audio_ms: 0,
        }));
        let resumed = self.seq > 1;
        self.log("call_started", json!({"resumed": resumed}));
        if let Some(hook) = &self.hook {
            hook.started(resumed);
        }
    }

    /// The call is recorded from now on, after `notice` (spoken first; `None` when the call
    /// goes on an earlier stretch's recording).
    pub fn recording_started(&mut self, notice: Option<&str>) {
        self.log(
            "recording_started",
            json!({"notice": notice, "format": "wav", "sample_rate": crate::audio::ENGINE_RATE,
                "channels": super::recording::CHANNELS}),
        );
    }

    /// The caller opted out: the recording was deleted.
    pub fn recording_opted_out(&mut self) {
        self.log("recording_opted_out", json!({}));
    }

    pub fn typed(&mut self, item_id: u64) {
        self.typed.insert(item_id);
    }

    pub fn keyed(&mut self, item_id: u64) {
        self.keyed.insert(item_id);
    }

    pub fn set_push_to_talk(&mut self) {
        self.push_to_talk = true;
    }

    pub fn caller_audio(&mut self, samples: usize) {
        self.caller_samples += samples as u64;
    }

    fn item(&self, item_id: u64, turn_id: u64, role: &str, text: &str, source: &str) -> Write {
        Write::Item(ItemRow {
            call_id: self.call_id.clone(),
            item_id: item_id as i64,
            turn_id: Some(turn_id as i64),
            role: role.to_string(),
            text: text.to_string(),
            heard: None,
            source: source.to_string(),
            created_at_ms: now_ms(),
        })
    }

    /// Records an event: the rows it changes and its entry in the event log.
    pub fn on_event(&mut self, event: &CallEvent) {
        let (kind, data) = match event {
            CallEvent::SpeechStarted {
                item_id,
                audio_start_ms,
            } => (
                "speech_started",
                json!({"item_id": item_id, "audio_start_ms": audio_start_ms}),
            ),
            CallEvent::SpeechStopped {
                item_id,
                audio_end_ms,
            } => (
                "speech_stopped",
                json!({"item_id": item_id, "audio_end_ms": audio_end_ms}),
            ),
            CallEvent::Transcript {
                turn_id,
                item_id,
                text,
                is_final,
            } => {
                if *is_final && !text.trim().is_empty() {
                    let source = if self.typed.contains(item_id) {
                        "text"
                    } else if self.keyed.contains(item_id) {
                        "dtmf"
                    } else if self.push_to_talk {
                        "push_to_talk"
                    } else {
                        "voice"
                    };
                    self.write(self.item(*item_id, *turn_id, "user", text, source));
                }
                (
                    "transcript",
                    json!({"turn_id": turn_id, "item_id": item_id, "text": text, "is_final": is_final}),
                )
            }
            CallEvent::ResponseDelta {
                turn_id,
                item_id,
                delta,
            } => {
                self.replies.entry(*item_id).or_default().push_str(delta);
                // A number split across deltas cannot be masked: a redacting call's deltas
                // stay off the monitor feed (the whole reply follows in `response`).
                let feed = self.feed.as_ref().filter(|(f, _)| f.wants_deltas());
                if let Some((feed, meta)) = feed.filter(|_| !self.redactor.is_active()) {
                    let data = json!({"turn_id": turn_id, "item_id": item_id, "delta": delta});
                    feed.publish(meta, 0, RESPONSE_DELTA, now_ms(), &data, |_| {});
                }
                return;
            }
            CallEvent::Audio {
                samples,
                sample_rate,
                ..
            } => {
                self.agent_ms += samples.len() as f64 * 1000.0 / f64::from((*sample_rate).max(1));
                return;
            }
            CallEvent::ResponseText {
                turn_id,
                item_id,
                text,
            } => {
                self.replies.remove(item_id);
                let operator = self.operator_lines.remove(item_id);
                let source = match (operator, *turn_id) {
                    (true, _) => "operator",
                    (false, 0) => "greeting",
                    (false, _) => "reply",
                };
                self.write(self.item(*item_id, *turn_id, "assistant", text, source));
                let mut data = json!({"turn_id": turn_id, "item_id": item_id, "text": text});
                if operator {
                    data["from"] = json!("operator");
                }
                ("response", data)
            }
            CallEvent::ResponseDone {
                turn_id,
                item_id,
                reason,
            } => (
                "response_done",
                json!({"turn_id": turn_id, "item_id": item_id, "reason": reason}),
            ),
            CallEvent::Interrupted {
                turn_id,
                item_id,
                played_ms,
                heard,
            } => {
                // A reply cut while still being written has no item yet: its text so far.
                if let Some(text) = self.replies.remove(item_id) {
                    let source = if self.operator_lines.remove(item_id) {
                        "operator"
                    } else {
                        "reply"
                    };
                    self.write(self.item(*item_id, *turn_id, "assistant", text.trim(), source));
                }
                self.heard(*item_id, heard);
                (
                    "interrupted",
                    json!({"turn_id": turn_id, "item_id": item_id, "played_ms": played_ms, "heard": heard}),
                )
            }
            CallEvent::Heard { item_id, heard } => {
                self.heard(*item_id, heard);
                ("heard", json!({"item_id": item_id, "heard": heard}))
            }
            CallEvent::Metrics { turn_id, timings } => {
                let metrics = serde_json::to_value(timings).unwrap_or_default();
                self.write(Write::TurnMetrics(TurnMetricsRow {
                    call_id: self.call_id.clone(),
                    turn_id: *turn_id as i64,
                    metrics: metrics.clone(),
                    at_ms: now_ms(),
                }));
                ("metrics", json!({"turn_id": turn_id, "timings": metrics}))
            }
            CallEvent::Operator {
                kind,
                operator,
                text,
                item_id,
            } => {
                match (kind, item_id, text) {
                    (OperatorEventKind::Said, Some(item), _) => {
                        self.operator_lines.insert(*item);
                    }
                    (OperatorEventKind::Note, Some(item), Some(text)) => {
                        self.write(Write::Item(ItemRow {
                            call_id: self.call_id.clone(),
                            item_id: *item as i64,
                            turn_id: None,
                            role: "system".into(),
                            text: text.clone(),
                            heard: None,
                            source: "operator_note".into(),
                            created_at_ms: now_ms(),
                        }));
                    }
                    _ => {}
                }
                let mut data = json!({"operator": operator});
                if let Some(text) = text {
                    data["text"] = json!(text);
                }
                if let Some(item) = item_id {
                    data["item_id"] = json!(item);
                }
                let takeover = match kind {
                    OperatorEventKind::TakeoverStarted => Some(true),
                    OperatorEventKind::TakeoverEnded => Some(false),
                    _ => None,
                };
                if let (Some(started), Some(hook)) = (takeover, &self.hook) {
                    hook.takeover(started, operator);
                    self.taken_over_by = started.then(|| operator.clone());
                }
                (kind.as_str(), data)
            }
            CallEvent::Dtmf { digits } => ("dtmf", json!({"digits": digits})),
            CallEvent::Flow {
                turn_id,
                path,
                node,
                captured,
            } => {
                let mut data = json!({"turn_id": turn_id, "path": path, "node": node});
                if let Some((name, value)) = captured {
                    data["captured"] = json!({ name: self.redactor.redact(value) });
                }
                ("flow", data)
            }
            CallEvent::Queued => ("queued", json!({})),
            CallEvent::Tool(step) => self.tool(step),
            CallEvent::DetectionUpdated(d) => ("call_updated", json!({"turn_detection": d})),
            CallEvent::Error { code, message } => {
                ("error", json!({"code": code, "message": message}))
            }
            // Another node holds the call now: the call has not ended, so nothing says it has.
            CallEvent::Ended {
                reason: EndReason::Moved,
                ..
            } => return,
            CallEvent::Ended { reason, turns, .. } => {
                let reason_name = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.log("call_ended", json!({"reason": reason, "turns": turns}));
                self.write(Write::CallEnded {
                    call_id: self.call_id.clone(),
                    ended_at_ms: now_ms(),
                    reason: reason_name.clone(),
                    turns: *turns as i64,
                    caller_audio_ms: self.totals().caller_audio_ms,
                    agent_audio_ms: self.totals().agent_audio_ms,
                });
                // After the call's last write, which the webhook's transcript waits for. A
                // takeover the call ends in ends with it.
                if let Some(hook) = &self.hook {
                    if let Some(operator) = self.taken_over_by.take() {
                        hook.takeover(false, &operator);
                    }
                }
                // `call.ended` carries the summary, so it is sent once the summary is made.
                let turns = *turns;
                let then = self.hook.clone().map(|hook| {
                    Box::new(move || hook.ended(&reason_name, turns)) as crate::summary::Then
                });
                match (self.summary.take(), &self.feed) {
                    (Some((summaries, p)), Some((_, meta))) => {
                        summaries.submit(crate::summary::SummaryJob {
                            meta: CallMeta::clone(meta),
                            agent: p.agent,
                            llm: p.llm,
                            messages: p.messages,
                            then,
                        })
                    }
                    _ => {
                        if let Some(f) = then {
                            f();
                        }
                    }
                }
                return;
            }
        };
        self.log(kind, data);
    }

    /// A tool step's log entry; a message taken goes to the webhook too (masked first).
    fn tool(&mut self, step: &ToolEvent) -> (&'static str, serde_json::Value) {
        match step {
            ToolEvent::Call {
                turn_id,
                item_id,
                call_id,
                name,
                arguments,
            } => {
                if self.hook.is_some() {
                    if self.tool_args.len() >= Self::MAX_OPEN_TOOL_CALLS {
                        self.tool_args.remove(0);
                    }
                    self.tool_args.push((call_id.clone(), arguments.clone()));
                }
                (
                    "tool_call",
                    json!({"turn_id": turn_id, "item_id": item_id, "call_id": call_id,
                        "name": name, "arguments": arguments}),
                )
            }
            ToolEvent::Result {
                turn_id,
                item_id,
                call_id,
                name,
                result,
                error,
                ms,
            } => {
                let at = self.tool_args.iter().position(|(id, _)| id == call_id);
                let arguments = at.map(|i| self.tool_args.remove(i).1).unwrap_or_default();
                if let Some(hook) = &self.hook {
                    let r = &self.redactor;
                    hook.tool(name, &r.redact(&arguments), &r.redact(result), *error, *ms);
                }
                (
                    "tool_result",
                    json!({"turn_id": turn_id, "item_id": item_id, "call_id": call_id,
                        "name": name, "ok": error.is_none(), "error": error, "result": result,
                        "ms": ms}),
                )
            }
            ToolEvent::Message {
                turn_id,
                name,
                callback,
                message,
            } => {
                if let Some(hook) = &self.hook {
                    let r = &self.redactor;
                    hook.message(&r.redact(name), &r.redact(callback), &r.redact(message));
                }
                (
                    "message_taken",
                    json!({"turn_id": turn_id, "name": name, "callback": callback,
                        "message": message}),
                )
            }
            ToolEvent::Transfer { turn_id, to } => {
                ("transferred", json!({"turn_id": turn_id, "to": to}))
            }
        }
    }

    /// The most tool calls a call keeps the arguments of while they run (for the webhook).
    const MAX_OPEN_TOOL_CALLS: usize = 16;

    /// The caller's and the agent's audio of this stretch of the call, in ms.
    pub fn stretch_audio_ms(&self) -> (i64, i64) {
        let caller_ms = self.caller_samples * 1000 / u64::from(crate::audio::ENGINE_RATE);
        (caller_ms as i64, self.agent_ms.round() as i64)
    }

    /// The call's totals so far, for its next stretch.
    pub fn totals(&self) -> Totals {
        let caller_ms = self.caller_samples * 1000 / u64::from(crate::audio::ENGINE_RATE);
        Totals {
            next_seq: self.seq,
            caller_audio_ms: self.prior_caller_ms + caller_ms as i64,
            agent_audio_ms: self.prior_agent_ms + self.agent_ms.round() as i64,
        }
    }

    fn heard(&self, item_id: u64, heard: &str) {
        self.write(Write::ItemHeard {
            call_id: self.call_id.clone(),
            item_id: item_id as i64,
            heard: heard.to_string(),
        });
    }

    /// Appends to the event log and, for what the monitor shows, to the monitor feed (the
    /// store write first; see [`Feed::publish`]).
    fn log(&mut self, kind: &str, mut data: serde_json::Value) {
        self.redactor.redact_fields(
            &mut data,
            &[
                "text",
                "heard",
                "digits",
                "arguments",
                "result",
                "name",
                "callback",
                "message",
                "to",
            ],
        );
        let seq = self.seq;
        self.seq += 1;
        let at_ms = now_ms();
        let row = |stream_id| {
            Write::Event(EventRow {
                call_id: self.call_id.clone(),
                seq,
                at_ms,
                kind: kind.to_string(),
                data: data.clone(),
                stream_id,
            })
        };
        match &self.feed {
            Some((feed, meta)) => {
                feed.publish(meta, seq, kind, at_ms, &data, |id| self.write(row(id)))
            }
            None => self.write(row(None)),
        }
    }
}
