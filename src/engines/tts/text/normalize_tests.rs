//! Unit tests for `normalize`, kept apart so the module stays readable.

use super::{normalize, spoken_word_counts};

#[test]
fn the_tricky_sentence() {
    assert_eq!(
        normalize("Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more."),
        "Doctor Smith paid five dollars and ninety-nine cents at three thirty PM \
         on May first, for example three point five percent more."
    );
}

#[test]
fn numbers() {
    assert_eq!(normalize("42"), "forty-two");
    assert_eq!(
        normalize("It is 3.5 meters."),
        "It is three point five meters."
    );
    assert_eq!(
        normalize("We sold 1,234 units, not 12,34."),
        "We sold one thousand two hundred thirty-four units, not twelve, thirty-four."
    );
    assert_eq!(normalize("It was -5 outside"), "It was minus five outside");
    assert_eq!(normalize("Call 0800 now"), "Call zero eight zero zero now");
    assert_eq!(normalize("(42)"), "(forty-two)");
}

#[test]
fn ordinals_years_decades() {
    assert_eq!(
        normalize("the 2nd and 23rd of 101st"),
        "the second and twenty-third of one hundred first"
    );
    assert_eq!(normalize("in 1999."), "in nineteen ninety-nine.");
    assert_eq!(normalize("May 1st, 2024"), "May first, twenty twenty-four");
    assert_eq!(
        normalize("1999 people"),
        "one thousand nine hundred ninety-nine people"
    );
    assert_eq!(normalize("the 1990s"), "the nineteen nineties");
    assert_eq!(normalize("the 80s"), "the eighties");
}

#[test]
fn times() {
    assert_eq!(normalize("at 3:30 pm"), "at three thirty PM");
    assert_eq!(normalize("at 3:30PM."), "at three thirty PM.");
    assert_eq!(normalize("at 3:05"), "at three oh five");
    assert_eq!(normalize("at 3:00."), "at three o'clock.");
    assert_eq!(normalize("at 15:45"), "at fifteen forty-five");
    assert_eq!(normalize("at 7am"), "at seven AM");
    assert_eq!(normalize("at 7 a.m. sharp"), "at seven AM sharp");
    assert_eq!(
        normalize("Come at 9 a.m. Bring food."),
        "Come at nine AM. Bring food."
    );
    // Not a time: minutes out of range.
    assert_eq!(normalize("ratio 3:75"), "ratio three seventy-five");
}

/// The times a reply is most likely to hold. "AM" and "PM" stay capitals, which espeak-ng
/// reads as letters (see `phonemize` tests); "ay em" used to be heard as "I am".
#[test]
fn times_read_as_a_clock_with_am_and_pm_as_letters() {
    for (text, spoken) in [
        ("10:30am", "ten thirty AM"),
        ("10:30 am", "ten thirty AM"),
        ("10:30 a.m.", "ten thirty AM."),
        ("10:30AM", "ten thirty AM"),
        ("2pm", "two PM"),
        ("2 PM", "two PM"),
        ("9 am", "nine AM"),
        ("3:05 p.m.", "three oh five PM."),
        ("12:00", "twelve o'clock"),
        ("12:00 pm", "twelve PM"),
        ("7:00pm", "seven PM"),
    ] {
        assert_eq!(normalize(text), spoken, "{text:?}");
    }
    assert_eq!(
        normalize("Your table is booked for 10:30am and costs $15.50."),
        "Your table is booked for ten thirty AM and costs fifteen dollars and fifty cents."
    );
    assert_eq!(
        normalize("Open 9 am to 3:05 p.m. on weekdays."),
        "Open nine AM to three oh five PM on weekdays."
    );
    // "am" the verb is left alone.
    assert_eq!(normalize("I am here at 9."), "I am here at nine.");
}

#[test]
fn prices() {
    for (text, spoken) in [
        ("$15.50", "fifteen dollars and fifty cents"),
        ("$3", "three dollars"),
        ("$3.00", "three dollars"),
        ("$1,200", "one thousand two hundred dollars"),
        ("$0.99", "ninety-nine cents"),
        ("$1.01", "one dollar and one cent"),
        ("\u{20ac}5", "five euros"),
        ("\u{00a3}2.50", "two pounds and fifty pence"),
    ] {
        assert_eq!(normalize(text), spoken, "{text:?}");
    }
    assert_eq!(
        normalize("That's $15.50, or $1,200 a year."),
        "That's fifteen dollars and fifty cents, or one thousand two hundred dollars a year."
    );
}

