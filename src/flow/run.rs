//! Running a flow: where the call is, the variables it captured, and the step each caller turn
//! (words, keys or a silence) leads to. Pure: the clock is given, nothing is spoken here; the
//! call speaks [`Step::say`] and does what [`Step::then`] says.
//!
//! Rules:
//! - A node that says something and passes on (`say`, `hours`) adds its text to the step and
//!   the call goes on to the next node at once, until a node waits for the caller (`listen`,
//!   `menu`, `llm`) or ends the call (`transfer`, `hangup`).
//! - At a `menu` or a `listen`, an answer it cannot use, or a silence of its `timeout_ms` once
//!   it has been asked, says `retry_say` and asks again, `retries` times; then the call goes to
//!   `fail_next`, or ends.
//! - At an `llm` node the language model answers each caller turn, with the node's `prompt`
//!   added to the agent's; an exit phrase (or `max_turns` answered turns) goes to `next`.
//! - Texts take `{{name}}` placeholders: the call's variables and those captured so far.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use super::understand::{find_phrase, pattern, said_digits, said_key, said_yes_no, words};
use super::{Expect, Flow, Hours, ListenNode, MenuNode, Node, Retry};
use crate::agents::substitute_variables;

/// What the caller did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowInput {
    /// Words, as transcribed (or typed).
    Said(String),
    /// A keypad entry (`2`, `1234#`).
    Keys(String),
    /// Nothing, for the node's `timeout_ms` after it asked.
    Silence,
}

/// What the call does after saying [`Step::say`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Waits for the caller (at a `listen`, `menu` or `llm` node).
    Wait,
    /// The language model answers the caller's words; `prompt` is added to the system prompt.
    Answer { prompt: String },
    /// The call ends once the text has been said.
    Hangup,
    /// The call is transferred once the text has been said: a phone number or `operators`.
    Transfer { to: String },
}

/// One step of the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Said now (may be empty).
    pub say: String,
    pub then: Then,
    /// The nodes entered, in order (for the event log).
    pub path: Vec<String>,
    /// A variable captured by this step, and its value.
    pub captured: Option<(String, String)>,
}

impl Step {
    fn new(then: Then) -> Self {
        Step {
            say: String::new(),
            then,
            path: Vec::new(),
            captured: None,
        }
    }
}

/// A call's place in its flow.
pub struct FlowState {
    flow: Arc<Flow>,
    /// The node waiting for the caller; none before the start and after the end.
    at: Option<String>,
    /// Retries used at the current node.
    tries: u32,
    /// Caller turns the model answered at the current `llm` node.
    turns: u32,
    vars: HashMap<String, String>,
    /// The flow ended (transfer or hangup): later turns go to the model.
    ended: bool,
}

impl FlowState {
    /// A flow about to start, with the call's variables.
    pub fn new(flow: Arc<Flow>, vars: HashMap<String, String>) -> Self {
        FlowState {
            flow,
            at: None,
            tries: 0,
            turns: 0,
            vars,
            ended: false,
        }
    }

    /// The node waiting for the caller.
    pub fn node(&self) -> Option<&str> {
        self.at.as_deref()
    }

