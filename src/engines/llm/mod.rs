//! Language models: stream a reply, as text deltas, to a conversation. A request may offer
//! tools ([`ToolOffer`]); a model that calls functions leaves the calls it made in the offer's
//! tap and streams whatever text it wrote besides. Models that do not call functions ignore
//! the offer (the local SmolLM2 does).

pub mod fake;
pub mod fallback;
pub mod local;
pub mod openai;
pub mod smollm;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::EngineError;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's tool call (`tool_call_id`).
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A function the model asked to call: its id (answered by a `tool` message of that id), the
/// tool's name and its arguments as the model wrote them (JSON text, not checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// An assistant message's tool calls (their results follow as `tool` messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    /// An assistant message that calls tools (and says `content`, maybe nothing).
    pub fn tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }
    /// The result of tool call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
    /// Part of a tool exchange (a call or a result) rather than words someone said.
    pub fn is_tool_step(&self) -> bool {
        self.role == Role::Tool || !self.tool_calls.is_empty()
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// One reply to generate.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The call this belongs to; engines may keep per-session state (a KV cache) under it.
    pub session_id: String,
    /// The agent's system prompt with variables filled in.
    pub system: String,
    /// The conversation so far, oldest first, ending with the user's new message.
    pub messages: Vec<ChatMessage>,
    pub max_tokens: usize,
    pub temperature: f32,
    /// Ask for one JSON object (models whose [`LanguageModel::json_output`] is true).
    pub json: bool,
    /// Where an engine that counts tokens leaves the reply's counts (metering).
    pub tokens: Option<TokenTap>,
    /// Tools the model may call, and where it leaves the calls it made.
    pub tools: Option<ToolOffer>,
    /// Set by a turn: whether the reply's first words are still to be written. A local model
    /// serves first words before other replies' tails (see `engines::cpu`); without it the
    /// whole reply counts as first words.
    pub first_words: Option<crate::engines::cpu::FirstWords>,
}

/// A tool as the model sees it: a function with a JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// A JSON Schema object.
    pub parameters: serde_json::Value,
}

/// The tools a request offers, and the tap where an engine that calls functions leaves the
/// calls of its reply (set once the reply is complete; left empty by engines that do not call
/// functions, and by a reply that called none).
#[derive(Debug, Clone, Default)]
pub struct ToolOffer {
    pub tools: std::sync::Arc<[ToolDef]>,
    calls: std::sync::Arc<std::sync::Mutex<Vec<ToolCall>>>,
}

impl ToolOffer {
    pub fn new(tools: std::sync::Arc<[ToolDef]>) -> Self {
        Self {
            tools,
            calls: Default::default(),
        }
    }

    pub fn set_calls(&self, calls: Vec<ToolCall>) {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner()) = calls;
    }

    pub fn take_calls(&self) -> Vec<ToolCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The conversation with every tool exchange made whole: a `tool` message is kept only right
/// after the assistant message that called it, and an assistant's tool calls only when all
/// their results follow (a history cut short, or a note put between, could break the pairs;
/// providers refuse such a conversation).
pub fn well_formed(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut i = 0;
    while i < messages.len() {
        let m = &messages[i];
        if m.role == Role::Tool {
            // Not right after its call: dropped.
            i += 1;
            continue;
        }
        if m.tool_calls.is_empty() {
            out.push(m.clone());
            i += 1;
            continue;
        }
        let mut results = Vec::new();
        let mut j = i + 1;
        while let Some(r) = messages.get(j).filter(|r| r.role == Role::Tool) {
            results.push(r.clone());
            j += 1;
        }
        let answered = m.tool_calls.iter().all(|c| {
            results
                .iter()
                .any(|r| r.tool_call_id.as_deref() == Some(c.id.as_str()))
        });
        if answered {
            out.push(m.clone());
            out.extend(results.into_iter().filter(|r| {
                m.tool_calls
                    .iter()
                    .any(|c| r.tool_call_id.as_deref() == Some(c.id.as_str()))
            }));
        } else if !m.content.trim().is_empty() {
            out.push(ChatMessage::assistant(m.content.clone()));
        }
        i = j;
    }
    out
}

/// The token counts of one reply, as the engine that wrote it counted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCount {
    /// Who wrote the reply: `local` or the provider's name (the member of a chain that answered).
    pub engine: String,
    pub prompt: u64,
    pub completion: u64,
}

/// Where an engine that knows its token counts leaves them for a reply; engines that do not
/// know them leave it empty.
#[derive(Debug, Clone, Default)]
pub struct TokenTap(std::sync::Arc<std::sync::Mutex<Option<TokenCount>>>);

impl TokenTap {
    pub fn set(&self, count: TokenCount) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(count);
    }

    pub fn take(&self) -> Option<TokenCount> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

pub trait LanguageModel: Send + Sync {
    fn name(&self) -> String;
    /// Who did the work, for usage: `local`, or the provider's name (`openai`, `deepgram`);
    /// a chain names the member it tries first.
    fn usage_label(&self) -> String {
        "local".into()
    }
    /// Streams the reply as text deltas; the stream ends when the reply is complete. Must stop
    /// promptly when `cancel` fires.
    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>>;
    /// A call is starting: the engine may process the system prompt and history now, so the
    /// first reply starts sooner. `request.messages` is the history (may be empty).
    fn warm_up(&self, _request: ChatRequest, _cancel: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    /// Whether the model answers with a JSON object when a request asks for one.
    fn json_output(&self) -> bool {
        false
    }
    /// The session ended: drop whatever is kept for it.
    fn release(&self, _session_id: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
        }
    }

    #[test]
    fn tool_exchanges_are_kept_whole_or_not_at_all() {
        let messages = vec![
            ChatMessage::tool_result("old", "orphan of a cut history"),
            ChatMessage::user("hi"),
            ChatMessage::tool_calls("", vec![call("a"), call("b")]),
            ChatMessage::tool_result("a", "1"),
            ChatMessage::tool_result("b", "2"),
            ChatMessage::assistant("done"),
            ChatMessage::tool_calls("Let me see.", vec![call("c")]),
            ChatMessage::system("a note in between"),
            ChatMessage::tool_result("c", "late"),
        ];
        let kept = well_formed(&messages);
        let roles: Vec<&str> = kept.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            [
                "user",
                "assistant",
                "tool",
                "tool",
                "assistant",
                "assistant",
                "system"
            ]
        );
        assert_eq!(kept[1].tool_calls.len(), 2);
        assert_eq!(kept[5].content, "Let me see.");
        assert!(kept[5].tool_calls.is_empty());
    }
}
