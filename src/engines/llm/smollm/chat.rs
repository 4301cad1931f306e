//! Chat messages, the ChatML template and `{{name}}` variables in the system prompt.
//!
//! Each message is encoded on its own as `<|im_start|>role\n{content}<|im_end|>\n`; since
//! special tokens split the text anyway, the concatenation equals encoding the whole
//! rendered prompt, and the per-message pieces make history trimming cheap.

use std::collections::HashMap;

use super::error::LlmError;
use super::tokenizer::SmolTokenizer;

pub use crate::engines::llm::{ChatMessage, Role};

pub use crate::agents::substitute_variables;

/// The ChatML text of a conversation followed by the assistant header (for logs and tests;
/// generation encodes message by message, see [`encode_message`]).
pub fn render_prompt(messages: &[ChatMessage], vars: &HashMap<String, String>) -> String {
    let mut s = String::new();
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role.as_str());
        s.push('\n');
        if m.role == Role::System {
            s.push_str(&substitute_variables(&m.content, vars));
        } else {
            s.push_str(&m.content);
        }
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Token ids of one message, `<|im_start|>role\n{content}<|im_end|>\n`. Content text that
/// looks like a special token stays plain text.
pub fn encode_message(
    tok: &SmolTokenizer,
    message: &ChatMessage,
    vars: &HashMap<String, String>,
) -> Result<Vec<u32>, LlmError> {
    let content = if message.role == Role::System {
        substitute_variables(&message.content, vars)
    } else {
        message.content.clone()
    };
    let mut ids = vec![tok.im_start];
    ids.extend(tok.encode_plain(&format!("{}\n{}", message.role.as_str(), content))?);
    ids.push(tok.im_end);
    ids.extend(tok.encode_plain("\n")?);
    Ok(ids)
}

/// Ids of the assistant header `<|im_start|>assistant\n` that opens the reply.
pub fn assistant_header(tok: &SmolTokenizer) -> Result<Vec<u32>, LlmError> {
    let mut ids = vec![tok.im_start];
    ids.extend(tok.encode_plain("assistant\n")?);
    Ok(ids)
}

/// Ids of the whole prompt: every message, then the assistant header (no trimming).
pub fn encode_chat(
    tok: &SmolTokenizer,
    messages: &[ChatMessage],
    vars: &HashMap<String, String>,
) -> Result<Vec<u32>, LlmError> {
    let mut ids = Vec::new();
    for m in messages {
        ids.extend(encode_message(tok, m, vars)?);
    }
    ids.extend(assistant_header(tok)?);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_known_variables() {
        let v = vars(&[("business", "Acme Dental"), ("hours", "9 to 5")]);
        assert_eq!(
            substitute_variables("You work at {{business}}, open {{ hours }}.", &v),
            "You work at Acme Dental, open 9 to 5."
        );
    }

    #[test]
    fn leaves_unknown_and_unclosed_variables() {
        let v = vars(&[("a", "1")]);
        assert_eq!(substitute_variables("{{a}} {{b}} {{a", &v), "1 {{b}} {{a");
        assert_eq!(substitute_variables("no vars", &v), "no vars");
    }

    #[test]
    fn renders_chatml() {
        let msgs = [ChatMessage::system("Be {{tone}}."), ChatMessage::user("Hi")];
        let p = render_prompt(&msgs, &vars(&[("tone", "brief")]));
        assert_eq!(
            p,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
