//! Flows: an agent's call script, for what phone agents need and small models cannot do alone
//! (menus, business hours, capturing an answer, transfers). A flow is a set of named nodes
//! starting at `start`; each node says something and leads on:
//!
//! - `say`: speaks, then goes to `next`;
//! - `listen`: asks, captures the caller's answer (spoken or keyed) into a variable, with
//!   validation and retries;
//! - `menu`: options chosen by a key or by a spoken keyword, with retries and a timeout;
//! - `hours`: branches on business hours in a time zone, with holidays;
//! - `llm`: free conversation with the agent's language model until an exit phrase (or a tool
//!   such as `end_call`) ends it;
//! - `transfer`: to a phone number or to the operators' queue on the dashboard;
//! - `hangup`: ends the call with a farewell.
//!
//! Flows are checked when they are loaded ([`Flow::validate`]): an unknown or unreachable
//! node, or a loop that never waits for the caller, is refused with the reason. Only `llm`
//! nodes use the language model, so a flow works the same with every model, the small local
//! one included. Running a flow is [`run::FlowState`].

pub mod hours;
pub mod run;
mod understand;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

pub use hours::Hours;
pub use run::{FlowInput, FlowState, Step, Then};

/// The most nodes a flow may have.
pub const MAX_NODES: usize = 100;
/// The longest text a node says, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// The most options of a menu.
pub const MAX_OPTIONS: usize = 12;
/// The most retries of a menu or a listen.
pub const MAX_RETRIES: u32 = 5;
/// A menu's or a listen's wait for the caller, unless it sets one, and the range it may set.
pub const DEFAULT_TIMEOUT_MS: u64 = 8_000;
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 1_000..=60_000;
/// The longest `pattern` of a listen, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;
/// Said before a menu or a question is asked again, unless the node sets its own.
pub const DEFAULT_RETRY_SAY: &str = "Sorry, I didn't catch that.";
/// The transfer target that puts the call in the operators' queue.
pub const OPERATORS: &str = "operators";

/// An agent's flow, as `agents.toml` (`[agent.flow]`) and the agents API write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// The node the call starts at.
    pub start: String,
    /// The nodes by name.
    pub nodes: BTreeMap<String, Node>,
}

/// One node of a flow; `type` names its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    Say(SayNode),
    Listen(ListenNode),
    Menu(MenuNode),
    Hours(HoursNode),
    Llm(LlmNode),
    Transfer(TransferNode),
    Hangup(HangupNode),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SayNode {
    pub say: String,
    pub next: String,
}

/// How a `listen` or a `menu` asks again (their `retries`, `retry_say`, `timeout_ms` and
/// `fail_next` fields).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Retry<'a> {
    /// How many times it asks again after an answer it cannot use or a silence (default 2).
    pub retries: Option<u32>,
    /// Said before it asks again (default "Sorry, I didn't catch that.").
    pub retry_say: Option<&'a str>,
    /// How long it waits for the caller once it has asked, in ms (default 8000).
    pub timeout_ms: Option<u64>,
    /// Where the call goes when the retries run out; without one the call ends.
    pub fail_next: Option<&'a str>,
}

impl Retry<'_> {
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(2)
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }

    pub fn retry_say(&self) -> &str {
        self.retry_say.unwrap_or(DEFAULT_RETRY_SAY)
    }
}

/// The retry fields of a node that asks, and the view of them.
macro_rules! retry_fields {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$m])*
        pub struct $name {
            $($(#[$fm])* pub $f: $t,)*
            /// How many times it asks again after an answer it cannot use or a silence
            /// (0 to 5, default 2).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub retries: Option<u32>,
            /// Said before it asks again (default "Sorry, I didn't catch that.").
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub retry_say: Option<String>,
            /// How long it waits for the caller once it has asked, in ms (1000 to 60000,
            /// default 8000).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timeout_ms: Option<u64>,
            /// Where the call goes when the retries run out; without one the call ends.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub fail_next: Option<String>,
        }

        impl $name {
            pub fn retry(&self) -> Retry<'_> {
                Retry {
                    retries: self.retries,
                    retry_say: self.retry_say.as_deref(),
                    timeout_ms: self.timeout_ms,
                    fail_next: self.fail_next.as_deref(),
                }
            }
        }
    };
}

/// What a `listen` takes as an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Any words (or keys): the answer as said.
    #[default]
    Any,
    /// Digits, keyed or spoken ("four two" or "42"): the digits.
    Digits,
    /// Yes or no, spoken or keyed (1 yes, 2 no): `yes` or `no`.
    YesNo,
}

