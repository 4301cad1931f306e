//! What a flow understands of the caller's words: keywords, digits said or keyed, yes and no.
//! Transcripts come with capitals and punctuation ("Two.", "Yes, please!"); everything is
//! compared as lowercase words.

use regex::Regex;

/// The words of `text`: lowercase, letters, digits and apostrophes only.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `phrase` (one or more words) is said in `said`, as whole words; the position of
/// its first word when it is.
pub fn find_phrase(said: &[String], phrase: &str) -> Option<usize> {
    let want = words(phrase);
    if want.is_empty() || want.len() > said.len() {
        return None;
    }
    (0..=said.len() - want.len()).find(|&i| said[i..i + want.len()] == want[..])
}

/// The key a spoken word stands for.
fn spoken_key(word: &str) -> Option<char> {
    Some(match word {
        "zero" | "oh" | "o" => '0',
        "one" => '1',
        "two" | "to" | "too" => '2',
        "three" => '3',
        "four" | "for" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        "star" => '*',
        "pound" | "hash" => '#',
        _ => return None,
    })
}

/// Words that may come with a key said ("press two", "option 2", "number two, please").
const KEY_FILLER: &[&str] = &[
    "press", "pressing", "option", "number", "the", "please", "i", "want", "i'd", "like", "uh",
    "um", "key", "and", "choose", "pick", "select",
];

/// The one key a short answer says ("Two.", "press 2", "option number two"), if it is one.
/// Homophones like "to" or "for" count only when nothing else but filler is said.
pub fn said_key(said: &[String]) -> Option<char> {
    let mut key = None;
    for w in said {
        if KEY_FILLER.contains(&w.as_str()) {
            continue;
        }
        let k = match w.as_str() {
            d if d.len() == 1 && d.chars().all(|c| c.is_ascii_digit()) => d.chars().next(),
            other => spoken_key(other),
        };
        match (k, key) {
            (Some(k), None) => key = Some(k),
            _ => return None,
        }
    }
    key
}

/// Digits said or written in `said` ("four two", "42", "4 2"); none when no digit is said.
/// Filler words are skipped, anything else spoils it ("4 apples" is no answer).
pub fn said_digits(said: &[String]) -> Option<String> {
    let mut out = String::new();
    for w in said {
        if w.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(w);
        } else if let Some(k) = spoken_key(w).filter(char::is_ascii_digit) {
            out.push(k);
        } else if !KEY_FILLER.contains(&w.as_str()) && !matches!(w.as_str(), "it's" | "is" | "my") {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

const YES: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "correct",
    "right",
    "sure",
    "ok",
    "okay",
    "affirmative",
    "absolutely",
    "definitely",
];
const NO: &[&str] = &["no", "nope", "nah", "wrong", "incorrect", "negative", "not"];

/// `yes` or `no` as said ("Yes, please.", "That's right", "No thanks"); none when both or
/// neither are said.
pub fn said_yes_no(said: &[String]) -> Option<&'static str> {
    let yes = said.iter().any(|w| YES.contains(&w.as_str()));
    let no = said.iter().any(|w| NO.contains(&w.as_str()));
    match (yes, no) {
        (true, false) => Some("yes"),
        (false, true) => Some("no"),
        _ => None,
    }
}

/// Compiles a listen's `pattern`, bounded in size.
pub fn pattern(p: &str) -> Result<Regex, String> {
    if p.len() > super::MAX_PATTERN_BYTES {
        return Err(format!(
            "pattern is longer than {} bytes",
            super::MAX_PATTERN_BYTES
        ));
    }
    regex::RegexBuilder::new(p)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| "pattern is not a valid regular expression".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_said() {
        for (text, key) in [
            ("Two.", Some('2')),
            ("press 2", Some('2')),
            ("Option number two, please.", Some('2')),
            ("Oh.", Some('0')),
            ("to", Some('2')),
            ("star", Some('*')),
            ("two three", None),
            ("I want to book", None),
            ("", None),
        ] {
            assert_eq!(said_key(&words(text)), key, "{text}");
        }
    }

    #[test]
    fn digits_said() {
        for (text, digits) in [
            ("Four, two, one, five.", Some("4215")),
            ("It's 90210.", Some("90210")),
            ("my number is 5 5 5 one two", Some("55512")),
            ("four apples", None),
            ("I don't know", None),
        ] {
            assert_eq!(said_digits(&words(text)).as_deref(), digits, "{text}");
        }
    }

    #[test]
    fn yes_and_no() {
        assert_eq!(said_yes_no(&words("Yes, please.")), Some("yes"));
        assert_eq!(said_yes_no(&words("That's right!")), Some("yes"));
        assert_eq!(said_yes_no(&words("No thanks")), Some("no"));
        assert_eq!(said_yes_no(&words("yes no")), None);
        assert_eq!(said_yes_no(&words("maybe")), None);
    }

    #[test]
    fn phrases_are_whole_words() {
        let said = words("I'd like to make a Booking, please.");
        assert_eq!(find_phrase(&said, "booking"), Some(5));
        assert_eq!(find_phrase(&said, "make a booking"), Some(3));
        assert_eq!(find_phrase(&said, "book"), None);
        assert_eq!(find_phrase(&said, ""), None);
    }
}
