//! A call's conversation: user and assistant messages, and the tool calls and results between
//! them, bounded (oldest dropped; a tool exchange cut in two is left out of what a model is
//! sent, see [`crate::engines::llm::well_formed`]).

use std::collections::VecDeque;

use crate::engines::llm::{ChatMessage, Role};

#[derive(Debug, Clone)]
pub struct History {
    /// Each message with the conversation item it came from, when it has one.
    messages: VecDeque<(Option<u64>, ChatMessage)>,
    limit: usize,
}

impl History {
    pub fn new(limit: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            limit: limit.max(2),
        }
    }

    pub fn push(&mut self, role: Role, content: impl Into<String>) {
        self.push_item(role, content, None)
    }

    /// Adds a message for conversation item `item` (empty content is not kept).
    pub fn push_item(&mut self, role: Role, content: impl Into<String>, item: Option<u64>) {
        let content = content.into();
        if content.trim().is_empty() {
            return;
        }
        self.messages
            .push_back((item, ChatMessage::new(role, content)));
        while self.messages.len() > self.limit {
            self.messages.pop_front();
        }
    }

    /// Adds a message as it is (a tool call or result is kept with empty content).
    pub fn push_message(&mut self, item: Option<u64>, message: ChatMessage) {
        if message.content.trim().is_empty() && !message.is_tool_step() {
            return;
        }
        self.messages.push_back((item, message));
        while self.messages.len() > self.limit {
            self.messages.pop_front();
        }
    }

    /// Replaces the text of item `item`'s message (removes it when `content` is empty); false
    /// if the item is not in history.
    pub fn set_item(&mut self, item: u64, content: &str) -> bool {
        let Some(i) = self.messages.iter().position(|(id, _)| *id == Some(item)) else {
            return false;
        };
        if content.trim().is_empty() {
            self.messages.remove(i);
        } else if let Some((_, m)) = self.messages.get_mut(i) {
            m.content = content.trim().to_string();
        }
        true
    }

    pub fn messages(&self) -> Vec<ChatMessage> {
        self.messages.iter().map(|(_, m)| m.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_messages() {
        let mut h = History::new(3);
        for i in 0..5 {
            h.push(Role::User, format!("m{i}"));
        }
        h.push(Role::Assistant, "  ");
        let texts: Vec<String> = h.messages().into_iter().map(|m| m.content).collect();
        assert_eq!(texts, vec!["m2", "m3", "m4"]);
    }

    #[test]
    fn an_item_can_be_cut_or_removed() {
        let mut h = History::new(10);
        h.push_item(Role::User, "hi", Some(1));
        h.push_item(Role::Assistant, "Hello there. How can I help?", Some(2));
        assert!(h.set_item(2, "Hello there."));
        assert_eq!(h.messages()[1].content, "Hello there.");
        assert!(h.set_item(2, ""));
        assert_eq!(h.len(), 1);
        assert!(!h.set_item(7, "x"));
    }
}
