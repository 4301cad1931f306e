//! The abbreviations that end in a period without ending a sentence ("Dr.",
//! "e.g.", "p.m."), shared by the normaliser (which expands them) and the
//! sentence splitters (which must not cut after them).

/// What a period after a word means for sentence splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeriodKind {
    /// An ordinary full stop: the sentence ends here.
    FullStop,
    /// Never a sentence end: a title before a name ("Dr.", "Mr.") or a
    /// lead-in ("e.g.", "vs.").
    NeverEnds,
    /// A sentence end only when the next word starts with a capital letter
    /// ("etc.", "p.m.", "U.S.", an initial).
    EndsBeforeCapital,
}

/// Titles and lead-ins that are never followed by a sentence break.
const NEVER_ENDS: [&str; 16] = [
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "no", "e.g", "i.e", "vs", "cf", "approx", "incl",
    "fig", "sgt",
];

/// Abbreviations that may or may not close a sentence.
const MAY_END: [&str; 8] = ["etc", "a.m", "p.m", "jr", "sr", "inc", "ltd", "co"];

/// Classify the period that follows `word` (the text between the previous
/// whitespace and the period, opening quotes/brackets already stripped).
pub(crate) fn classify_period(word: &str) -> PeriodKind {
    let lower = word.to_lowercase();
    if lower.is_empty() || lower.ends_with('.') {
        // A lone "." or an ellipsis: a real pause.
        return PeriodKind::FullStop;
    }
    if NEVER_ENDS.contains(&lower.as_str()) {
        return PeriodKind::NeverEnds;
    }
    if MAY_END.contains(&lower.as_str()) {
        return PeriodKind::EndsBeforeCapital;
    }
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        // An initial, as in "J. R. Smith" (a sentence ending in a capital
        // letter alone is rarer than a name).
        (Some(c), None) if c.is_uppercase() => return PeriodKind::NeverEnds,
        (Some(c), None) if c.is_alphabetic() => return PeriodKind::EndsBeforeCapital,
        _ => {}
    }
    // "U.S", "Ph.D": letters with inner periods.
    if word.contains('.') && word.chars().all(|c| c.is_alphabetic() || c == '.') {
        return PeriodKind::EndsBeforeCapital;
    }
    PeriodKind::FullStop
}

/// How an abbreviation is spoken, and whether its period should be kept as a
/// sentence end (`keep_period`), given the word that follows it.
pub(crate) struct Expansion {
    pub words: &'static str,
    pub keep_period: bool,
}

/// Expand `core` (an abbreviation without its final period) when it is
/// followed by a period. `next` is the next word, if any.
pub(crate) fn expand(core: &str, next: Option<&str>) -> Option<Expansion> {
    let next_first = next.and_then(|w| w.chars().find(|c| c.is_alphanumeric()));
    let next_capital = next_first.is_some_and(char::is_uppercase);
    let next_digit = next_first.is_some_and(|c| c.is_ascii_digit());
    // A period that may end the sentence ends it before a capital or at the end.
    let ends = next.is_none() || next_capital;
    let title = |words| {
        Some(Expansion {
            words,
            keep_period: false,
        })
    };
    let maybe = |words| {
        Some(Expansion {
            words,
            keep_period: ends,
        })
    };
    match core {
        "Mr" => title("Mister"),
        "Mrs" => title("Missus"),
        "Ms" => title("Miz"),
        "Prof" => title("Professor"),
        "Mt" => title("Mount"),
        "Sgt" => title("Sergeant"),
        "Dr" if next_capital => title("Doctor"),
        "Dr" => maybe("Drive"),
        "St" if next_capital => title("Saint"),
        "St" => maybe("Street"),
        "Ave" => maybe("Avenue"),
        "Jr" => maybe("Junior"),
        "Sr" => maybe("Senior"),
        "No" | "no" if next_digit => title("number"),
        _ => match core.to_lowercase().as_str() {
            "e.g" => title("for example"),
            "i.e" => title("that is"),
            "vs" => title("versus"),
            "cf" => title("compare"),
            "approx" => title("approximately"),
            "incl" => title("including"),
            "etc" => maybe("et cetera"),
            "a.m" => maybe("AM"),
            "p.m" => maybe("PM"),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        assert_eq!(classify_period("Dr"), PeriodKind::NeverEnds);
        assert_eq!(classify_period("e.g"), PeriodKind::NeverEnds);
        assert_eq!(classify_period("p.m"), PeriodKind::EndsBeforeCapital);
        assert_eq!(classify_period("U.S"), PeriodKind::EndsBeforeCapital);
        assert_eq!(classify_period("J"), PeriodKind::NeverEnds);
        assert_eq!(classify_period("x"), PeriodKind::EndsBeforeCapital);
        assert_eq!(classify_period("today"), PeriodKind::FullStop);
        assert_eq!(classify_period("3"), PeriodKind::FullStop);
        assert_eq!(classify_period("wait.."), PeriodKind::FullStop);
    }

    #[test]
    fn expansions() {
        let e = expand("Dr", Some("Smith")).map(|e| e.words);
        assert_eq!(e, Some("Doctor"));
        let e = expand("Dr", None).map(|e| (e.words, e.keep_period));
        assert_eq!(e, Some(("Drive", true)));
        let e = expand("etc", Some("and")).map(|e| (e.words, e.keep_period));
        assert_eq!(e, Some(("et cetera", false)));
        let e = expand("p.m", Some("Then")).map(|e| (e.words, e.keep_period));
        assert_eq!(e, Some(("PM", true)));
        assert!(expand("No", Some("way")).is_none());
        assert!(expand("hello", None).is_none());
    }
}
