//! Unit tests for the sentence splitters, feeding text token by token.

use super::{ends_mid_phrase, split_sentences, SentenceSplitter, SplitOptions};

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

/// The splitter without its cuts between words (`first_cut_max_words: 0`).
fn without_word_cuts() -> SentenceSplitter {
    SentenceSplitter::with_options(SplitOptions {
        first_cut_max_words: 0,
        ..SplitOptions::default()
    })
}

#[test]
fn short_first_clause_then_full_sentences() {
    let text = "Sure, I can help you with that, of course. Your order, number five, ships today.";
    assert_eq!(
        feed(&mut without_word_cuts(), &word_tokens(text)),
        vec![
            // "Sure," is under 20 characters: no cut there.
            "Sure, I can help you with that,",
            "of course.",
            // Later sentences are not cut at commas.
            "Your order, number five, ships today."
        ]
    );
    // By default the first words go ahead of the first comma, cut before "with".
    assert_eq!(
        feed(&mut SentenceSplitter::new(), &word_tokens(text)),
        vec![
            "Sure, I can help you",
            "with that, of course.",
            "Your order, number five, ships today."
        ]
    );
}

#[test]
fn abbreviations_and_initials() {
    let text = "I met Mr. J. R. Smith at St. Mary's at 9 a.m. today. He works etc. Then left.";
    let mut s = SentenceSplitter::with_options(SplitOptions {
        first_clause_min_chars: 0,
        first_cut_max_words: 0,
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
    // The first words are not cut after an initial either.
    assert_eq!(
        feed(&mut SentenceSplitter::new(), &char_tokens(text)),
        vec![
            "I met Mr. J. R. Smith",
            "at St. Mary's at 9 a.m. today.",
            "He works etc.",
            "Then left."
        ]
    );
}

#[test]
fn numbers_with_commas_and_colons_do_not_split() {
    let text = "We shipped 1,234,567 units by 10:45 yesterday, which is a record number. Great";
    let out = feed(&mut without_word_cuts(), &char_tokens(text));
    assert_eq!(
        out,
        vec![
            "We shipped 1,234,567 units by 10:45 yesterday,",
            "which is a record number.",
            "Great"
        ]
    );
    assert_eq!(
        feed(&mut SentenceSplitter::new(), &char_tokens(text)),
        vec![
            "We shipped 1,234,567 units",
            "by 10:45 yesterday, which is a record number.",
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

/// Every way of streaming `text` gives the same chunks.
fn streamed(text: &str) -> Vec<String> {
    let whole = feed(&mut SentenceSplitter::new(), &[text]);
    for pieces in [word_tokens(text), char_tokens(text)] {
        assert_eq!(
            feed(&mut SentenceSplitter::new(), &pieces),
            whole,
            "pieces: {pieces:?}"
        );
    }
    whole
}

#[test]
fn first_words_go_ahead_when_no_punctuation_comes() {
    // Cut before the preposition once four words are in.
    assert_eq!(
        streamed("Your table is booked for 10:30am and costs $15.50. See you then."),
        vec![
            "Your table is booked",
            "for 10:30am and costs $15.50.",
            "See you then."
        ]
    );
    // No conjunction or preposition within six words: cut after the sixth.
    assert_eq!(
        streamed("Our friendly team will gladly send you the receipt tomorrow morning."),
        vec![
            "Our friendly team will gladly send",
            "you the receipt tomorrow morning."
        ]
    );
    // Only the first chunk: later long sentences wait for their punctuation.
    assert_eq!(
        streamed("Our friendly team will gladly send you the receipt tomorrow morning and then call you back."),
        vec![
            "Our friendly team will gladly send",
            "you the receipt tomorrow morning and then call you back."
        ]
    );
}

#[test]
fn first_words_keep_what_the_normaliser_reads_together() {
    // "10:30 | am" would read "am" as the verb.
    assert_eq!(
        streamed("The meeting starts tomorrow 10:30 am sharp with the whole team."),
        vec![
            "The meeting starts tomorrow 10:30 am",
            "sharp with the whole team."
        ]
    );
    assert_eq!(
        streamed("Please bring $5 million in cash tomorrow."),
        vec!["Please bring $5 million", "in cash tomorrow."]
    );
    // Not after "Dr.": the next natural boundary, past six words.
    assert_eq!(
        streamed("We met with the nice Dr. Smith and his wife today."),
        vec!["We met with the nice Dr. Smith", "and his wife today."]
    );
    // A number with a clause mark after it may end the piece.
    assert_eq!(
        streamed("It was delivered on March 3rd, 2024 and signed by Sam."),
        vec!["It was delivered on March 3rd,", "2024 and signed by Sam."]
    );
    // Not after a joiner: "and | then" would split a phrase.
    assert_eq!(
        streamed("I can book it and then send the details."),
        vec!["I can book it", "and then send the details."]
    );
}

#[test]
fn punctuation_within_the_first_words_comes_first() {
    assert_eq!(
        streamed("Yes. I think we should all go to the park after lunch."),
        vec!["Yes.", "I think we should all go to the park after lunch."]
    );
    assert_eq!(
        streamed("Of course, that works for me."),
        vec!["Of course, that works", "for me."]
    );
}

#[test]
fn short_replies_are_not_cut() {
    assert_eq!(
        streamed("Thanks for calling us"),
        vec!["Thanks for calling us"]
    );
    assert_eq!(
        streamed("Your table is booked for"),
        vec!["Your table is booked for"]
    );
    // Trailing whitespace and nothing after: no cut, the last words stay together.
    assert_eq!(
        streamed("We will see you all soon "),
        vec!["We will see you all soon"]
    );
    let mut s = SentenceSplitter::new();
    assert!(s.push("Your table is booked ").is_empty());
    assert!(s.push("fo").is_empty(), "could be 'forty'");
    assert_eq!(s.push("r "), vec!["Your table is booked"]);
}

#[test]
fn word_cuts_can_be_turned_off() {
    let mut s = SentenceSplitter::with_options(SplitOptions {
        first_cut_max_words: 0,
        ..SplitOptions::default()
    });
    assert_eq!(
        feed(
            &mut s,
            &word_tokens("Your table is booked for 10:30am today.")
        ),
        vec!["Your table is booked for 10:30am today."]
    );
}

#[test]
fn chunks_cut_between_words_are_told_apart() {
    assert!(ends_mid_phrase("Your table is booked"));
    assert!(ends_mid_phrase("(see the list)"));
    for chunk in [
        "Hello.",
        "Really?!",
        "He said \"stop.\"",
        "Items:",
        "Sure,",
        "Then\u{2026}",
        "",
    ] {
        assert!(!ends_mid_phrase(chunk), "{chunk:?}");
    }
}
