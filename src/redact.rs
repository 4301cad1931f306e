//! Redaction: card numbers, phone numbers and email addresses masked in what a call leaves
//! behind (stored items and events, the monitor stream, histories read back). The live call and
//! the language model still hear them, so that an agent can take a payment.
//!
//! Numbers are found in runs of digit groups and spoken digits ("four one one one", "double
//! five", "oh" for zero) separated only by spaces and light punctuation. A card is 13 to 19
//! digits passing the Luhn check; a phone number 7 to 15 digits (with a leading `+` kept in
//! the mask). Emails are written (`a.b@example.com`) or spoken ("a b at example dot com").

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an agent may have masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitive {
    Card,
    Phone,
    Email,
}

pub const CARD_MASK: &str = "[card]";
pub const PHONE_MASK: &str = "[phone]";
pub const EMAIL_MASK: &str = "[email]";

/// Masks the kinds it was made with; with none it changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redactor {
    card: bool,
    phone: bool,
    email: bool,
}

/// Digits of a word: a digit group, a spoken digit, or a spoken repeat of the next digit.
enum Word {
    Digits(String),
    Repeat(usize),
    Other,
}

fn word(w: &str) -> Word {
    if w.bytes().all(|b| b.is_ascii_digit()) {
        return Word::Digits(w.to_string());
    }
    let lower = w.to_ascii_lowercase();
    let d = match lower.as_str() {
        "zero" | "oh" => '0',
        "one" => '1',
        "two" => '2',
        "three" => '3',
        "four" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        "double" => return Word::Repeat(2),
        "triple" => return Word::Repeat(3),
        _ => return Word::Other,
    };
    Word::Digits(d.to_string())
}

/// A run's piece: a word's byte span and its digits.
struct Group {
    start: usize,
    end: usize,
    digits: String,
}

/// Separators that keep digit groups in one number.
fn joins(between: &str) -> bool {
    between.len() <= 3
        && between
            .chars()
            .all(|c| c.is_whitespace() || matches!(c, '-' | '.' | ',' | '(' | ')' | '/'))
}

fn luhn(digits: &str) -> bool {
    let mut sum = 0;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

fn written_email() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}")
            .unwrap_or_else(|e| unreachable!("the email pattern is valid: {e}"))
    })
}

fn spoken_email() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b[a-z0-9][a-z0-9._\-]*(?:\s+(?:dot|underscore|dash)\s+[a-z0-9]+)*\s+at\s+[a-z0-9\-]+(?:\s+dot\s+[a-z0-9\-]+)*\s+dot\s+(?:com|net|org|io|co|uk|us|de|fr|es|it|nl|edu|gov|info|biz|me|ai|ca|au)\b",
        )
        .unwrap_or_else(|e| unreachable!("the spoken email pattern is valid: {e}"))
    })
}

impl Redactor {
    pub fn new(kinds: &[Sensitive]) -> Self {
        Self {
            card: kinds.contains(&Sensitive::Card),
            phone: kinds.contains(&Sensitive::Phone),
            email: kinds.contains(&Sensitive::Email),
        }
    }

    /// Whether it masks anything at all.
    pub fn is_active(&self) -> bool {
        self.card || self.phone || self.email
    }

