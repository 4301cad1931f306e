//! Sentence splitting, whole-text (`split_sentences`) and streaming
//! (`SentenceSplitter`, fed the text deltas a language model streams).
//!
//! A sentence ends at `.`, `!` or `?` (plus any closing quotes or brackets)
//! followed by whitespace, except after abbreviations such as "Dr." or "e.g."
//! and inside numbers such as "3.5". A line break also ends a chunk. To cut the
//! time to first audio, the first chunk of a reply may end at a clause mark
//! (`,` `;` `:`) once it is long enough; chunks are never cut inside a word.
//! When no punctuation comes within its first few words, the first chunk is
//! the first words alone, cut before a conjunction or preposition where one
//! comes (`first_cut_min_words`, `first_cut_max_words`), never after a number,
//! an abbreviation's period or anything else the normaliser reads with the word
//! that follows ("10:30 | am", "$5 | million", "Dr. | Smith").

use super::abbrev::{classify_period, PeriodKind};

/// Tuning for where the splitter may cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOptions {
    /// The first chunk may end at a comma, semicolon or colon once it holds at
    /// least this many characters (0 disables early clause cuts).
    pub first_clause_min_chars: usize,
    /// Any later chunk may end at a clause mark once it holds this many
    /// characters (keeps long sentences from delaying audio).
    pub clause_min_chars: usize,
    /// A chunk with no punctuation at all is cut at a space after this many
    /// characters.
    pub max_chars: usize,
    /// The first chunk, when no punctuation has ended it, may end after this
    /// many words, before a conjunction or preposition (or after a clause
    /// mark the length rule passed over).
    pub first_cut_min_words: usize,
    /// ... and ends after this many words at the latest, wherever the next
    /// word may follow (0 disables cuts between words). Past it, only the
    /// boundaries that sound natural are taken.
    pub first_cut_max_words: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            first_clause_min_chars: 20,
            clause_min_chars: 120,
            max_chars: 300,
            first_cut_min_words: 4,
            first_cut_max_words: 6,
        }
    }
}

const CLOSERS: &[char] = &['"', '\'', ')', ']', '}'];
const OPENERS: &[char] = &['"', '\'', '(', '[', '{'];
/// Conjunctions and prepositions: a piece may end before one of these and
/// sound like a phrase of its own.
const JOINERS: [&str; 39] = [
    "and", "but", "or", "so", "because", "if", "when", "while", "which", "who", "where", "unless",
    "until", "although", "though", "then", "for", "to", "at", "in", "on", "with", "from", "by",
    "of", "about", "after", "before", "into", "over", "under", "through", "during", "without",
    "between", "since", "around", "near", "as",
];

/// Where the first chunk of `buf` ends (a byte offset), if that is already
/// certain. `eof` says no more text will come; `clause_min` is the length from
/// which a clause mark may end the chunk.
fn find_cut(buf: &str, eof: bool, clause_min: usize, max_chars: usize) -> Option<usize> {
    let mut chars = buf.char_indices().peekable();
    let mut count = 0usize;
    let mut seen_text = false;
    while let Some((i, c)) = chars.next() {
        count += 1;
        match c {
            '.' | '!' | '?' => {
                // Take the whole run of end marks and closing quotes.
                let mut j = i + c.len_utf8();
                while let Some(&(k, n)) = chars.peek() {
                    if matches!(n, '.' | '!' | '?') || CLOSERS.contains(&n) {
                        j = k + n.len_utf8();
                        count += 1;
                        chars.next();
                    } else {
                        break;
                    }
                }
                let Some(&(_, next)) = chars.peek() else {
                    return None; // undecidable until more text (or the end) comes
                };
                if !next.is_whitespace() || !seen_text {
                    continue; // "3.5", "U.S.A", "e.g.x"
                }
                let first_mark = buf[i..].starts_with("..") || c != '.';
                let kind = if first_mark {
                    PeriodKind::FullStop
                } else {
                    classify_period(word_before(buf, i))
                };
                match kind {
                    PeriodKind::FullStop => return Some(j),
                    PeriodKind::NeverEnds => {}
                    PeriodKind::EndsBeforeCapital => match buf[j..].trim_start().chars().next() {
                        Some(n) if n.is_uppercase() => return Some(j),
                        Some(_) => {}
                        None => return None,
                    },
                }
            }
            '\n' if seen_text => return Some(i),
            ',' | ';' | ':' if seen_text && count >= clause_min.max(1) => match chars.peek() {
                Some(&(_, n)) if n.is_whitespace() => return Some(i + 1),
                Some(_) => {}
                None if eof => {}
                None => return None,
            },
            _ if c.is_whitespace() => {
                if seen_text && count > max_chars {
                    return Some(i);
                }
            }
            _ => seen_text |= c.is_alphanumeric(),
        }
    }
    None
}

