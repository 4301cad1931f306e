//! A call's conversation: user and assistant messages, bounded (oldest dropped).

use std::collections::VecDeque;

use crate::engines::llm::{ChatMessage, Role};

#[derive(Debug, Clone)]
pub struct History {
    messages: VecDeque<ChatMessage>,
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
        let content = content.into();
        if content.trim().is_empty() {
            return;
        }
        self.messages.push_back(ChatMessage::new(role, content));
        while self.messages.len() > self.limit {
            self.messages.pop_front();
        }
    }

    pub fn messages(&self) -> Vec<ChatMessage> {
        self.messages.iter().cloned().collect()
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
}
