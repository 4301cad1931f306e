//! The bodies of webhook events, written once when a delivery is stored and sent unchanged at
//! every attempt:
//! `{"id", "type", "created_at_ms", "data": {...}}`. The transcript of `call.ended` is the call's
//! stored items (masked as the agent's `redact` says when they were written, and masked again
//! here); `summary` and `fields` are the call's summary (`null` when it has none), and
//! `recording_url` the link to its recording (`null` when it is not recorded).

use serde_json::{json, Map, Value};

use crate::call::CallMeta;
use crate::redact::Redactor;
use crate::store::{CallRow, ItemRow, SummaryRow, TurnMetricsRow};

pub const CALL_STARTED: &str = "call.started";
pub const CALL_ENDED: &str = "call.ended";
pub const TAKEOVER_STARTED: &str = "takeover.started";
pub const TAKEOVER_ENDED: &str = "takeover.ended";
pub const MESSAGE_TAKEN: &str = "message.taken";
pub const TOOL_CALLED: &str = "tool.called";

/// The whole body.
pub fn envelope(id: &str, event: &str, created_at_ms: i64, data: Map<String, Value>) -> String {
    json!({
        "id": id,
        "type": event,
        "created_at_ms": created_at_ms,
        "data": data,
    })
    .to_string()
}

/// Whose call it is: the fields every event's `data` starts with.
pub fn call_fields(call: &CallMeta) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("call_id".into(), json!(call.call_id));
    m.insert("agent".into(), json!(call.agent));
    m.insert("org".into(), json!(call.org));
    m.insert("sub".into(), json!(call.sub));
    m
}

pub fn started(call: &CallMeta, at_ms: i64, resumed: bool) -> Map<String, Value> {
    let mut m = call_fields(call);
    m.insert("started_at_ms".into(), json!(at_ms));
    m.insert("resumed".into(), json!(resumed));
    m
}

pub fn takeover(call: &CallMeta, at_ms: i64, operator: &str) -> Map<String, Value> {
    let mut m = call_fields(call);
    m.insert("operator".into(), json!(operator));
    m.insert("at_ms".into(), json!(at_ms));
    m
}

/// `tool.called`: a tool the agent's model called, its arguments (JSON text, as the model
/// wrote them) and what it answered.
pub fn tool(
    call: &CallMeta,
    at_ms: i64,
    name: &str,
    arguments: &str,
    result: &str,
    error: Option<&str>,
    ms: f64,
) -> Map<String, Value> {
    let mut m = call_fields(call);
    m.insert("name".into(), json!(name));
    m.insert("arguments".into(), json!(arguments));
    m.insert("ok".into(), json!(error.is_none()));
    m.insert("error".into(), json!(error));
    m.insert("result".into(), json!(result));
    m.insert("ms".into(), json!(ms));
    m.insert("at_ms".into(), json!(at_ms));
    m
}

/// `message.taken`: what the caller left with the agent's `take_message` tool.
pub fn message(
    call: &CallMeta,
    at_ms: i64,
    name: &str,
    callback: &str,
    message: &str,
) -> Map<String, Value> {
    let mut m = call_fields(call);
    m.insert("name".into(), json!(name));
    m.insert("callback".into(), json!(callback));
    m.insert("message".into(), json!(message));
    m.insert("at_ms".into(), json!(at_ms));
    m
}

/// What the call's end says when the store has nothing better.
pub struct Ending<'a> {
    pub at_ms: i64,
    pub reason: &'a str,
    pub turns: u64,
}

/// What the store holds of an ended call.
#[derive(Default)]
pub struct Stored {
    pub row: Option<CallRow>,
    pub items: Vec<ItemRow>,
    pub metrics: Vec<TurnMetricsRow>,
    pub summary: Option<SummaryRow>,
    /// Where its recording is fetched, if it has one.
    pub recording_url: Option<String>,
}

