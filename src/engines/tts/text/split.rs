//! Sentence splitting, whole-text (`split_sentences`) and streaming
//! (`SentenceSplitter`, fed the text deltas a language model streams).
//!
//! A sentence ends at `.`, `!` or `?` (plus any closing quotes or brackets)
//! followed by whitespace, except after abbreviations such as "Dr." or "e.g."
//! and inside numbers such as "3.5". A line break also ends a chunk. To cut the
//! time to first audio, the first chunk of a reply may end at a clause mark
//! (`,` `;` `:`) once it is long enough; chunks are never cut inside a word.

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
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            first_clause_min_chars: 20,
            clause_min_chars: 120,
            max_chars: 300,
        }
    }
}

const CLOSERS: &[char] = &['"', '\'', ')', ']', '}'];
const OPENERS: &[char] = &['"', '\'', '(', '[', '{'];

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
            let Some(end) = find_cut(&self.buf, false, clause_min, self.opts.max_chars) else {
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
