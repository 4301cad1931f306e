//! Running one tool call: the result the model is given (JSON text), whether it failed (a
//! stable kind: `unknown_tool`, `bad_arguments`, `timeout`, `http_status`, `bad_json`,
//! `too_large`, `unreachable`, `not_configured`; `cancelled` is the call's own), and what a
//! built-in asks the call to do once the reply has been said. A failure is a result like any
//! other: the model reads `{"error": "..."}` and answers with it.

use serde_json::{json, Map, Value};

use super::{Tool, ToolKind};
use crate::engines::llm::ToolCall;

/// The longest text a built-in keeps of one argument, in characters.
const MAX_ARGUMENT_CHARS: usize = 1000;

/// What a built-in tool asks of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// End the call once the reply has been said.
    EndCall,
    /// Hand the call on to `to` once the reply has been said.
    Transfer {
        to: String,
    },
    /// A message was taken.
    Message {
        name: String,
        callback: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The result the model is given.
    pub content: String,
    /// Why the tool failed, if it did.
    pub error: Option<&'static str>,
    pub effect: Effect,
}

impl ToolOutcome {
    pub fn ok(content: impl Into<String>, effect: Effect) -> Self {
        Self {
            content: content.into(),
            error: None,
            effect,
        }
    }

    pub fn failed(kind: &'static str, why: &str) -> Self {
        Self {
            content: json!({ "error": why }).to_string(),
            error: Some(kind),
            effect: Effect::None,
        }
    }

    /// A call stopped because the caller spoke over the reply.
    pub fn cancelled() -> Self {
        Self::failed("cancelled", "cancelled: the caller interrupted")
    }
}

/// A text argument, trimmed and cut to [`MAX_ARGUMENT_CHARS`].
fn text(args: &Map<String, Value>, key: &str) -> String {
    let v = match args.get(key) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    v.chars().take(MAX_ARGUMENT_CHARS).collect()
}

/// Runs `call` with the agent's `tools`. Cancel by dropping the future.
pub async fn run(tools: &[Tool], call: &ToolCall, call_id: &str) -> ToolOutcome {
    let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
        return ToolOutcome::failed("unknown_tool", "there is no tool of that name");
    };
    let args = match call.arguments.trim() {
        "" => Map::new(),
        a => match serde_json::from_str::<Value>(a) {
            Ok(Value::Object(m)) => m,
            _ => {
                return ToolOutcome::failed("bad_arguments", "the arguments must be a JSON object")
            }
        },
    };
    match tool.kind {
        ToolKind::Http => match super::http::call(tool, &args, call_id).await {
            Ok(content) => ToolOutcome::ok(content, Effect::None),
            Err((kind, why)) => ToolOutcome::failed(kind, &why),
        },
        ToolKind::EndCall => ToolOutcome::ok(
            json!({"ok": true, "note": "the call ends after this reply"}).to_string(),
            Effect::EndCall,
        ),
        ToolKind::Transfer => {
            let to = text(&args, "to");
            if to.is_empty() {
                return ToolOutcome::failed("bad_arguments", "say who to transfer to in `to`");
            }
            ToolOutcome::ok(
                json!({"ok": true, "note": "the caller is transferred after this reply"})
                    .to_string(),
                Effect::Transfer { to },
            )
        }
        ToolKind::TakeMessage => {
            let (name, callback, message) = (
                text(&args, "name"),
                text(&args, "callback"),
                text(&args, "message"),
            );
            if message.is_empty() {
                return ToolOutcome::failed("bad_arguments", "the `message` is empty");
            }
            ToolOutcome::ok(
                json!({"ok": true, "note": "the message is taken"}).to_string(),
                Effect::Message {
                    name,
                    callback,
                    message,
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str, kind: ToolKind) -> Tool {
        Tool {
            name: name.into(),
            description: String::new(),
            parameters: None,
            kind,
            url: None,
            method: None,
            timeout_ms: None,
            auth_header_env: None,
        }
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[tokio::test]
    async fn built_ins_check_their_arguments_and_say_what_the_call_does_next() {
        let tools = [
            builtin("bye", ToolKind::EndCall),
            builtin("transfer", ToolKind::Transfer),
            builtin("note", ToolKind::TakeMessage),
        ];
        assert_eq!(
            run(&tools, &call("bye", ""), "c").await.effect,
            Effect::EndCall
        );
        let t = run(&tools, &call("transfer", r#"{"to": " sales "}"#), "c").await;
        assert_eq!(t.effect, Effect::Transfer { to: "sales".into() });
        let t = run(&tools, &call("transfer", "{}"), "c").await;
        assert_eq!((t.error, t.effect), (Some("bad_arguments"), Effect::None));
        let m = run(
            &tools,
            &call(
                "note",
                r#"{"name": "Ada", "callback": 5551234, "message": "call me"}"#,
            ),
            "c",
        )
        .await;
        assert_eq!(
            m.effect,
            Effect::Message {
                name: "Ada".into(),
                callback: "5551234".into(),
                message: "call me".into()
            }
        );
        let bad = run(&tools, &call("bye", "[1, 2]"), "c").await;
        assert_eq!(bad.error, Some("bad_arguments"));
        let unknown = run(&tools, &call("rm", "{}"), "c").await;
        assert_eq!(unknown.error, Some("unknown_tool"));
        assert!(unknown.content.contains("\"error\""));
    }
}