/// `call.ended`: the call's row (its start, end, reason and audio totals), its items as the
/// transcript, its turn metrics, summary and recording. Without a row (its start never
/// reached the store), what the end event said.
pub fn ended(
    call: &CallMeta,
    end: &Ending<'_>,
    stored: &Stored,
    redactor: &Redactor,
) -> Map<String, Value> {
    let row = stored.row.as_ref();
    let (items, metrics) = (&stored.items, &stored.metrics);
    let mut m = call_fields(call);
    let started_at_ms = row.map(|r| r.started_at_ms);
    let ended_at_ms = row.and_then(|r| r.ended_at_ms).unwrap_or(end.at_ms);
    let duration_ms = started_at_ms.map(|s| ended_at_ms.saturating_sub(s).max(0));
    m.insert("started_at_ms".into(), json!(started_at_ms));
    m.insert("ended_at_ms".into(), json!(ended_at_ms));
    m.insert("duration_ms".into(), json!(duration_ms));
    m.insert(
        "end_reason".into(),
        json!(row
            .and_then(|r| r.end_reason.as_deref())
            .unwrap_or(end.reason)),
    );
    m.insert(
        "turns".into(),
        json!(row.map_or(end.turns as i64, |r| r.turns)),
    );
    let transcript: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "item_id": i.item_id,
                "turn_id": i.turn_id,
                "role": i.role,
                "source": i.source,
                "text": redactor.redact(&i.text),
                "heard": i.heard.as_deref().map(|h| redactor.redact(h)),
                "created_at_ms": i.created_at_ms,
            })
        })
        .collect();
    m.insert("transcript".into(), json!(transcript));
    let turns: Vec<Value> = metrics
        .iter()
        .map(|t| json!({"turn_id": t.turn_id, "at_ms": t.at_ms, "timings": t.metrics}))
        .collect();
    m.insert(
        "metrics".into(),
        json!({
            "caller_audio_ms": row.map(|r| r.caller_audio_ms),
            "agent_audio_ms": row.map(|r| r.agent_audio_ms),
            "turns": turns,
        }),
    );
    let (summary, fields) = match &stored.summary {
        Some(s) => {
            let mut fields = s.fields.clone();
            redactor.redact_json(&mut fields);
            (json!(redactor.redact(&s.text)), fields)
        }
        None => (Value::Null, Value::Null),
    };
    m.insert("summary".into(), summary);
    m.insert("fields".into(), fields);
    m.insert("recording_url".into(), json!(stored.recording_url));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Sensitive;

    #[test]
    fn the_transcript_is_masked_and_the_later_fields_are_null() {
        let call = CallMeta {
            call_id: "call_1".into(),
            org: Some("acme".into()),
            sub: "ada".into(),
            agent: "desk".into(),
        };
        let item = ItemRow {
            call_id: "call_1".into(),
            item_id: 1,
            turn_id: Some(1),
            role: "user".into(),
            text: "my card is 4111 1111 1111 1111".into(),
            heard: None,
            source: "text".into(),
            created_at_ms: 5,
        };
        let end = Ending {
            at_ms: 9,
            reason: "client_ended",
            turns: 1,
        };
        let stored = Stored {
            items: vec![item],
            ..Stored::default()
        };
        let data = ended(&call, &end, &stored, &Redactor::new(&[Sensitive::Card]));
        let body = envelope("whd_1", CALL_ENDED, 10, data);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "call.ended");
        assert_eq!(v["data"]["transcript"][0]["text"], "my card is [card]");
        assert!(!body.contains("4111"), "{body}");
        assert_eq!(v["data"]["end_reason"], "client_ended");
        for key in ["summary", "fields", "recording_url"] {
            assert!(v["data"].get(key).is_some_and(Value::is_null), "{key}");
        }
    }

    #[test]
    fn the_summary_fields_and_recording_link_are_carried_masked() {
        let call = CallMeta {
            call_id: "call_1".into(),
            org: None,
            sub: "ada".into(),
            agent: "desk".into(),
        };
        let stored = Stored {
            summary: Some(SummaryRow {
                call_id: "call_1".into(),
                org: None,
                sub: "ada".into(),
                agent: "desk".into(),
                text: "Ada paid with 4111 1111 1111 1111.".into(),
                fields: json!({"name": "Ada", "card": "4111 1111 1111 1111"}),
                method: "json".into(),
                engine: "hosted".into(),
                at_ms: 8,
            }),
            recording_url: Some("https://voice.example.com/api/calls/call_1/recording".into()),
            ..Stored::default()
        };
        let end = Ending {
            at_ms: 9,
            reason: "client_ended",
            turns: 1,
        };
        let data = ended(&call, &end, &stored, &Redactor::new(&[Sensitive::Card]));
        assert_eq!(data["summary"], "Ada paid with [card].");
        assert_eq!(data["fields"], json!({"name": "Ada", "card": "[card]"}));
        assert_eq!(
            data["recording_url"],
            "https://voice.example.com/api/calls/call_1/recording"
        );
    }
}
