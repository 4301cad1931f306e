//! Text normalisation for speech: turns what a language model writes
//! ("Dr. Smith paid $5.99 at 3:30 p.m. on May 1st") into words a phonemiser
//! reads correctly ("Doctor Smith paid five dollars and ninety-nine cents at
//! three thirty PM on May first"). "AM" and "PM" are written in capitals:
//! espeak-ng, and so Piper, reads them as letters, whereas "ay em" comes out
//! as "I am" and "am" as the verb.
//!
//! Works word by word (whitespace-separated), looking at neighbours for
//! "am"/"pm", scale words after currency and year cues. Periods that end a
//! sentence are kept; periods of expanded abbreviations are dropped.

use super::readings::{currency, decade, mixed, number, ordinal, split_glued_am_pm, time};
use super::{abbrev, numbers};

const OPENERS: &[char] = &['"', '\'', '(', '[', '{', '<'];
const CLOSERS: &[char] = &['.', ',', ';', ':', '!', '?', '"', '\'', ')', ']', '}', '>'];
const SCALE_WORDS: [&str; 4] = ["thousand", "million", "billion", "trillion"];
const YEAR_CUES: [&str; 10] = [
    "in", "since", "from", "until", "till", "by", "circa", "year", "during", "before",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// One whitespace-separated word split into its leading punctuation, its core
/// and its trailing punctuation, plus the whitespace that followed it.
#[derive(Debug, Clone)]
struct Token {
    lead: String,
    core: String,
    trail: String,
    space_after: String,
}

/// Normalise `text` for speech. Never fails: anything not understood is left
/// for espeak-ng to read.
pub fn normalize(text: &str) -> String {
    let text = map_unicode(text);
    let mut tokens = tokenize(&text);
    let mut out = String::with_capacity(text.len() * 2);
    for i in 0..tokens.len() {
        let spoken = speak_token(&mut tokens, i);
        let tok = &tokens[i];
        out.push_str(&tok.lead);
        out.push_str(&spoken);
        out.push_str(&tok.trail);
        out.push_str(&tok.space_after);
    }
    // Consumed tokens leave double spaces behind.
    let mut cleaned = String::with_capacity(out.len());
    for word in out.split_whitespace() {
        if !cleaned.is_empty() {
            cleaned.push(' ');
        }
        cleaned.push_str(word);
    }
    cleaned
}

/// How many words the voice says for each whitespace-separated word of `text`
/// ("$15.50" five, "10:30am" three), at least one each: weights to match a
/// share of a sentence's audio to its written words. Each word is read alone,
/// which is close enough ("9 am" is two words either way).
pub fn spoken_word_counts(text: &str) -> Vec<usize> {
    text.split_whitespace()
        .map(|w| normalize(w).split_whitespace().count().max(1))
        .collect()
}

/// Typographic characters replaced by the plain ones the rest expects.
fn map_unicode(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' => s.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{00ab}' | '\u{00bb}' => s.push('"'),
            '\u{2014}' | '\u{2015}' => s.push_str(", "),
            '\u{2013}' | '\u{2010}' | '\u{2011}' | '\u{2212}' => s.push('-'),
            '\u{2026}' => s.push_str("..."),
            '\u{00a0}' | '\u{2009}' | '\u{202f}' => s.push(' '),
            '&' => s.push_str(" and "),
            '*' | '#' | '_' | '`' | '~' => s.push(' '),
            _ => s.push(c),
        }
    }
    s
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let (space, next) = after.split_at(space_end);
        let body = word.trim_start_matches(OPENERS);
        let lead = &word[..word.len() - body.len()];
        let core = body.trim_end_matches(CLOSERS);
        let trail = &body[core.len()..];
        tokens.push(Token {
            lead: lead.to_string(),
            core: core.to_string(),
            trail: trail.to_string(),
            space_after: if space.is_empty() { "" } else { " " }.to_string(),
        });
        rest = next;
    }
    tokens
}

/// Is `s` "am", "pm", "a.m", "p.m" (any case)? Returns the spoken form.
fn am_pm(s: &str) -> Option<&'static str> {
    match s.to_lowercase().as_str() {
        "am" | "a.m" => Some("AM"),
        "pm" | "p.m" => Some("PM"),
        _ => None,
    }
}