retry_fields! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenNode {
    /// The question.
    pub say: String,
    /// Where the answer goes; `{{name}}` in later texts says it.
    pub variable: String,
    #[serde(default)]
    pub expect: Expect,
    /// A regular expression the answer (after `expect`) must match, e.g. `^\d{5}$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Where a valid answer leads.
    pub next: String,
}
}

retry_fields! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuNode {
    /// The menu read to the caller ("For opening hours press 1 or say hours. ...").
    pub say: String,
    pub options: Vec<MenuOption>,
}
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MenuOption {
    /// The key that picks it (`0`-`9`, `*`, `#`); spoken as a number it picks it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// Words or phrases that, said, pick it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    pub next: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursNode {
    /// An IANA time zone (`Europe/London`).
    pub time_zone: String,
    /// Opening hours by day (`mon` .. `sun`): `"09:00-17:00"`, or several ranges separated by
    /// commas (`"09:00-12:00, 13:00-17:30"`); `24:00` ends a day. A day not listed is closed.
    #[serde(default)]
    pub open: BTreeMap<String, String>,
    /// Dates closed all day (`2026-12-25`), in the time zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    pub open_next: String,
    pub closed_next: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmNode {
    /// Said on entering the node (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub say: String,
    /// Added to the agent's system prompt while the call is in this node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prompt: String,
    /// Words that, said by the caller, leave the conversation for `next`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_phrases: Vec<String>,
    /// The most caller turns the model answers here before the call goes to `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Where an exit phrase or `max_turns` leads (needed when either is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferNode {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub say: String,
    /// A phone number (`+15551234567`) or `operators` (the dashboard's queue).
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HangupNode {
    /// The farewell (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub say: String,
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Say(_) => "say",
            Node::Listen(_) => "listen",
            Node::Menu(_) => "menu",
            Node::Hours(_) => "hours",
            Node::Llm(_) => "llm",
            Node::Transfer(_) => "transfer",
            Node::Hangup(_) => "hangup",
        }
    }

    /// Whether the call waits for the caller at this node.
    pub fn waits(&self) -> bool {
        matches!(self, Node::Listen(_) | Node::Menu(_) | Node::Llm(_))
    }

    /// The nodes this one may lead to, each with the field that names it.
    pub fn edges(&self) -> Vec<(&'static str, &str)> {
        match self {
            Node::Say(n) => vec![("next", n.next.as_str())],
            Node::Listen(n) => [
                Some(("next", n.next.as_str())),
                n.retry().fail_next.map(|t| ("fail_next", t)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Node::Menu(n) => n
                .options
                .iter()
                .map(|o| ("options.next", o.next.as_str()))
                .chain(n.retry().fail_next.map(|t| ("fail_next", t)))
                .collect(),
            Node::Hours(n) => vec![
                ("open_next", n.open_next.as_str()),
                ("closed_next", n.closed_next.as_str()),
            ],
            Node::Llm(n) => n.next.as_deref().map(|t| ("next", t)).into_iter().collect(),
            Node::Transfer(_) | Node::Hangup(_) => Vec::new(),
        }
    }

    /// The texts the node says, for the size check.
    fn texts(&self) -> Vec<(&'static str, &str)> {
        match self {
            Node::Say(n) => vec![("say", &n.say)],
            Node::Listen(n) => [
                Some(("say", n.say.as_str())),
                n.retry().retry_say.map(|t| ("retry_say", t)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Node::Menu(n) => [
                Some(("say", n.say.as_str())),
                n.retry().retry_say.map(|t| ("retry_say", t)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Node::Hours(_) => Vec::new(),
            Node::Llm(n) => vec![("say", &n.say), ("prompt", &n.prompt)],
            Node::Transfer(n) => vec![("say", &n.say)],
            Node::Hangup(n) => vec![("say", &n.say)],
        }
    }
}

/// A phone number as a transfer takes it: `+` and 7 to 15 digits.
pub fn is_phone_number(to: &str) -> bool {
    to.strip_prefix('+')
        .is_some_and(|d| (7..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

impl Flow {
    /// Checks the flow as it is loaded; the reason names the node and the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("flow: it has no nodes".into());
        }
        if self.nodes.len() > MAX_NODES {
            return Err(format!("flow: at most {MAX_NODES} nodes"));
        }
        if !self.nodes.contains_key(&self.start) {
            return Err(format!("flow: start `{}` is not a node", clip(&self.start)));
        }
        for (name, node) in &self.nodes {
            if !crate::agents::valid_variable_name(name) {
                return Err(format!(
                    "flow: node name `{}` must be 1 to 64 letters, digits, _, - or .",
                    clip(name)
                ));
            }
            for (field, target) in node.edges() {
                if !self.nodes.contains_key(target) {
                    return Err(format!(
                        "flow: node `{name}`: {field} `{}` is not a node",
                        clip(target)
                    ));
                }
            }
            for (field, text) in node.texts() {
                if text.chars().count() > MAX_TEXT_CHARS {
                    return Err(format!(
                        "flow: node `{name}`: {field} is longer than {MAX_TEXT_CHARS} characters"
                    ));
                }
            }
            check_node(node).map_err(|why| format!("flow: node `{name}`: {why}"))?;
        }
        self.check_reachable()?;
        self.check_loops()
    }

    fn check_reachable(&self) -> Result<(), String> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut todo = vec![self.start.as_str()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            if let Some(node) = self.nodes.get(name) {
                todo.extend(node.edges().into_iter().map(|(_, t)| t));
            }
        }
        match self.nodes.keys().find(|n| !seen.contains(n.as_str())) {
            Some(lost) => Err(format!(
                "flow: node `{lost}` is unreachable from start `{}`",
                self.start
            )),
            None => Ok(()),
        }
    }

    /// A loop through nodes that never wait for the caller would run forever.
    fn check_loops(&self) -> Result<(), String> {
        // Depth-first search over the nodes that pass straight on; 1 = on the path, 2 = done.
        let mut state: BTreeMap<&str, u8> = BTreeMap::new();
        for start in self.nodes.keys() {
            let mut path: Vec<(&str, usize)> = Vec::new();
            if state.contains_key(start.as_str()) {
                continue;
            }
            path.push((start, 0));
            state.insert(start, 1);
            while let Some((name, i)) = path.last().copied() {
                let node = &self.nodes[name];
                let edges = if node.waits() {
                    Vec::new()
                } else {
                    node.edges()
                };
                match edges.get(i) {
                    None => {
                        state.insert(name, 2);
                        path.pop();
                    }
                    Some((_, next)) => {
                        if let Some(last) = path.last_mut() {
                            last.1 += 1;
                        }
                        match state.get(next) {
                            Some(1) => {
                                let from = path.iter().position(|(n, _)| n == next).unwrap_or(0);
                                let mut names: Vec<&str> =
                                    path[from..].iter().map(|(n, _)| *n).collect();
                                names.push(next);
                                return Err(format!(
                                    "flow: the loop {} never waits for the caller (put a \
                                     listen, menu or llm node in it)",
                                    names.join(" -> ")
                                ));
                            }
                            Some(_) => {}
                            None => {
                                state.insert(next, 1);
                                path.push((next, 0));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn check_retry(r: Retry<'_>) -> Result<(), String> {
    if r.retries.is_some_and(|n| n > MAX_RETRIES) {
        return Err(format!("retries must be 0 to {MAX_RETRIES}"));
    }
    if r.timeout_ms.is_some_and(|t| !TIMEOUT_RANGE_MS.contains(&t)) {
        return Err(format!(
            "timeout_ms must be {} to {}",
            TIMEOUT_RANGE_MS.start(),
            TIMEOUT_RANGE_MS.end()
        ));
    }
    Ok(())
}

fn check_node(node: &Node) -> Result<(), String> {
    match node {
        Node::Say(n) if n.say.trim().is_empty() => Err("say is empty".into()),
        Node::Say(_) | Node::Hangup(_) => Ok(()),
        Node::Listen(n) => {
            if n.say.trim().is_empty() {
                return Err("say (the question) is empty".into());
            }
            if !crate::agents::valid_variable_name(&n.variable) {
                return Err(format!(
                    "variable `{}` must be 1 to 64 letters, digits, _, - or .",
                    clip(&n.variable)
                ));
            }
            if let Some(p) = &n.pattern {
                understand::pattern(p)?;
            }
            check_retry(n.retry())
        }
        Node::Menu(n) => {
            if n.say.trim().is_empty() {
                return Err("say (the menu) is empty".into());
            }
            if n.options.is_empty() || n.options.len() > MAX_OPTIONS {
                return Err(format!("a menu has 1 to {MAX_OPTIONS} options"));
            }
            for (i, o) in n.options.iter().enumerate() {
                if let Some(d) = &o.digit {
                    let one_key = d.len() == 1 && d.chars().all(crate::call::keys::is_key);
                    if !one_key {
                        return Err(format!("options[{i}]: digit must be one key (0-9, *, #)"));
                    }
                    if n.options[..i].iter().any(|p| p.digit == o.digit) {
                        return Err(format!("options[{i}]: digit {d} is used twice"));
                    }
                }
                if o.keywords.iter().any(|k| understand::words(k).is_empty()) {
                    return Err(format!("options[{i}]: a keyword has no words"));
                }
                if o.digit.is_none() && o.keywords.is_empty() {
                    return Err(format!("options[{i}]: give a digit, keywords or both"));
                }
            }
            check_retry(n.retry())
        }
        Node::Hours(n) => Hours::parse(n).map(|_| ()),
        Node::Llm(n) => {
            if (!n.exit_phrases.is_empty() || n.max_turns.is_some()) && n.next.is_none() {
                return Err("exit_phrases and max_turns need a next".into());
            }
            if n.exit_phrases
                .iter()
                .any(|k| understand::words(k).is_empty())
            {
                return Err("an exit phrase has no words".into());
            }
            if n.max_turns == Some(0) {
                return Err("max_turns must be at least 1".into());
            }
            Ok(())
        }
        Node::Transfer(n) => {
            if n.to == OPERATORS || is_phone_number(&n.to) {
                Ok(())
            } else {
                Err(format!(
                    "to must be a phone number (+ and 7 to 15 digits) or `{OPERATORS}`"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(text: &str) -> Result<Flow, String> {
        let f: Flow = toml::from_str(text).map_err(|e| e.to_string())?;
        f.validate().map(|()| f)
    }

    const BASE: &str = r#"
start = "hello"
[nodes.hello]
type = "say"
say = "Hello."
next = "menu"
[nodes.menu]
type = "menu"
say = "Press 1 for hours."
options = [{ digit = "1", keywords = ["hours"], next = "bye" }]
[nodes.bye]
type = "hangup"
say = "Goodbye."
"#;

    #[test]
    fn a_good_flow_passes() {
        let f = flow(BASE).unwrap();
        assert_eq!(f.nodes.len(), 3);
        assert_eq!(f.nodes["menu"].kind(), "menu");
    }

    #[test]
    fn unknown_node_is_named() {
        let err = flow(&BASE.replace("next = \"bye\"", "next = \"nowhere\"")).unwrap_err();
        assert_eq!(
            err,
            "flow: node `menu`: options.next `nowhere` is not a node"
        );
        let err = flow(&BASE.replace("start = \"hello\"", "start = \"hi\"")).unwrap_err();
        assert_eq!(err, "flow: start `hi` is not a node");
    }

    #[test]
    fn unreachable_node_is_named() {
        let text = format!("{BASE}\n[nodes.lost]\ntype = \"hangup\"\n");
        assert_eq!(
            flow(&text).unwrap_err(),
            "flow: node `lost` is unreachable from start `hello`"
        );
    }

    #[test]
    fn loop_without_a_listen_is_refused_and_one_with_a_menu_is_not() {
        let text = r#"
start = "a"
[nodes.a]
type = "say"
say = "A."
next = "b"
[nodes.b]
type = "hours"
time_zone = "UTC"
open = { mon = "09:00-17:00" }
open_next = "a"
closed_next = "end"
[nodes.end]
type = "hangup"
"#;
        assert_eq!(
            flow(text).unwrap_err(),
            "flow: the loop a -> b -> a never waits for the caller (put a listen, menu or llm \
             node in it)"
        );
        // Through a menu, the same loop waits for the caller each time round.
        let ok = BASE.replace(
            "next = \"bye\" }",
            "next = \"hello\" }, { digit = \"2\", next = \"bye\" }",
        );
        flow(&ok).unwrap();
    }

    #[test]
    fn node_checks() {
        let bad = [
            (
                BASE.replace("digit = \"1\"", "digit = \"12\""),
                "options[0]: digit must be one key",
            ),
            (
                BASE.replace("type = \"hangup\"", "type = \"transfer\"\nto = \"bob\""),
                "to must be a phone number",
            ),
            (
                BASE.replace("type = \"hangup\"", "type = \"hangup\"\nwhat = 1"),
                "unknown field `what`",
            ),
            (
                BASE.replace("Press 1 for hours.\"", "Press 1.\"\nretries = 9"),
                "retries must be 0 to 5",
            ),
        ];
        for (text, want) in bad {
            let err = flow(&text).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        let listen = r#"
start = "zip"
[nodes.zip]
type = "listen"
say = "Your zip code?"
variable = "zip"
expect = "digits"
pattern = "^[0-9]{5"
next = "bye"
[nodes.bye]
type = "hangup"
"#;
        let err = flow(listen).unwrap_err();
        assert!(
            err.starts_with("flow: node `zip`: pattern is not a valid"),
            "{err}"
        );
        flow(&listen.replace("{5\"", "{5}$\"")).unwrap();
    }
}
