//! Unit tests for `normalize`, kept apart so the module stays readable.

use super::normalize;

#[test]
fn the_tricky_sentence() {
    assert_eq!(
        normalize("Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more."),
        "Doctor Smith paid five dollars and ninety-nine cents at three thirty pee em \
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
    assert_eq!(normalize("at 3:30 pm"), "at three thirty pee em");
    assert_eq!(normalize("at 3:30PM."), "at three thirty pee em.");
    assert_eq!(normalize("at 3:05"), "at three oh five");
    assert_eq!(normalize("at 3:00."), "at three o'clock.");
    assert_eq!(normalize("at 15:45"), "at fifteen forty-five");
    assert_eq!(normalize("at 7am"), "at seven ay em");
    assert_eq!(normalize("at 7 a.m. sharp"), "at seven ay em sharp");
    assert_eq!(
        normalize("Come at 9 a.m. Bring food."),
        "Come at nine ay em. Bring food."
    );
    // Not a time: minutes out of range.
    assert_eq!(normalize("ratio 3:75"), "ratio three seventy-five");
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
