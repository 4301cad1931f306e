//! Language models: stream a reply, as text deltas, to a conversation.

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
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
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