/// Where the first words of `buf` end as a piece of their own (a byte offset
/// at the end of a word), if that is already certain: see [`SplitOptions`].
/// Words still being written (no whitespace after them yet) are not judged.
fn find_word_cut(buf: &str, min_words: usize, max_words: usize) -> Option<usize> {
    if max_words == 0 {
        return None;
    }
    let mut tokens = word_spans(buf).peekable();
    let mut words = 0;
    while let Some((start, end)) = tokens.next() {
        // A next word, even half written, means there is more to say after this one.
        let &(next_start, next_end) = tokens.peek()?;
        let token = &buf[start..end];
        if !token.chars().any(char::is_alphanumeric) {
            continue;
        }
        words += 1;
        if words < min_words.max(1) || !may_end_piece(token) {
            continue;
        }
        if words == max_words {
            return Some(end);
        }
        if next_end == buf.len() {
            return None; // "for" or "forty"? wait for the next word's end
        }
        let next = &buf[next_start..next_end];
        if ends_clause(token) || (is_joiner(next) && !is_joiner(token)) {
            return Some(end);
        }
    }
    None
}

/// Byte ranges of the whitespace-separated words of `s`.
fn word_spans(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let start = pos + s[pos..].find(|c: char| !c.is_whitespace())?;
        let end = s[start..]
            .find(char::is_whitespace)
            .map_or(s.len(), |i| start + i);
        pos = end;
        Some((start, end))
    })
}

/// Whether a piece may end after `word`: not after a number or an abbreviation
/// that the next word completes ("10:30 am", "$5 million", "Dr. Smith"),
/// unless a clause mark follows it.
fn may_end_piece(word: &str) -> bool {
    let core = word.trim_end_matches(CLOSERS);
    if ends_clause(word) {
        return true;
    }
    !core.ends_with(['.', '-', '/', '&'])
        && !core.chars().any(|c| c.is_ascii_digit())
        && core.chars().last().is_some_and(char::is_alphanumeric)
}

fn ends_clause(word: &str) -> bool {
    word.trim_end_matches(CLOSERS).ends_with([',', ';', ':'])
}

fn is_joiner(word: &str) -> bool {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    JOINERS.iter().any(|j| j.eq_ignore_ascii_case(core))
}

/// Whether `chunk` was cut between two words of a phrase, with no punctuation
/// at its end: the voice should go on into the next chunk without a pause.
pub fn ends_mid_phrase(chunk: &str) -> bool {
    chunk
        .trim_end()
        .trim_end_matches(CLOSERS)
        .chars()
        .last()
        .is_some_and(|c| !matches!(c, '.' | '!' | '?' | ',' | ';' | ':' | '\u{2026}'))
}

/// The word that ends at byte `end` (exclusive), opening quotes stripped.
fn word_before(buf: &str, end: usize) -> &str {
    let head = &buf[..end];
    let start = head.rfind(char::is_whitespace).map_or(0, |p| {
        p + head[p..].chars().next().map_or(1, char::len_utf8)
    });
    head[start..].trim_start_matches(OPENERS)
}

/// Keep a chunk only if there is something to say in it.
fn speakable(chunk: &str) -> Option<String> {
    let t = chunk.trim();
    t.chars().any(char::is_alphanumeric).then(|| t.to_string())
}

/// Split a whole text into sentences (no early clause cuts).
pub fn split_sentences(text: &str) -> Vec<String> {
    let opts = SplitOptions::default();
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = find_cut(rest, true, usize::MAX, opts.max_chars) {
        out.extend(speakable(&rest[..end]));
        rest = &rest[end..];
    }
    out.extend(speakable(rest));
    out
}

/// Streaming splitter: push text deltas as they arrive, get back the chunks
/// that are complete and safe to speak.
#[derive(Debug, Clone, Default)]
pub struct SentenceSplitter {
    buf: String,
    opts: SplitOptions,
    /// Whether a chunk was already emitted for this reply (only the first
    /// chunk gets the short early cut).
    emitted: bool,
}

impl SentenceSplitter {
    /// A splitter with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter with explicit options.
    pub fn with_options(opts: SplitOptions) -> Self {
        SentenceSplitter {
            opts,
            ..Self::default()
        }
    }

    /// Add a delta; returns every chunk completed by it (often none).
    pub fn push(&mut self, delta: &str) -> Vec<String> {
        self.buf.push_str(delta);
        let mut out = Vec::new();
        loop {
            let clause_min = if self.emitted || self.opts.first_clause_min_chars == 0 {
                self.opts.clause_min_chars
            } else {
                self.opts.first_clause_min_chars
            };
            let mut cut = find_cut(&self.buf, false, clause_min, self.opts.max_chars);
            if !self.emitted {
                let o = &self.opts;
                let words = find_word_cut(&self.buf, o.first_cut_min_words, o.first_cut_max_words);
                cut = match (cut, words) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let Some(end) = cut else {
                break;
            };
            let chunk = speakable(&self.buf[..end]);
            self.buf.drain(..end);
            if let Some(chunk) = chunk {
                self.emitted = true;
                out.push(chunk);
            }
        }
        out
    }

    /// End of the reply: return whatever is left (if speakable) and reset.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        self.emitted = false;
        speakable(&rest)
    }

    /// Drop buffered text (e.g. on barge-in) and start a new reply.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.emitted = false;
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
