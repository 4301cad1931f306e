//! Unit tests for the sentence splitters, feeding text token by token.

use super::{split_sentences, SentenceSplitter, SplitOptions};

/// Feed `pieces` one by one, then finish; collect every chunk.
fn feed(splitter: &mut SentenceSplitter, pieces: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pieces {
        out.extend(splitter.push(p));
    }
    out.extend(splitter.finish());
    out
}

/// Split like a language model's tokenizer might: words with their leading space.
fn word_tokens(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if (c == ' ' || c == '.' || c == ',') && i > start {
            pieces.push(&text[start..i]);
            start = i;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

fn char_tokens(text: &str) -> Vec<&str> {
    text.char_indices()
        .map(|(i, c)| &text[i..i + c.len_utf8()])
        .collect()
}

const TRICKY: &str = "Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more. \
                      Then he left! Did he? Yes.";

#[test]
fn tricky_text_whole() {
    assert_eq!(
        split_sentences(TRICKY),
        vec![
            "Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more.",
            "Then he left!",
            "Did he?",
            "Yes."
        ]
    );
}

#[test]
fn tricky_text_streamed_any_chunking() {
    let expected = vec![
        "Dr. Smith paid $5.99 at 3:30 p.m. on May 1st,",
        "e.g. 3.5% more.",
        "Then he left!",
        "Did he?",
        "Yes.",
    ];
    for pieces in [word_tokens(TRICKY), char_tokens(TRICKY), vec![TRICKY]] {
        let mut s = SentenceSplitter::new();
        assert_eq!(feed(&mut s, &pieces), expected, "pieces: {pieces:?}");
    }
}

#[test]
fn yields_as_soon_as_safe() {
    let mut s = SentenceSplitter::new();
    assert!(s.push("Hello").is_empty());
    assert!(
        s.push(" there.").is_empty(),
        "must wait: could be 'there.5'"
    );
    assert_eq!(s.push(" "), vec!["Hello there."]);
    assert!(s.push("It costs 3").is_empty());
    assert!(s.push(".").is_empty());
    assert!(s.push("5 dollars").is_empty(), "3.5 is not a sentence end");
    assert_eq!(s.push("! Ok"), vec!["It costs 3.5 dollars!"]);
    assert_eq!(s.finish().as_deref(), Some("Ok"));
}

#[test]
fn short_first_clause_then_full_sentences() {
    let text = "Sure, I can help you with that, of course. Your order, number five, ships today.";
    let mut s = SentenceSplitter::new();
    assert_eq!(
        feed(&mut s, &word_tokens(text)),
        vec![
            // "Sure," is under 20 characters: no cut there.
            "Sure, I can help you with that,",
            "of course.",
            // Later sentences are not cut at commas.
            "Your order, number five, ships today."
        ]
    );
}

#[test]
fn abbreviations_and_initials() {
    let text = "I met Mr. J. R. Smith at St. Mary's at 9 a.m. today. He works etc. Then left.";
    let mut s = SentenceSplitter::with_options(SplitOptions {
        first_clause_min_chars: 0,
        ..SplitOptions::default()
    });
    assert_eq!(
        feed(&mut s, &char_tokens(text)),
        vec![
            "I met Mr. J. R. Smith at St. Mary's at 9 a.m. today.",
            "He works etc.",
            "Then left."
        ]
    );
}

#[test]
fn numbers_with_commas_and_colons_do_not_split() {
    let text = "We shipped 1,234,567 units by 10:45 yesterday, which is a record number. Great";
    let mut s = SentenceSplitter::new();
    let out = feed(&mut s, &char_tokens(text));
    assert_eq!(
        out,
        vec![
            "We shipped 1,234,567 units by 10:45 yesterday,",
            "which is a record number.",
            "Great"
        ]
    );
}

#[test]
fn quotes_newlines_and_ellipses() {
    let text = "He said \"stop.\" Then... nothing.\nItems:\n- apples\n- pears";
    assert_eq!(
        split_sentences(text),
        vec![
            "He said \"stop.\"",
            "Then...",
            "nothing.",
            "Items:",
            "- apples",
            "- pears"
        ]
    );
}

#[test]
fn never_cuts_inside_a_word_when_too_long() {
    let long = "word ".repeat(100);
    let mut s = SentenceSplitter::new();
    let out = feed(&mut s, &char_tokens(&long));
    assert!(out.len() >= 2);
    for chunk in &out {
        assert!(chunk.split(' ').all(|w| w == "word"), "{chunk}");
    }
}

#[test]
fn punctuation_only_and_empty() {
    let mut s = SentenceSplitter::new();
    assert!(s.push("... ").is_empty());
    assert_eq!(s.finish(), None);
    assert!(split_sentences("").is_empty());
    assert!(split_sentences("  \n ").is_empty());
}

#[test]
fn never_panics_and_never_loses_words_on_odd_text() {
    let odd = "Ça va? Très bien… «Oui.» 3.5 e.g. Dr. 日本語。 x.\n\n,,, ok!";
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for size in 1..6 {
        let chars: Vec<char> = odd.chars().collect();
        let pieces: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
        let mut s = SentenceSplitter::new();
        let mut out = Vec::new();
        for p in &pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        // Only punctuation-only pieces may be dropped.
        let joined = words(&out.join(" "));
        assert!(joined.contains("Très bien"), "{joined}");
        assert!(joined.contains("3.5 e.g. Dr."), "{joined}");
        assert!(joined.ends_with("ok!"), "{joined}");
    }
}
