//! Making one call's summary with the agent's language model.
//!
//! A model that answers in JSON (the hosted ones, [`LanguageModel::json_output`]) is asked for
//! `{"summary", "fields"}` in one request. The small local model cannot be trusted to write
//! JSON or facts, so its work is kept extractive: it reads the caller's lines only, writes one
//! short sentence on what the caller wanted, kept only if its words are the caller's, and one
//! short answer per field, kept only if the caller said it. When the model's sentence is not drawn from the call (or the model fails),
//! the summary is the caller's own request, in their words.

use futures::StreamExt;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::fields::{fit_all, FieldKind, FieldSpec};
use crate::engines::llm::{ChatMessage, ChatRequest, LanguageModel, Role, TokenTap};
use crate::engines::EngineError;

/// The transcript a JSON-capable model reads, at most (the start and the end are kept).
const JSON_TRANSCRIPT_CHARS: usize = 24_000;
/// The transcript the local model reads, at most: its prompt costs time on the CPU.
const LOCAL_TRANSCRIPT_CHARS: usize = 2_400;
/// The longest summary kept.
pub const MAX_SUMMARY_CHARS: usize = 1_000;
/// The longest caller's request kept by an extract.
const EXTRACT_CHARS: usize = 240;

/// How a summary was made (stored as `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Json,
    Model,
    Extract,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Json => "json",
            Method::Model => "model",
            Method::Extract => "extract",
        }
    }
}

/// A summary and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub text: String,
    pub fields: Value,
    pub method: Method,
    /// The model whose words were kept; `None` for an extract.
    pub engine: Option<String>,
    /// What asking the model cost, kept or not (for usage).
    pub spent: Spent,
}

/// The tokens a summary's requests cost, as the engine counted them (engines that do not
/// count leave them at 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spent {
    /// Who did the work: `local` or the provider's name.
    pub engine: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// The summary of a conversation; `None` when the caller said nothing.
pub async fn make(
    llm: &dyn LanguageModel,
    session_id: &str,
    messages: &[ChatMessage],
    specs: &[FieldSpec],
    cancel: &CancellationToken,
) -> Option<Made> {
    let caller: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::User && !m.content.trim().is_empty())
        .map(|m| m.content.trim())
        .collect();
    if caller.is_empty() {
        return None;
    }
    let json = llm.json_output();
    let budget = if json {
        JSON_TRANSCRIPT_CHARS
    } else {
        LOCAL_TRANSCRIPT_CHARS
    };
    let mut spent = Spent {
        engine: llm.usage_label(),
        ..Spent::default()
    };
    let made = if json {
        let transcript = transcript(messages, budget);
        by_json(llm, session_id, &transcript, specs, cancel, &mut spent).await
    } else {
        // The small model reads the caller's lines only: what it keeps must be the caller's
        // words, not the agent's (which the same model wrote, and may have made up).
        let said: Vec<ChatMessage> = messages
            .iter()
            .filter(|m| m.role == Role::User)
            .cloned()
            .collect();
        let transcript = transcript(&said, budget);
        by_extraction(llm, session_id, &transcript, specs, cancel, &mut spent).await
    };
    llm.release(session_id);
    let mut made = made.unwrap_or_else(|| extract(&caller, specs));
    made.spent = spent;
    Some(made)
}

/// `Caller:` and `Agent:` lines, cut in the middle to `budget` characters.
pub fn transcript(messages: &[ChatMessage], budget: usize) -> String {
    let lines: Vec<String> = messages
        .iter()
        .filter(|m| !m.content.trim().is_empty())
        .filter_map(|m| match m.role {
            Role::User => Some(format!("Caller: {}", m.content.trim())),
            Role::Assistant => Some(format!("Agent: {}", m.content.trim())),
            Role::System | Role::Tool => None,
        })
        .collect();
    let all = lines.join("\n");
    let n = all.chars().count();
    if n <= budget {
        return all;
    }
    let head: String = all.chars().take(budget * 3 / 5).collect();
    let tail: String = all.chars().skip(n - budget * 2 / 5).collect();
    format!("{head}\n[...]\n{tail}")
}