/// Speech text is normalised once for every engine, and Piper's voice normalises again for its
/// direct users: a second pass must change nothing.
#[test]
fn normalising_twice_changes_nothing() {
    for text in [
        "Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more.",
        "Your table is booked for 10:30am and costs $15.50.",
        "Open 9 am to 3:05 p.m., closed at 12:00 on the 2nd. Call 0800 now & then.",
        "In 1999 the 1990s ended; COVID-19 came in 2020, 10-20 people, No. 5 St. Louis.",
        "$5.5 million, 50% off, -2 degrees, 12,34 and 1,234,567.",
    ] {
        let once = normalize(text);
        assert_eq!(normalize(&once), once, "{text:?}");
    }
}

#[test]
fn currency() {
    assert_eq!(normalize("$5"), "five dollars");
    assert_eq!(normalize("$1"), "one dollar");
    assert_eq!(normalize("$0.50"), "fifty cents");
    assert_eq!(normalize("$0.01"), "one cent");
    assert_eq!(
        normalize("\u{20ac}20 or \u{00a3}3.50"),
        "twenty euros or three pounds and fifty pence"
    );
    assert_eq!(
        normalize("$1,234.05"),
        "one thousand two hundred thirty-four dollars and five cents"
    );
    assert_eq!(
        normalize("$5.5 million."),
        "five point five million dollars."
    );
    assert_eq!(normalize("$2 billion"), "two billion dollars");
}

#[test]
fn percentages() {
    assert_eq!(normalize("50%"), "fifty percent");
    assert_eq!(normalize("(3.5%)"), "(three point five percent)");
    assert_eq!(normalize("-2%"), "minus two percent");
}

#[test]
fn abbreviations() {
    assert_eq!(
        normalize("Mr. and Mrs. Jones met Prof. Lee."),
        "Mister and Missus Jones met Professor Lee."
    );
    assert_eq!(
        normalize("She lives on Elm St. in Boston."),
        "She lives on Elm Street in Boston."
    );
    assert_eq!(normalize("St. Louis"), "Saint Louis");
    assert_eq!(
        normalize("apples, pears, etc. and more"),
        "apples, pears, et cetera and more"
    );
    assert_eq!(
        normalize("apples, pears, etc. Then more"),
        "apples, pears, et cetera. Then more"
    );
    assert_eq!(normalize("fruit, i.e. apples"), "fruit, that is apples");
    assert_eq!(normalize("cats vs. dogs"), "cats versus dogs");
    assert_eq!(normalize("Room No. 5"), "Room number five");
}

#[test]
fn typography_and_mixed() {
    assert_eq!(normalize("don\u{2019}t"), "don't");
    assert_eq!(normalize("A\u{2014}B"), "A, B");
    assert_eq!(normalize("Tom & Jerry"), "Tom and Jerry");
    assert_eq!(normalize("COVID-19"), "COVID nineteen");
    assert_eq!(normalize("10-20 people"), "ten to twenty people");
    assert_eq!(normalize("**bold** text"), "bold text");
    assert_eq!(normalize("  spaced   out  "), "spaced out");
    assert_eq!(normalize(""), "");
}

#[test]
fn never_panics_on_any_slice_of_odd_text() {
    let odd = "Café 1st naïve $ $. €1,2 3:3 12:345pm -% 1,,000 No. ¥5 İpm 7ª (…) “$5”— 1990s's";
    let starts: Vec<usize> = odd.char_indices().map(|(i, _)| i).collect();
    for &a in &starts {
        for &b in starts.iter().filter(|&&b| b >= a) {
            let _ = normalize(&odd[a..b]);
        }
    }
    assert_eq!(normalize("café"), "café");
}

#[test]
fn spoken_word_counts_weigh_each_written_word() {
    assert_eq!(
        spoken_word_counts("It costs $15.50 at 10:30am, Dr. Smith."),
        vec![1, 1, 5, 1, 3, 1, 1]
    );
    assert_eq!(spoken_word_counts("  "), Vec::<usize>::new());
    assert_eq!(spoken_word_counts("*** ok"), vec![1, 1]);
}