    pub fn variables(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// How long the current node waits for the caller once it has asked; none at an `llm`
    /// node (the caller may take their time) and when the flow is not waiting.
    pub fn timeout(&self) -> Option<Duration> {
        match self.current()? {
            Node::Menu(n) => Some(n.retry().timeout()),
            Node::Listen(n) => Some(n.retry().timeout()),
            _ => None,
        }
    }

    fn current(&self) -> Option<&Node> {
        self.flow.nodes.get(self.at.as_deref()?)
    }

    /// Enters the start node.
    pub fn begin(&mut self, now: Timestamp) -> Step {
        self.ended = false;
        let start = self.flow.start.clone();
        self.enter(&start, now, Step::new(Then::Wait))
    }

    /// What the caller's turn leads to.
    pub fn input(&mut self, input: FlowInput, now: Timestamp) -> Step {
        let flow = self.flow.clone();
        let node = match self.at.as_deref().and_then(|n| flow.nodes.get(n)) {
            Some(node) => node,
            // No flow running (it ended in a transfer an operator handed back): the model.
            None => {
                return Step::new(Then::Answer {
                    prompt: String::new(),
                })
            }
        };
        match node {
            Node::Menu(menu) => match choose(menu, &input) {
                Some(next) => self.enter(next, now, Step::new(Then::Wait)),
                None => self.retry(&menu.say, menu.retry(), now),
            },
            Node::Listen(listen) => match answer(listen, &input) {
                Some(value) => {
                    self.vars.insert(listen.variable.clone(), value.clone());
                    let mut step = Step::new(Then::Wait);
                    step.captured = Some((listen.variable.clone(), value));
                    self.enter(&listen.next, now, step)
                }
                None => self.retry(&listen.say, listen.retry(), now),
            },
            Node::Llm(llm) => {
                let said = match &input {
                    FlowInput::Said(text) => words(text),
                    FlowInput::Keys(_) => Vec::new(),
                    FlowInput::Silence => return Step::new(Then::Wait),
                };
                let exit = llm
                    .exit_phrases
                    .iter()
                    .any(|p| find_phrase(&said, p).is_some())
                    || llm.max_turns.is_some_and(|m| self.turns >= m);
                match (&llm.next, exit) {
                    (Some(next), true) => self.enter(next, now, Step::new(Then::Wait)),
                    _ => {
                        self.turns += 1;
                        Step::new(Then::Answer {
                            prompt: self.fill(&llm.prompt),
                        })
                    }
                }
            }
            // Only the nodes above wait.
            _ => Step::new(Then::Wait),
        }
    }

    fn fill(&self, text: &str) -> String {
        substitute_variables(text, &self.vars).trim().to_string()
    }

    /// Asks again, or gives up when the retries are used.
    fn retry(&mut self, ask: &str, retry: Retry<'_>, now: Timestamp) -> Step {
        if self.tries >= retry.retries() {
            return match retry.fail_next {
                Some(next) => self.enter(next, now, Step::new(Then::Wait)),
                None => {
                    self.at = None;
                    self.ended = true;
                    Step::new(Then::Hangup)
                }
            };
        }
        self.tries += 1;
        let mut step = Step::new(Then::Wait);
        step.say = format!("{} {}", self.fill(retry.retry_say()), self.fill(ask))
            .trim()
            .to_string();
        step
    }

    /// Enters `name` and passes on through nodes that do not wait, adding what they say.
    fn enter(&mut self, name: &str, now: Timestamp, mut step: Step) -> Step {
        let flow = self.flow.clone();
        let mut name = name.to_string();
        // Validation refuses loops that never wait; the bound keeps a bad flow finite anyway.
        for _ in 0..=flow.nodes.len() {
            let Some(node) = flow.nodes.get(&name) else {
                break;
            };
            step.path.push(name.clone());
            let mut say = |text: &str| {
                let text = self.fill(text);
                if !text.is_empty() {
                    if !step.say.is_empty() {
                        step.say.push(' ');
                    }
                    step.say.push_str(&text);
                }
            };
            let next = match node {
                Node::Say(n) => {
                    say(&n.say);
                    n.next.clone()
                }
                Node::Hours(n) => {
                    let open = Hours::parse(n).is_ok_and(|h| h.open_at(now));
                    if open { &n.open_next } else { &n.closed_next }.clone()
                }
                Node::Menu(MenuNode { say: ask, .. })
                | Node::Listen(ListenNode { say: ask, .. }) => {
                    say(ask);
                    return self.wait_at(name, step);
                }
                Node::Llm(n) => {
                    say(&n.say);
                    return self.wait_at(name, step);
                }
                Node::Transfer(n) => {
                    say(&n.say);
                    step.then = Then::Transfer { to: n.to.clone() };
                    return self.finish(step);
                }
                Node::Hangup(n) => {
                    say(&n.say);
                    step.then = Then::Hangup;
                    return self.finish(step);
                }
            };
            name = next;
        }
        step.then = Then::Hangup;
        self.finish(step)
    }

    fn wait_at(&mut self, name: String, mut step: Step) -> Step {
        self.at = Some(name);
        self.tries = 0;
        self.turns = 0;
        step.then = Then::Wait;
        step
    }

    fn finish(&mut self, step: Step) -> Step {
        self.at = None;
        self.ended = true;
        step
    }
}

/// The option the caller picked: by key, by a key said, or by a keyword (the one said first).
fn choose<'a>(menu: &'a MenuNode, input: &FlowInput) -> Option<&'a str> {
    let by_key = |key: char| {
        menu.options
            .iter()
            .find(|o| o.digit.as_deref().is_some_and(|d| d.starts_with(key)))
            .map(|o| o.next.as_str())
    };
    match input {
        FlowInput::Keys(keys) => {
            let entry = keys.trim_end_matches('#');
            let mut chars = entry.chars();
            match (chars.next(), chars.next()) {
                (Some(k), None) => by_key(k),
                // `#` alone is an option only if the menu has one.
                (None, _) if keys.starts_with('#') => by_key('#'),
                _ => None,
            }
        }
        FlowInput::Said(text) => {
            let said = words(text);
            if let Some(next) = said_key(&said).and_then(by_key) {
                return Some(next);
            }
            menu.options
                .iter()
                .filter_map(|o| {
                    let at = o
                        .keywords
                        .iter()
                        .filter_map(|k| find_phrase(&said, k))
                        .min()?;
                    Some((at, o.next.as_str()))
                })
                .min_by_key(|(at, _)| *at)
                .map(|(_, next)| next)
        }
        FlowInput::Silence => None,
    }
}

