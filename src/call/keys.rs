//! Keys the caller presses on a phone's keypad (DTMF). Presses are collected into one entry
//! until `#`, [`MAX_DIGITS`] keys or a pause of [`ENTRY_PAUSE`]; a complete entry is a caller
//! turn whose text is [`turn_text`] (`Pressed keys: 1 2 #`).

use std::time::Duration;

use tokio::time::Instant;

/// A pause after the last key that ends the entry.
pub const ENTRY_PAUSE: Duration = Duration::from_millis(1500);

/// The most keys in one `dtmf` message, and in one entry.
pub const MAX_DIGITS: usize = 32;

/// A key of the keypad: `0-9`, `*`, `#` and `A-D`.
pub fn is_key(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')
}

/// 1 to [`MAX_DIGITS`] keys and nothing else.
pub fn valid_digits(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= MAX_DIGITS && digits.chars().all(is_key)
}

/// What the agent reads for an entry: `Pressed keys: ` and the keys, space-separated.
pub fn turn_text(entry: &str) -> String {
    let keys: Vec<String> = entry.chars().map(String::from).collect();
    format!("Pressed keys: {}", keys.join(" "))
}

/// What pressing keys did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pressed {
    /// Entries completed by these keys (`#` or the length cap), in order.
    pub entries: Vec<String>,
    /// The keys ended with the agent's recording opt-out code.
    pub opted_out: bool,
}

/// The entry being keyed in.
#[derive(Debug, Default)]
pub struct Keypad {
    entry: String,
    /// When the entry ends if no other key comes.
    deadline: Option<Instant>,
}

impl Keypad {
    /// Adds `digits` (already checked with [`valid_digits`]). `opt_out` is the agent's code, if
    /// it has one: it matches when the entry so far ends with it.
    pub fn press(&mut self, digits: &str, opt_out: Option<&str>, now: Instant) -> Pressed {
        let mut out = Pressed::default();
        for c in digits.chars().filter(|c| is_key(*c)) {
            self.entry.push(c);
            if opt_out.is_some_and(|code| !code.is_empty() && self.entry.ends_with(code)) {
                out.opted_out = true;
            }
            if c == '#' || self.entry.len() >= MAX_DIGITS {
                out.entries.push(std::mem::take(&mut self.entry));
            }
        }
        self.deadline = (!self.entry.is_empty()).then(|| now + ENTRY_PAUSE);
        out
    }

    /// When the entry in progress ends by itself; `None` when there is none.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The entry in progress, ended by a pause.
    pub fn pause(&mut self) -> Option<String> {
        self.deadline = None;
        (!self.entry.is_empty()).then(|| std::mem::take(&mut self.entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_checked() {
        assert!(valid_digits("0123456789*#ABCD"));
        assert!(!valid_digits(""));
        assert!(!valid_digits("12e"));
        assert!(!valid_digits("1 2"));
        assert!(!valid_digits("a"));
        assert!(!valid_digits(&"1".repeat(33)));
        assert!(valid_digits(&"1".repeat(32)));
    }

    #[test]
    fn entries_end_at_hash_at_the_cap_and_at_a_pause() {
        let now = Instant::now();
        let mut k = Keypad::default();
        let p = k.press("12#3", None, now);
        assert_eq!(p.entries, vec!["12#".to_string()]);
        assert_eq!(k.deadline(), Some(now + ENTRY_PAUSE));
        let p = k.press("4", None, now);
        assert!(p.entries.is_empty());
        assert_eq!(k.pause().as_deref(), Some("34"));
        assert_eq!(k.deadline(), None);
        assert_eq!(k.pause(), None);
        let p = k.press(&"7".repeat(32), None, now);
        assert_eq!(p.entries, vec!["7".repeat(32)]);
        assert_eq!(k.deadline(), None);
        assert_eq!(turn_text("12#"), "Pressed keys: 1 2 #");
    }

    #[test]
    fn the_opt_out_code_matches_across_presses() {
        let now = Instant::now();
        let mut k = Keypad::default();
        assert!(!k.press("*", Some("*9"), now).opted_out);
        assert!(k.press("9", Some("*9"), now).opted_out);
        assert!(!k.press("19", Some("*9"), now).opted_out);
        assert!(!k.press("*9", None, now).opted_out);
    }
}
