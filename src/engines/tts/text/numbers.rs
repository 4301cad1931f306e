//! Numbers spelled out as American English words: cardinals ("forty-two"),
//! ordinals ("twenty-first"), decimals ("three point five"), years
//! ("nineteen ninety-nine") and digit-by-digit readings ("oh seven").
//!
//! Pure functions on already-parsed digits; deciding *which* reading a piece of
//! text needs is the job of `normalize`.

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

const SCALES: [(u64, &str); 6] = [
    (1_000_000_000_000_000_000, "quintillion"),
    (1_000_000_000_000_000, "quadrillion"),
    (1_000_000_000_000, "trillion"),
    (1_000_000_000, "billion"),
    (1_000_000, "million"),
    (1_000, "thousand"),
];

/// Words for 0..=999 (American style: no "and").
fn below_thousand(n: u64, out: &mut Vec<String>) {
    let hundreds = n / 100;
    let rest = n % 100;
    if hundreds > 0 {
        out.push(ONES[hundreds as usize].to_string());
        out.push("hundred".to_string());
    }
    if rest == 0 {
        return;
    }
    if rest < 20 {
        out.push(ONES[rest as usize].to_string());
    } else if rest.is_multiple_of(10) {
        out.push(TENS[(rest / 10) as usize].to_string());
    } else {
        out.push(format!(
            "{}-{}",
            TENS[(rest / 10) as usize],
            ONES[(rest % 10) as usize]
        ));
    }
}

/// "1234" -> "one thousand two hundred thirty-four".
pub fn cardinal(n: u64) -> String {
    if n == 0 {
        return "zero".to_string();
    }
    let mut words = Vec::new();
    let mut rest = n;
    for (scale, name) in SCALES {
        if rest >= scale {
            below_thousand(rest / scale, &mut words);
            words.push(name.to_string());
            rest %= scale;
        }
    }
    below_thousand(rest, &mut words);
    words.join(" ")
}

/// Turn the last word of a cardinal into its ordinal form.
fn ordinal_word(word: &str) -> String {
    match word {
        "one" => "first".into(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}

/// "21" -> "twenty-first", "100" -> "one hundredth".
pub fn ordinal(n: u64) -> String {
    let card = cardinal(n);
    // Only the last word (or the part after the last hyphen) changes.
    let split_at = card.rfind([' ', '-']).map_or(0, |i| i + 1);
    let (head, last) = card.split_at(split_at);
    format!("{head}{}", ordinal_word(last))
}

/// Each digit as a word: "007" -> "zero zero seven".
pub fn digits(s: &str) -> String {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| ONES[d as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A year the way people say it: 1999 -> "nineteen ninety-nine",
/// 1905 -> "nineteen oh five", 1900 -> "nineteen hundred",
/// 2005 -> "two thousand five", 2024 -> "twenty twenty-four".
pub fn year(n: u64) -> String {
    if !(1000..=9999).contains(&n) || (2000..=2009).contains(&n) || n.is_multiple_of(1000) {
        return cardinal(n);
    }
    let hi = n / 100;
    let lo = n % 100;
    let hi_words = cardinal(hi);
    match lo {
        0 => format!("{hi_words} hundred"),
        1..=9 => format!("{hi_words} oh {}", ONES[lo as usize]),
        _ => format!("{hi_words} {}", cardinal(lo)),
    }
}

/// A decimal given as its integer digits and fraction digits:
/// ("3", "14") -> "three point one four". Commas in `int_part` are ignored.
/// Returns `None` when the integer part does not fit in a `u64`.
pub fn decimal(int_part: &str, frac_part: &str) -> Option<String> {
    let int_words = integer(int_part)?;
    if frac_part.is_empty() {
        return Some(int_words);
    }
    Some(format!("{int_words} point {}", digits(frac_part)))
}

/// An integer written with optional thousands separators: "1,234" -> cardinal.
/// Very long digit strings and ones with a leading zero ("007", an account or
/// phone number) are read digit by digit.
pub fn integer(s: &str) -> Option<String> {
    let plain: String = s.chars().filter(|c| *c != ',').collect();
    if plain.is_empty() || !plain.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if (plain.len() > 1 && plain.starts_with('0') && !s.contains(',')) || plain.len() > 15 {
        return Some(digits(&plain));
    }
    plain.parse::<u64>().ok().map(cardinal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinals() {
        assert_eq!(cardinal(0), "zero");
        assert_eq!(cardinal(7), "seven");
        assert_eq!(cardinal(42), "forty-two");
        assert_eq!(cardinal(100), "one hundred");
        assert_eq!(cardinal(115), "one hundred fifteen");
        assert_eq!(cardinal(1234), "one thousand two hundred thirty-four");
        assert_eq!(cardinal(1_000_000), "one million");
        assert_eq!(
            cardinal(2_000_300_001),
            "two billion three hundred thousand one"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "first");
        assert_eq!(ordinal(2), "second");
        assert_eq!(ordinal(3), "third");
        assert_eq!(ordinal(4), "fourth");
        assert_eq!(ordinal(12), "twelfth");
        assert_eq!(ordinal(20), "twentieth");
        assert_eq!(ordinal(21), "twenty-first");
        assert_eq!(ordinal(100), "one hundredth");
        assert_eq!(ordinal(103), "one hundred third");
    }

    #[test]
    fn years_and_digits() {
        assert_eq!(year(1999), "nineteen ninety-nine");
        assert_eq!(year(1905), "nineteen oh five");
        assert_eq!(year(1900), "nineteen hundred");
        assert_eq!(year(2005), "two thousand five");
        assert_eq!(year(2024), "twenty twenty-four");
        assert_eq!(digits("007"), "zero zero seven");
        assert_eq!(integer("007").as_deref(), Some("zero zero seven"));
        assert_eq!(
            integer("1,234").as_deref(),
            Some("one thousand two hundred thirty-four")
        );
        assert_eq!(integer("12a"), None);
    }

    #[test]
    fn decimals() {
        assert_eq!(decimal("3", "14").as_deref(), Some("three point one four"));
        assert_eq!(decimal("0", "5").as_deref(), Some("zero point five"));
    }
}