/// The caller's answer to a `listen`, if it is one it takes.
fn answer(listen: &ListenNode, input: &FlowInput) -> Option<String> {
    let value = match (listen.expect, input) {
        (_, FlowInput::Silence) => return None,
        (Expect::Any | Expect::Digits, FlowInput::Keys(k)) => k.trim_end_matches('#').to_string(),
        (Expect::Any, FlowInput::Said(text)) => text
            .trim()
            .trim_end_matches(['.', '!', '?'])
            .trim()
            .to_string(),
        (Expect::Digits, FlowInput::Said(text)) => said_digits(&words(text))?,
        (Expect::YesNo, FlowInput::Keys(k)) => match k.trim_end_matches('#') {
            "1" => "yes".to_string(),
            "2" => "no".to_string(),
            _ => return None,
        },
        (Expect::YesNo, FlowInput::Said(text)) => said_yes_no(&words(text))?.to_string(),
    };
    if value.is_empty() {
        return None;
    }
    match &listen.pattern {
        Some(p) => pattern(p).ok()?.is_match(&value).then_some(value),
        None => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clinic's line: hours, then a menu; a booking asks for a name and a date of birth and
    /// confirms; questions go to the model until "that's all"; 0 goes to the desk.
    const CLINIC: &str = r#"
start = "welcome"
[nodes.welcome]
type = "say"
say = "Thanks for calling Oak Clinic, {{caller_name}}."
next = "hours"
[nodes.hours]
type = "hours"
time_zone = "Europe/London"
open = { mon = "09:00-17:00", tue = "09:00-17:00" }
holidays = ["2026-12-29"]
open_next = "menu"
closed_next = "closed"
[nodes.closed]
type = "hangup"
say = "We are closed. Please call again between nine and five."
[nodes.menu]
type = "menu"
say = "For bookings press 1 or say booking. For questions press 2. For the desk press 0."
options = [
  { digit = "1", keywords = ["booking", "appointment"], next = "name" },
  { digit = "2", keywords = ["question"], next = "chat" },
  { digit = "0", keywords = ["desk", "person"], next = "desk" },
]
retries = 1
retry_say = "Sorry."
fail_next = "desk"
[nodes.name]
type = "listen"
say = "What is your name?"
variable = "name"
next = "dob"
[nodes.dob]
type = "listen"
say = "Your date of birth as eight digits?"
variable = "dob"
expect = "digits"
pattern = "^[0-9]{8}$"
timeout_ms = 5000
next = "confirm"
[nodes.confirm]
type = "listen"
say = "{{name}}, born {{dob}}, is that right?"
variable = "ok"
expect = "yes_no"
retries = 0
next = "booked"
[nodes.booked]
type = "hangup"
say = "You're booked, {{name}}. Goodbye."
[nodes.chat]
type = "llm"
say = "Ask away."
prompt = "Answer questions about Oak Clinic. The caller is {{caller_name}}."
exit_phrases = ["that's all", "goodbye"]
max_turns = 3
next = "bye"
[nodes.bye]
type = "hangup"
say = "Goodbye."
[nodes.desk]
type = "transfer"
say = "Putting you through."
to = "operators"
"#;

    fn clinic() -> FlowState {
        let flow: Flow = toml::from_str(CLINIC).unwrap();
        flow.validate().unwrap();
        let vars = HashMap::from([("caller_name".to_string(), "Sam".to_string())]);
        FlowState::new(Arc::new(flow), vars)
    }

    /// Monday 2026-12-21 10:00 in London; Tuesday 2026-12-29 (a holiday); a Sunday.
    fn monday() -> Timestamp {
        "2026-12-21T10:00:00Z".parse().unwrap()
    }

    fn said(s: &str) -> FlowInput {
        FlowInput::Said(s.to_string())
    }

    fn keys(s: &str) -> FlowInput {
        FlowInput::Keys(s.to_string())
    }

    #[test]
    fn say_and_hours_pass_on_to_the_menu_when_open() {
        let mut f = clinic();
        let step = f.begin(monday());
        assert_eq!(
            step.say,
            "Thanks for calling Oak Clinic, Sam. For bookings press 1 or say booking. For \
             questions press 2. For the desk press 0."
        );
        assert_eq!(step.then, Then::Wait);
        assert_eq!(step.path, ["welcome", "hours", "menu"]);
        assert_eq!(f.node(), Some("menu"));
        assert_eq!(f.timeout(), Some(Duration::from_millis(8000)));
    }

    #[test]
    fn hours_closed_on_a_holiday_and_at_the_weekend() {
        for when in [
            "2026-12-29T10:00:00Z",
            "2026-12-27T10:00:00Z",
            "2026-12-21T17:00:00Z",
        ] {
            let mut f = clinic();
            let step = f.begin(when.parse().unwrap());
            assert_eq!(step.path, ["welcome", "hours", "closed"], "{when}");
            assert_eq!(step.then, Then::Hangup);
            assert!(step
                .say
                .ends_with("We are closed. Please call again between nine and five."));
            assert_eq!(f.node(), None);
        }
    }

    #[test]
    fn menu_by_key_by_spoken_key_and_by_keyword() {
        for (input, node) in [
            (keys("1"), "name"),
            (keys("1#"), "name"),
            (said("One."), "name"),
            (said("I'd like to make an appointment please"), "name"),
            (said("Press two."), "chat"),
            (said("I have a question"), "chat"),
        ] {
            let mut f = clinic();
            f.begin(monday());
            let step = f.input(input.clone(), monday());
            assert_eq!(f.node(), Some(node), "{input:?}");
            assert_eq!(step.then, Then::Wait);
        }
        // The option said first wins when two are said.
        let mut f = clinic();
        f.begin(monday());
        f.input(said("a question about my booking"), monday());
        assert_eq!(f.node(), Some("chat"));
    }

    #[test]
    fn menu_retries_then_fails_over() {
        let mut f = clinic();
        f.begin(monday());
        let step = f.input(said("bananas"), monday());
        assert_eq!(f.node(), Some("menu"));
        assert!(
            step.say.starts_with("Sorry. For bookings press 1"),
            "{}",
            step.say
        );
        // The one retry is used: the next miss (a silence) goes to fail_next.
        let step = f.input(FlowInput::Silence, monday());
        assert_eq!(
            step.then,
            Then::Transfer {
                to: "operators".into()
            }
        );
        assert_eq!(step.say, "Putting you through.");
        assert_eq!(f.node(), None);
        // After the flow ends (an operator handed the call back), the model answers.
        let step = f.input(said("hello?"), monday());
        assert_eq!(step.then, Then::Answer { prompt: "".into() });
    }

    #[test]
    fn listen_captures_validates_and_confirms() {
        let mut f = clinic();
        f.begin(monday());
        f.input(keys("1"), monday());
        let step = f.input(said("Alex Smith."), monday());
        assert_eq!(step.captured, Some(("name".into(), "Alex Smith".into())));
        assert_eq!(step.say, "Your date of birth as eight digits?");
        assert_eq!(f.timeout(), Some(Duration::from_millis(5000)));
        // Not eight digits: asked again with the default retry text.
        let step = f.input(said("one two three"), monday());
        assert_eq!(
            step.say,
            "Sorry, I didn't catch that. Your date of birth as eight digits?"
        );
        assert_eq!(step.captured, None);
        let step = f.input(keys("01021990#"), monday());
        assert_eq!(step.captured, Some(("dob".into(), "01021990".into())));
        assert_eq!(step.say, "Alex Smith, born 01021990, is that right?");
        let step = f.input(said("Yes, that's right."), monday());
        assert_eq!(step.then, Then::Hangup);
        assert_eq!(step.say, "You're booked, Alex Smith. Goodbye.");
        assert_eq!(f.variables()["ok"], "yes");
    }

    #[test]
    fn listen_without_fail_next_ends_the_call_when_retries_run_out() {
        let mut f = clinic();
        f.begin(monday());
        f.input(keys("1"), monday());
        f.input(said("Alex"), monday());
        f.input(keys("12345678"), monday());
        // retries = 0 at confirm: a non-answer ends the call.
        let step = f.input(said("maybe"), monday());
        assert_eq!(step.then, Then::Hangup);
        assert_eq!(step.say, "");
    }

    #[test]
    fn llm_node_answers_until_an_exit_phrase_or_max_turns() {
        let mut f = clinic();
        f.begin(monday());
        let step = f.input(keys("2"), monday());
        assert_eq!(step.say, "Ask away.");
        assert_eq!(f.timeout(), None);
        let step = f.input(said("Do you do flu jabs?"), monday());
        assert_eq!(
            step.then,
            Then::Answer {
                prompt: "Answer questions about Oak Clinic. The caller is Sam.".into()
            }
        );
        // A silence at an llm node does nothing.
        assert_eq!(f.input(FlowInput::Silence, monday()).then, Then::Wait);
        let step = f.input(said("OK, that's all, thanks."), monday());
        assert_eq!(step.then, Then::Hangup);
        assert_eq!(step.say, "Goodbye.");

        let mut f = clinic();
        f.begin(monday());
        f.input(keys("2"), monday());
        for _ in 0..3 {
            assert!(matches!(
                f.input(said("more"), monday()).then,
                Then::Answer { .. }
            ));
        }
        assert_eq!(f.input(said("more"), monday()).then, Then::Hangup);
    }

    #[test]
    fn transfer_to_a_number() {
        let text = r#"
start = "t"
[nodes.t]
type = "transfer"
say = "Connecting you to {{who}}."
to = "+15551234567"
"#;
        let flow: Flow = toml::from_str(text).unwrap();
        flow.validate().unwrap();
        let vars = HashMap::from([("who".to_string(), "sales".to_string())]);
        let mut f = FlowState::new(Arc::new(flow), vars);
        let step = f.begin(monday());
        assert_eq!(step.say, "Connecting you to sales.");
        assert_eq!(
            step.then,
            Then::Transfer {
                to: "+15551234567".into()
            }
        );
    }
}