/// The spoken form of token `i`. May consume token `i + 1` (clearing its core
/// and moving its trailing punctuation onto token `i`).
fn speak_token(tokens: &mut [Token], i: usize) -> String {
    let core = tokens[i].core.clone();
    if core.is_empty() {
        return core;
    }
    let next_core = tokens.get(i + 1).map(|t| t.core.clone());
    let after_next = tokens.get(i + 2).map(|t| t.core.clone());

    if tokens[i].trail.starts_with('.') {
        if let Some(exp) = abbrev::expand(&core, next_core.as_deref()) {
            if !exp.keep_period {
                tokens[i].trail.remove(0);
            }
            return exp.words.to_string();
        }
    }
    let scale = next_core.as_deref().filter(|n| is_scale(n));
    if let Some((amount, unit)) = currency(&core, scale.is_some()) {
        if let Some(scale) = scale.map(str::to_lowercase) {
            consume_next(tokens, i, after_next.as_deref());
            return format!("{amount} {scale} {unit}");
        }
        return format!("{amount} {unit}");
    }
    if let Some(num) = core.strip_suffix('%') {
        if let Some(words) = number(num) {
            return format!("{words} percent");
        }
    }
    let next_am_pm = next_core.as_deref().and_then(am_pm);
    if let Some(words) = time(&core, next_am_pm) {
        if next_am_pm.is_some() && split_glued_am_pm(&core).is_none() {
            consume_next(tokens, i, after_next.as_deref());
        }
        return words;
    }
    if let Some(words) = ordinal(&core) {
        return words;
    }
    if let Some(words) = decade(&core) {
        return words;
    }
    if core.chars().all(|c| c.is_ascii_digit()) && core.len() == 4 && is_year_context(tokens, i) {
        if let Ok(n) = core.parse::<u64>() {
            return numbers::year(n);
        }
    }
    if let Some(words) = number(&core) {
        if next_core.as_deref().and_then(am_pm).is_some() && core.len() <= 2 {
            return with_am_pm(tokens, i, words, next_core, after_next);
        }
        return words;
    }
    if let Some((num, suffix)) = split_glued_am_pm(&core) {
        if let Some(words) = number(num) {
            return format!("{words} {suffix}");
        }
    }
    if core.chars().any(|c| c.is_ascii_digit()) {
        return mixed(&core);
    }
    core
}

/// Append "AM"/"PM" when the next word is am/pm, consuming it.
fn with_am_pm(
    tokens: &mut [Token],
    i: usize,
    words: String,
    next_core: Option<String>,
    after_next: Option<String>,
) -> String {
    let Some(suffix) = next_core.as_deref().and_then(am_pm) else {
        return words;
    };
    consume_next(tokens, i, after_next.as_deref());
    format!("{words} {suffix}")
}

/// Clear token `i + 1`, moving its trailing punctuation to token `i`. A period
/// after "p.m." is kept only when it ends the sentence.
fn consume_next(tokens: &mut [Token], i: usize, after_next: Option<&str>) {
    let Some(next) = tokens.get_mut(i + 1) else {
        return;
    };
    let mut trail = std::mem::take(&mut next.trail);
    let space = std::mem::take(&mut next.space_after);
    next.core.clear();
    next.lead.clear();
    let ends = after_next.is_none_or(|w| w.chars().next().is_some_and(char::is_uppercase));
    if trail.starts_with('.') && !ends {
        trail.remove(0);
    }
    tokens[i].trail.push_str(&trail);
    tokens[i].space_after = space;
}

fn is_scale(word: &str) -> bool {
    SCALE_WORDS.contains(&word.to_lowercase().as_str())
}

fn is_year_context(tokens: &[Token], i: usize) -> bool {
    let Some(prev) = i.checked_sub(1).and_then(|p| tokens.get(p)) else {
        return false;
    };
    let p = prev.core.to_lowercase();
    YEAR_CUES.contains(&p.as_str()) || MONTHS.contains(&p.as_str()) || ordinal(&p).is_some()
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