/// The model's answer to `request` (cut after `max_chars`); its token counts go to `spent`.
async fn complete(
    llm: &dyn LanguageModel,
    mut request: ChatRequest,
    max_chars: usize,
    cancel: &CancellationToken,
    spent: &mut Spent,
) -> Result<String, EngineError> {
    let tap = TokenTap::default();
    request.tokens = Some(tap.clone());
    let mut stream = llm.stream(request, cancel.clone());
    let mut out = String::new();
    let mut result = Ok(());
    while let Some(delta) = stream.next().await {
        match delta {
            Ok(d) => out.push_str(&d),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if out.len() > max_chars {
            break;
        }
    }
    drop(stream);
    if let Some(t) = tap.take() {
        spent.prompt_tokens += t.prompt;
        spent.completion_tokens += t.completion;
    }
    result.map(|()| out)
}

fn request(session_id: &str, system: &str, user: String, max_tokens: usize) -> ChatRequest {
    ChatRequest {
        session_id: session_id.to_string(),
        system: system.to_string(),
        messages: vec![ChatMessage::user(user)],
        max_tokens,
        temperature: 0.0,
        json: false,
        tokens: None,
        tools: None,
        // Nobody is waiting to hear it: it steps aside for turns like a reply's tail.
        first_words: Some(crate::engines::cpu::FirstWords::background()),
    }
}

const JSON_SYSTEM: &str = "You write the record of a phone call for the business that \
answered it. Answer with one JSON object and nothing else.";

async fn by_json(
    llm: &dyn LanguageModel,
    session_id: &str,
    transcript: &str,
    specs: &[FieldSpec],
    cancel: &CancellationToken,
    spent: &mut Spent,
) -> Option<Made> {
    let mut ask = format!(
        "The call:\n{transcript}\n\nAnswer with {{\"summary\": \"...\", \"fields\": {{...}}}}. \
         The summary is two or three sentences: who called, what they wanted, and what was \
         agreed or left open. Only what the call says."
    );
    if specs.is_empty() {
        ask.push_str(" \"fields\" is {}.");
    } else {
        ask.push_str(" \"fields\" has these keys, each null when the call does not say it:");
        for s in specs {
            ask.push_str(&format!(
                "\n- {} ({}): {}",
                s.name,
                s.type_name(),
                s.question()
            ));
            if !s.choices.is_empty() {
                let choices: Vec<String> = s.choices.iter().map(Value::to_string).collect();
                ask.push_str(&format!(" (one of {})", choices.join(", ")));
            }
        }
    }
    let mut req = request(session_id, JSON_SYSTEM, ask, 600);
    req.json = true;
    let answer = match complete(llm, req, 16_000, cancel, spent).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "the language model could not summarise the call");
            return None;
        }
    };
    let Some(obj) = json_object(&answer) else {
        tracing::warn!("the language model's summary was not a JSON object; the caller's words are kept instead");
        return None;
    };
    let text = obj
        .get("summary")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())?;
    let fields = obj.get("fields").and_then(Value::as_object).unwrap_or(&obj);
    Some(Made {
        text: cut(text, MAX_SUMMARY_CHARS),
        fields: fit_all(specs, Some(fields)),
        method: Method::Json,
        engine: Some(llm.name()),
        spent: Spent::default(),
    })
}