    /// `text` with what it masks replaced by `[card]`, `[phone]` or `[email]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.is_active() {
            return Cow::Borrowed(text);
        }
        let mut out = Cow::Borrowed(text);
        if self.email {
            for re in [written_email(), spoken_email()] {
                if let Cow::Owned(s) = re.replace_all(&out, EMAIL_MASK) {
                    out = Cow::Owned(s);
                }
            }
        }
        if self.card || self.phone {
            if let Some(masked) = self.numbers(&out) {
                out = Cow::Owned(masked);
            }
        }
        out
    }

    /// Every string in `value` redacted in place.
    pub fn redact_json(&self, value: &mut Value) {
        if !self.is_active() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact_json(v)),
            _ => {}
        }
    }

    /// The named top-level string fields of a JSON object redacted in place (ids, names and
    /// codes elsewhere in it are left alone).
    pub fn redact_fields(&self, value: &mut Value, fields: &[&str]) {
        if !self.is_active() {
            return;
        }
        if let Value::Object(map) = value {
            for f in fields {
                if let Some(Value::String(s)) = map.get_mut(*f) {
                    if let Cow::Owned(r) = self.redact(s) {
                        *s = r;
                    }
                }
            }
        }
    }

    /// The text with card and phone numbers masked; `None` when there are none.
    fn numbers(&self, text: &str) -> Option<String> {
        let mut masks: Vec<(usize, usize, &str)> = Vec::new();
        let mut run: Vec<Group> = Vec::new();
        let mut repeat = 1;
        let mut last_end = 0;
        let words = text
            .char_indices()
            .filter(|(_, c)| !c.is_alphanumeric())
            .map(|(i, c)| (i, i + c.len_utf8()))
            .chain(std::iter::once((text.len(), text.len())));
        let mut start = 0;
        for (sep_start, sep_end) in words {
            if sep_start > start {
                let w = &text[start..sep_start];
                let broken = !run.is_empty() && !joins(&text[last_end..start]);
                if broken {
                    self.close_run(text, &mut run, &mut masks);
                }
                match word(w) {
                    Word::Digits(d) => {
                        let digits = d.repeat(repeat);
                        repeat = 1;
                        run.push(Group {
                            start,
                            end: sep_start,
                            digits,
                        });
                        last_end = sep_start;
                    }
                    Word::Repeat(n) => {
                        // "double five": the span starts at "double".
                        repeat = n;
                        last_end = sep_start;
                        run.push(Group {
                            start,
                            end: sep_start,
                            digits: String::new(),
                        });
                    }
                    Word::Other => {
                        repeat = 1;
                        self.close_run(text, &mut run, &mut masks);
                    }
                }
            }
            start = sep_end;
        }
        self.close_run(text, &mut run, &mut masks);
        if masks.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e, mask) in masks {
            out.push_str(&text[at..s]);
            out.push_str(mask);
            at = e;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    /// Masks the card and phone numbers of a finished run of digit groups.
    fn close_run(&self, text: &str, run: &mut Vec<Group>, masks: &mut Vec<(usize, usize, &str)>) {
        // A trailing "double" with nothing after it is not a number's.
        while run.last().is_some_and(|g| g.digits.is_empty()) {
            run.pop();
        }
        if run.is_empty() {
            return;
        }
        let groups = std::mem::take(run);
        let n = groups.len();
        let mut taken = vec![false; n];
        if self.card {
            let mut i = 0;
            while i < n {
                let mut found = None;
                let mut digits = String::new();
                for (j, g) in groups.iter().enumerate().skip(i) {
                    digits.push_str(&g.digits);
                    if digits.len() > 19 {
                        break;
                    }
                    if digits.len() >= 13 && luhn(&digits) {
                        found = Some(j);
                    }
                }
                match found {
                    Some(j) => {
                        masks.push((groups[i].start, groups[j].end, CARD_MASK));
                        taken[i..=j].iter_mut().for_each(|t| *t = true);
                        i = j + 1;
                    }
                    None => i += 1,
                }
            }
        }
        if self.phone {
            let mut i = 0;
            while i < n {
                if taken[i] {
                    i += 1;
                    continue;
                }
                let mut j = i;
                let mut digits = 0;
                while j < n && !taken[j] {
                    digits += groups[j].digits.len();
                    j += 1;
                }
                if (7..=15).contains(&digits) {
                    let mut s = groups[i].start;
                    while text[..s].ends_with(['+', '(']) {
                        s -= 1;
                    }
                    masks.push((s, groups[j - 1].end, PHONE_MASK));
                }
                i = j;
            }
        }
        masks.sort_by_key(|m| m.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&[Sensitive::Card, Sensitive::Phone, Sensitive::Email])
    }

    #[test]
    fn cards_written_and_spoken_pass_luhn() {
        let r = all();
        assert_eq!(
            r.redact("my card is 4111 1111 1111 1111 thanks"),
            "my card is [card] thanks"
        );
        assert_eq!(r.redact("4111-1111-1111-1111."), "[card].");
        assert_eq!(r.redact("card 4111111111111111"), "card [card]");
        assert_eq!(
            r.redact("It's four one one one, one one one one, one one one one, one one one one."),
            "It's [card]."
        );
        assert_eq!(
            r.redact("Four, one, one, one, 1111 one one one one 1111 expires twelve"),
            "[card] expires twelve"
        );
        // Sixteen digits failing Luhn are not a card (and too long for a phone).
        assert_eq!(
            r.redact("order 4111 1111 1111 1112"),
            "order 4111 1111 1111 1112"
        );
    }

    #[test]
    fn phones_written_and_spoken() {
        let r = all();
        assert_eq!(
            r.redact("call me on +44 20 7946 0958"),
            "call me on [phone]"
        );
        assert_eq!(r.redact("555-123-4567 is mine"), "[phone] is mine");
        assert_eq!(r.redact("(555) 123 4567"), "[phone]");
        assert_eq!(
            r.redact("five five five, one two three, four five six seven"),
            "[phone]"
        );
        assert_eq!(
            r.redact("it is oh seven seven double nine triple one two three four"),
            "it is [phone]"
        );
    }

    #[test]
    fn ordinary_numbers_stay() {
        let r = all();
        for text in [
            "We open at 9:30 am on Monday.",
            "That is $15.50, or 2 for 25.",
            "Room 1204, on the 3rd floor, in 2026.",
            "one or two people, three times",
            "I have one question",
            "ten thirty AM",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn emails_written_and_spoken() {
        let r = all();
        assert_eq!(
            r.redact("write to jane.doe+x@mail.example.co.uk please"),
            "write to [email] please"
        );
        assert_eq!(
            r.redact("it's jane dot doe at example dot com"),
            "it's [email]"
        );
        assert_eq!(
            r.redact("meet me at the office dot"),
            "meet me at the office dot"
        );
    }

    #[test]
    fn only_the_kinds_asked_for_and_json_strings() {
        let cards = Redactor::new(&[Sensitive::Card]);
        assert_eq!(
            cards.redact("4111 1111 1111 1111 or 555 123 4567, a@b.io"),
            "[card] or 555 123 4567, a@b.io"
        );
        let none = Redactor::default();
        assert!(!none.is_active());
        assert!(matches!(none.redact("4111111111111111"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"text": "a@b.io", "n": 4, "list": ["555 123 4567"]});
        all().redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"text": "[email]", "n": 4, "list": ["[phone]"]})
        );
        let mut v = serde_json::json!({"text": "555 123 4567", "sub": "user_5551234567"});
        all().redact_fields(&mut v, &["text", "heard"]);
        assert_eq!(
            v,
            serde_json::json!({"text": "[phone]", "sub": "user_5551234567"})
        );
    }
}
