//! How one token reads aloud: plain numbers, currency amounts, clock times,
//! ordinals ("1st"), decades ("1990s") and words mixing digits and letters.
//! Context (neighbouring words) is handled by `normalize`.

use super::numbers;

/// A plain number: optional sign, digits with valid thousands separators,
/// optional decimal part. "1,234.5" -> "one thousand two hundred thirty-four point five".
pub(crate) fn number(s: &str) -> Option<String> {
    let (sign, body) = match s.strip_prefix(['-', '+']) {
        Some(rest) if s.starts_with('-') => ("minus ", rest),
        Some(rest) => ("plus ", rest),
        None => ("", s),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !valid_grouping(int_part) || !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    numbers::decimal(int_part, frac_part).map(|w| format!("{sign}{w}"))
}

/// Digits, optionally grouped in threes by commas ("1,234,567").
fn valid_grouping(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    if !s.contains(',') {
        return s.chars().all(|c| c.is_ascii_digit());
    }
    let groups: Vec<&str> = s.split(',').collect();
    let first_ok = (1..=3).contains(&groups[0].len());
    first_ok
        && groups
            .iter()
            .all(|g| !g.is_empty() && g.chars().all(|c| c.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// "$5.99" -> ("five dollars and ninety-nine", "cents"); with a scale word
/// after (`scaled`), "$5.5" -> ("five point five", "dollars").
/// Returns (amount words, unit words).
pub(crate) fn currency(core: &str, scaled: bool) -> Option<(String, String)> {
    let mut chars = core.chars();
    let symbol = chars.next()?;
    let (one, many, sub_one, sub_many) = match symbol {
        '$' => ("dollar", "dollars", "cent", "cents"),
        '\u{20ac}' => ("euro", "euros", "cent", "cents"),
        '\u{00a3}' => ("pound", "pounds", "penny", "pence"),
        '\u{00a5}' => ("yen", "yen", "sen", "sen"),
        _ => return None,
    };
    let amount = chars.as_str();
    let (int_part, frac_part) = amount.split_once('.').unwrap_or((amount, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !valid_grouping(int_part) || !frac_part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = int_part.replace(',', "").parse().unwrap_or(0);
    if frac_part.len() > 2 || scaled {
        // "$0.005" or "$5.5 million": read as a decimal.
        let words = numbers::decimal(if int_part.is_empty() { "0" } else { int_part }, frac_part)?;
        return Some((words, many.to_string()));
    }
    let cents: u64 = if frac_part.is_empty() {
        0
    } else {
        format!("{frac_part:0<2}").parse().ok()?
    };
    let unit = |n: u64, one: &str, many: &str| {
        if n == 1 {
            one.to_string()
        } else {
            many.to_string()
        }
    };
    let whole_words = numbers::integer(if int_part.is_empty() { "0" } else { int_part })?;
    let amount = match (whole, cents) {
        (_, 0) => whole_words,
        (0, c) => return Some((numbers::cardinal(c), unit(c, sub_one, sub_many))),
        (w, c) => {
            return Some((
                format!(
                    "{whole_words} {} and {}",
                    unit(w, one, many),
                    numbers::cardinal(c)
                ),
                unit(c, sub_one, sub_many),
            ))
        }
    };
    Some((amount, unit(whole, one, many)))
}

/// "3:30" -> "three thirty", "3:05" -> "three oh five", "3:00" -> "three
/// o'clock", "15:45" -> "fifteen forty-five"; "3:30pm" also accepted, and
/// `am_pm` is the spoken "AM"/"PM" of the next word, if it is one ("3:00 pm"
/// -> "three PM").
pub(crate) fn time(core: &str, am_pm: Option<&'static str>) -> Option<String> {
    let (clock, suffix) = split_glued_am_pm(core).unwrap_or((core, am_pm.unwrap_or("")));
    let (h, m) = clock.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let hour: u64 = h.parse().ok()?;
    let minute: u64 = m.parse().ok()?;
    if hour > 23 || minute > 59 || !m.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hour_words = numbers::cardinal(hour);
    let mut words = match minute {
        0 if suffix.is_empty() => format!("{hour_words} o'clock"),
        0 => hour_words,
        1..=9 => format!("{hour_words} oh {}", numbers::cardinal(minute)),
        _ => format!("{hour_words} {}", numbers::cardinal(minute)),
    };
    if !suffix.is_empty() {
        words.push(' ');
        words.push_str(suffix);
    }
    Some(words)
}

/// "3pm" -> ("3", "PM").
pub(crate) fn split_glued_am_pm(core: &str) -> Option<(&str, &'static str)> {
    if !core.is_ascii() {
        return None;
    }
    let lower = core.to_lowercase();
    for (tail, spoken) in [("a.m", "AM"), ("p.m", "PM"), ("am", "AM"), ("pm", "PM")] {
        if lower.ends_with(tail) && core.len() > tail.len() {
            let head = &core[..core.len() - tail.len()];
            if head.chars().last().is_some_and(|c| c.is_ascii_digit()) {
                return Some((head, spoken));
            }
        }
    }
    None
}

/// "1st", "22nd", "103rd", "4th" -> ordinal words.
pub(crate) fn ordinal(core: &str) -> Option<String> {
    if core.len() < 3 || !core.is_ascii() {
        return None;
    }
    let (digits, suffix) = core.split_at(core.len() - 2);
    let suffix = suffix.to_lowercase();
    if !["st", "nd", "rd", "th"].contains(&suffix.as_str()) {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(numbers::ordinal)
}

/// "1990s" -> "nineteen nineties", "80s" -> "eighties".
pub(crate) fn decade(core: &str) -> Option<String> {
    let digits = core.strip_suffix('s').or_else(|| core.strip_suffix("'s"))?;
    let digits = digits.strip_prefix('\'').unwrap_or(digits);
    if !(digits.len() == 2 || digits.len() == 4)
        || !digits.ends_with('0')
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let words = if digits.len() == 4 {
        numbers::year(n)
    } else {
        numbers::cardinal(n)
    };
    let base = words.strip_suffix('y')?;
    Some(format!("{base}ies"))
}

/// Words mixing digits and letters ("COVID-19", "24/7", "10-20"): spell out
/// each run of digits, read a hyphen between numbers as "to".
pub(crate) fn mixed(core: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let chars: Vec<char> = core.chars().collect();
    let flush = |run: &mut String, out: &mut String| {
        if !run.is_empty() {
            let trimmed = run.trim_end_matches('.');
            let words = number(trimmed).unwrap_or_else(|| numbers::digits(trimmed));
            out.push(' ');
            out.push_str(&words);
            out.push(' ');
            run.clear();
        }
    };
    for (k, &c) in chars.iter().enumerate() {
        let inner_sep =
            c == '.' && !run.is_empty() && chars.get(k + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_ascii_digit() || inner_sep {
            run.push(c);
            continue;
        }
        let was_number = !run.is_empty();
        flush(&mut run, &mut out);
        match c {
            '-' if was_number && chars.get(k + 1).is_some_and(|n| n.is_ascii_digit()) => {
                out.push_str(" to ")
            }
            '-' | '/' | ':' => out.push(' '),
            _ => out.push(c),
        }
    }
    flush(&mut run, &mut out);
    out.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",")
}
