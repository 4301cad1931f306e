//! Agents: who the assistant is on a call (system prompt, greeting, voice, sampling).

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub name: String,
    /// System prompt; `{{variable}}` placeholders are filled from `start_call.variables`.
    pub system_prompt: String,
    pub voice: Option<String>,
    pub temperature: f32,
    pub max_tokens: usize,
}

impl Agent {
    /// The system prompt with `{{name}}` placeholders replaced by the call's variables.
    pub fn render_prompt(&self, variables: &HashMap<String, String>) -> String {
        let mut out = self.system_prompt.clone();
        for (k, v) in variables {
            out = out.replace(&format!("{{{{{k}}}}}"), v);
        }
        out
    }
}

/// The agents this server knows, by name, with one default.
#[derive(Debug, Clone)]
pub struct Agents {
    by_name: HashMap<String, Arc<Agent>>,
    default: String,
}

impl Agents {
    pub fn builtin() -> Self {
        let receptionist = Agent {
            name: "receptionist".into(),
            system_prompt: "You are a friendly receptionist on a phone call. Answer in one or two short sentences. The caller's name is {{name}}.".into(),
            voice: None,
            temperature: 0.3,
            max_tokens: 120,
        };
        let mut by_name = HashMap::new();
        by_name.insert(receptionist.name.clone(), Arc::new(receptionist));
        Self {
            by_name,
            default: "receptionist".into(),
        }
    }

    /// The named agent, or the default for `None`.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Agent>> {
        self.by_name.get(name.unwrap_or(&self.default)).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_variables_and_knows_its_default() {
        let agents = Agents::builtin();
        let a = agents.get(None).unwrap();
        let vars = HashMap::from([("name".to_string(), "Ada".to_string())]);
        assert!(a.render_prompt(&vars).contains("The caller's name is Ada."));
        assert!(agents.get(Some("nobody")).is_none());
    }
}
