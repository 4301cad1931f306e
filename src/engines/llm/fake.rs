//! Deterministic test engine: echoes the user's last message word by word. For protocol tests
//! only; never a default.
//!
//! It calls tools on cue, for tests of tools: when the user's last message holds
//! `[tool:NAME {json arguments}]` (the arguments may be left out: `{}`) and the request offers
//! a tool `NAME`, the reply calls it with those arguments and says the text before the first
//! cue (nothing when there is none). Several cues make several calls in one reply. Once the
//! conversation ends with tool results, the reply is `Tool NAME said: RESULT.` for each of
//! them. A cue naming a tool the request does not offer is echoed like any text.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{ChatMessage, ChatRequest, LanguageModel, Role, ToolCall};
use crate::engines::EngineError;

#[derive(Default)]
pub struct FakeLlm {
    /// Pause between words, to let tests interrupt a reply mid-stream.
    pub word_delay: Duration,
}

/// The cues `[tool:NAME {json}]` in `text`: the text before the first, and each (name,
/// arguments).
pub fn tool_cues(text: &str) -> (String, Vec<(String, String)>) {
    let mut cues = Vec::new();
    let before = text.split("[tool:").next().unwrap_or_default().trim();
    let mut rest = text;
    while let Some(start) = rest.find("[tool:") {
        let after = &rest[start + 6..];
        let name_end = after
            .find(|c: char| c.is_whitespace() || c == ']' || c == '{')
            .unwrap_or(after.len());
        let name = after[..name_end].to_string();
        let mut depth = 0i32;
        let mut end = None;
        for (i, c) in after[name_end..].char_indices() {
            match c {
                '{' | '[' => depth += 1,
                '}' => depth -= 1,
                ']' if depth == 0 => {
                    end = Some(name_end + i);
                    break;
                }
                ']' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let args = after[name_end..end].trim();
        let args = if args.is_empty() { "{}" } else { args };
        cues.push((name, args.to_string()));
        rest = &after[end + 1..];
    }
    (before.to_string(), cues)
}

/// The reply to a conversation that ends with tool results: what each tool said.
fn tool_results(messages: &[ChatMessage]) -> Option<String> {
    let trailing = messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .count();
    if trailing == 0 {
        return None;
    }
    let results = &messages[messages.len() - trailing..];
    let calls = messages[..messages.len() - trailing]
        .last()
        .map(|m| m.tool_calls.as_slice())
        .unwrap_or_default();
    let said: Vec<String> = results
        .iter()
        .map(|r| {
            let name = calls
                .iter()
                .find(|c| Some(c.id.as_str()) == r.tool_call_id.as_deref())
                .map_or("unknown", |c| c.name.as_str());
            format!("Tool {name} said: {}.", r.content.trim())
        })
        .collect();
    Some(said.join(" "))
}

impl LanguageModel for FakeLlm {
    fn name(&self) -> String {
        "fake (test engine)".into()
    }

    fn usage_label(&self) -> String {
        "fake".into()
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let turns = request
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        let mut reply = format!("You said: {last}. That is turn {turns}.");
        if let Some(said) = tool_results(&request.messages) {
            reply = said;
        } else if let Some(offer) = &request.tools {
            let (before, cues) = tool_cues(&last);
            let made = request
                .messages
                .iter()
                .map(|m| m.tool_calls.len())
                .sum::<usize>();
            let calls: Vec<ToolCall> = cues
                .into_iter()
                .filter(|(name, _)| offer.tools.iter().any(|t| &t.name == name))
                .enumerate()
                .map(|(i, (name, arguments))| ToolCall {
                    id: format!("fake_call_{}", made + i + 1),
                    name,
                    arguments,
                })
                .collect();
            if !calls.is_empty() {
                offer.set_calls(calls);
                reply = before;
            }
        }
        let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
        let delay = self.word_delay;
        futures::stream::iter(words)
            .then(move |w| {
                let cancel = cancel.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::select! {
                            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    if cancel.is_cancelled() {
                        return Err(EngineError::Cancelled);
                    }
                    Ok(w)
                }
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_give_the_text_before_and_each_call() {
        let (before, cues) = tool_cues(
            r#"Let me look. [tool:weather {"city": "Oslo", "days": [1, 2]}] [tool:end_call]"#,
        );
        assert_eq!(before, "Let me look.");
        assert_eq!(
            cues,
            vec![
                (
                    "weather".into(),
                    r#"{"city": "Oslo", "days": [1, 2]}"#.into()
                ),
                ("end_call".into(), "{}".into())
            ]
        );
        assert_eq!(tool_cues("no cue").1, vec![]);
    }
}