/// The JSON object in a model's answer (code fences and words around it allowed).
fn json_object(answer: &str) -> Option<Map<String, Value>> {
    let start = answer.find('{')?;
    let end = answer.rfind('}')?;
    if end < start {
        return None;
    }
    match serde_json::from_str(&answer[start..=end]) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

const LOCAL_SYSTEM: &str =
    "You copy facts from phone calls. Answer in a few words taken from the call.";

async fn by_extraction(
    llm: &dyn LanguageModel,
    session_id: &str,
    transcript: &str,
    specs: &[FieldSpec],
    cancel: &CancellationToken,
    spent: &mut Spent,
) -> Option<Made> {
    let ask = format!("{transcript}\n\nIn one short sentence: what did the caller want?");
    let asked = request(session_id, LOCAL_SYSTEM, ask, 40);
    let answer = match complete(llm, asked, 400, cancel, spent).await {
        Ok(a) => first_sentence(&a),
        Err(e) => {
            tracing::warn!(error = %e, "the language model could not summarise the call");
            return None;
        }
    };
    if !drawn_from(&answer, transcript, 0.75) {
        return None;
    }
    let mut fields = Map::new();
    for s in specs {
        let how = match s.kind {
            FieldKind::String => "Answer with words from the call only, or \"none\".",
            FieldKind::Number | FieldKind::Integer => "Answer with a number, or \"none\".",
            FieldKind::Boolean => "Answer yes or no.",
        };
        let ask = format!("{transcript}\n\n{}? {how}", s.question());
        let asked = request(session_id, LOCAL_SYSTEM, ask, 16);
        let value = match complete(llm, asked, 200, cancel, spent).await {
            Ok(a) => local_field(s, &first_sentence(&a), transcript),
            Err(_) => Value::Null,
        };
        fields.insert(s.name.clone(), value);
    }
    Some(Made {
        text: cut(&answer, MAX_SUMMARY_CHARS),
        fields: Value::Object(fields),
        method: Method::Model,
        engine: Some(llm.name()),
        spent: Spent::default(),
    })
}

/// A local model's answer for one field, kept only when the call holds it.
fn local_field(spec: &FieldSpec, answer: &str, transcript: &str) -> Value {
    let answer = answer.trim().trim_matches(|c: char| c == '"' || c == '.');
    if answer.is_empty() || answer.eq_ignore_ascii_case("none") {
        return Value::Null;
    }
    let found = match spec.kind {
        // A fact, not a sentence: a few words, found together in the call.
        // The answer, its first parts before a comma or the like ("Ada Lovelace, 4 people"),
        // or what follows its last "is" ("The caller's name is Ada Lovelace").
        FieldKind::String => answer
            .split([',', ';', ':', '('])
            .map(str::trim)
            .take(2)
            .chain(std::iter::once(answer))
            .chain(answer.rsplit_once(" is ").map(|(_, v)| v.trim()))
            .find(|a| a.split_whitespace().count() <= MAX_FIELD_WORDS && phrase_in(a, transcript))
            .map(Value::from),
        FieldKind::Number | FieldKind::Integer => {
            // The first number of the answer, if the call has it too.
            let n: String = answer
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .find(|w| w.chars().any(|c| c.is_ascii_digit()))
                .unwrap_or("")
                .trim_matches('.')
                .to_string();
            (!n.is_empty() && words(transcript).contains(&n)).then(|| n.into())
        }
        FieldKind::Boolean => Some(answer.into()),
    };
    found
        .and_then(|v: Value| spec.fit(&v))
        .unwrap_or(Value::Null)
}

/// The caller's request in their own words: their first line of four words or more (else
/// their longest), cut at a word.
pub fn extract(caller: &[&str], specs: &[FieldSpec]) -> Made {
    let line = caller
        .iter()
        .find(|l| l.split_whitespace().count() >= 4)
        .or_else(|| caller.iter().max_by_key(|l| l.len()))
        .copied()
        .unwrap_or("");
    Made {
        text: format!("The caller said: \"{}\"", cut(line, EXTRACT_CHARS)),
        fields: fit_all(specs, None),
        method: Method::Extract,
        engine: None,
        spent: Spent::default(),
    }
}

/// The first line and sentence of a model's answer.
fn first_sentence(answer: &str) -> String {
    let line = answer.trim().lines().next().unwrap_or("").trim();
    let end = line
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && line[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_none_or(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(line.len());
    line[..end].trim().to_string()
}

/// `text` cut to `max` characters at a word, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max).collect();
    let at = head.rfind(char::is_whitespace).unwrap_or(head.len());
    format!("{}...", head[..at].trim_end())
}

/// Words a sentence about a call may use without their being in it.
const FRAMING: &[&str] = &[
    "the",
    "a",
    "an",
    "and",
    "or",
    "to",
    "of",
    "for",
    "in",
    "on",
    "at",
    "with",
    "is",
    "was",
    "be",
    "they",
    "their",
    "them",
    "he",
    "she",
    "his",
    "her",
    "caller",
    "called",
    "call",
    "calling",
    "wanted",
    "wants",
    "want",
    "would",
    "like",
    "asked",
    "asks",
    "ask",
    "about",
    "agent",
    "customer",
    "person",
    "some",
    "that",
    "this",
    "requested",
    "requests",
    "request",
    "needed",
    "needs",
    "need",
];

/// Lower-case words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.'))
        .map(|w| w.trim_matches(|c| c == '.' || c == '\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The most words a local model's text field may have.
const MAX_FIELD_WORDS: usize = 6;

/// Whether the words of `phrase` come one after another in `text` (case, punctuation and
/// spacing aside).
fn phrase_in(phrase: &str, text: &str) -> bool {
    let p = words(phrase).join(" ");
    !p.is_empty() && format!(" {} ", words(text).join(" ")).contains(&format!(" {p} "))
}

/// Whether at least `share` of the content words of `answer` (and at least one) are words
/// of `transcript`.
fn drawn_from(answer: &str, transcript: &str, share: f64) -> bool {
    let known: std::collections::HashSet<String> = words(transcript).into_iter().collect();
    let content: Vec<String> = words(answer)
        .into_iter()
        .filter(|w| !FRAMING.contains(&w.as_str()))
        .collect();
    if content.is_empty() {
        return false;
    }
    let found = content.iter().filter(|w| known.contains(*w)).count();
    found as f64 >= share * content.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> Vec<ChatMessage> {
        vec![
            ChatMessage::assistant("Hello, Luigi's, how can I help?"),
            ChatMessage::user("Hi"),
            ChatMessage::user("I'd like to book a table for four on Friday"),
            ChatMessage::system("operator note"),
            ChatMessage::assistant("Of course. What name is it under?"),
            ChatMessage::user("Ada Lovelace"),
        ]
    }

    #[test]
    fn the_transcript_names_each_side_and_is_cut_in_the_middle() {
        let t = transcript(&call(), 10_000);
        assert!(t.starts_with("Agent: Hello, Luigi's"), "{t}");
        assert!(t.contains("Caller: I'd like to book a table"), "{t}");
        assert!(!t.contains("operator note"), "{t}");
        let short = transcript(&call(), 60);
        assert!(short.contains("[...]"), "{short}");
        assert!(short.starts_with("Agent: Hello"), "{short}");
        assert!(short.ends_with("Caller: Ada Lovelace"), "{short}");
    }

    #[test]
    fn an_extract_is_the_callers_first_real_request() {
        let m = extract(
            &["Hi", "I'd like to book a table for four on Friday", "Ada"],
            &[],
        );
        assert_eq!(
            m.text,
            "The caller said: \"I'd like to book a table for four on Friday\""
        );
        assert_eq!(m.method, Method::Extract);
        let long = "word ".repeat(100);
        let m = extract(&[long.as_str()], &[]);
        assert!(m.text.ends_with("...\""), "{}", m.text);
        assert!(m.text.chars().count() < EXTRACT_CHARS + 30);
    }

    #[test]
    fn a_sentence_is_drawn_from_the_call_when_its_words_are_in_it() {
        let t = transcript(&call(), 10_000);
        assert!(drawn_from(
            "The caller wanted to book a table for four.",
            &t,
            0.75
        ));
        assert!(!drawn_from(
            "The caller asked about the weather in Paris.",
            &t,
            0.75
        ));
        assert!(!drawn_from("The caller.", &t, 0.75));
        assert!(drawn_from("Ada Lovelace", &t, 1.0));
        assert!(!drawn_from("Ada Byron", &t, 1.0));
    }

    #[test]
    fn json_answers_are_found_inside_fences() {
        let obj = json_object("```json\n{\"summary\": \"x\", \"fields\": {}}\n```").unwrap();
        assert_eq!(obj["summary"], "x");
        assert!(json_object("no json here").is_none());
        assert!(json_object("} {").is_none());
        assert!(json_object("[1, 2]").is_none());
    }

    #[test]
    fn local_fields_are_kept_only_when_the_call_has_them() {
        let t = "Caller: a table for 4 please, name Ada Lovelace";
        let name = FieldSpec {
            name: "name".into(),
            kind: FieldKind::String,
            description: None,
            choices: vec![],
        };
        let size = FieldSpec {
            kind: FieldKind::Integer,
            name: "size".into(),
            ..name.clone()
        };
        assert_eq!(
            local_field(&name, "Ada Lovelace.", t),
            json!("Ada Lovelace")
        );
        assert_eq!(local_field(&name, "Grace Hopper", t), Value::Null);
        assert_eq!(
            local_field(&name, "The caller's name is Ada Lovelace.", t),
            json!("Ada Lovelace")
        );
        assert_eq!(
            local_field(&name, "The caller's name is Grace Hopper.", t),
            Value::Null
        );
        assert_eq!(local_field(&name, "none", t), Value::Null);
        assert_eq!(local_field(&size, "4 people", t), json!(4));
        assert_eq!(local_field(&size, "6", t), Value::Null);
    }

    #[test]
    fn the_first_sentence_ends_at_its_stop() {
        assert_eq!(
            first_sentence("To book a table. Then more."),
            "To book a table."
        );
        assert_eq!(
            first_sentence("Costs 15.50 dollars. x"),
            "Costs 15.50 dollars."
        );
        assert_eq!(first_sentence("\n  line one\nline two"), "line one");
    }
}
