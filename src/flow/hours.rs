//! Business hours for a flow's `hours` node: opening ranges per weekday in an IANA time zone,
//! and holidays closed all day. The clock is given, so tests fix it.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::HoursNode;

/// Day keys in the order of the week.
const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// The most opening ranges of one day, and holidays of a node.
const MAX_RANGES: usize = 8;
const MAX_HOLIDAYS: usize = 366;

/// A node's hours, parsed: minutes from midnight `[from, to)` per weekday (Monday first).
#[derive(Debug, Clone)]
pub struct Hours {
    tz: TimeZone,
    week: [Vec<(u16, u16)>; 7],
    holidays: Vec<Date>,
}

/// `HH:MM` as minutes from midnight; `24:00` is the end of the day.
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn ranges(day: &str, text: &str) -> Result<Vec<(u16, u16)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = part
            .split_once('-')
            .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
            .filter(|(a, b)| a < b);
        match range {
            Some(r) => out.push(r),
            None => {
                return Err(format!(
                    "open.{day}: `{}` is not a range like 09:00-17:00",
                    part.chars().take(32).collect::<String>()
                ))
            }
        }
    }
    if out.len() > MAX_RANGES {
        return Err(format!("open.{day}: at most {MAX_RANGES} ranges"));
    }
    Ok(out)
}

impl Hours {
    /// Parses a node's hours; the error says which field is wrong.
    pub fn parse(node: &HoursNode) -> Result<Hours, String> {
        let tz = TimeZone::get(node.time_zone.trim()).map_err(|_| {
            format!(
                "time_zone `{}` is not a known time zone (e.g. Europe/London)",
                node.time_zone.chars().take(64).collect::<String>()
            )
        })?;
        let mut week: [Vec<(u16, u16)>; 7] = Default::default();
        for (day, text) in &node.open {
            let Some(i) = DAYS.iter().position(|(k, _)| k == &day.to_lowercase()) else {
                return Err(format!(
                    "open: `{}` is not a day (mon, tue, wed, thu, fri, sat, sun)",
                    day.chars().take(16).collect::<String>()
                ));
            };
            week[i] = ranges(day, text)?;
        }
        if node.holidays.len() > MAX_HOLIDAYS {
            return Err(format!("at most {MAX_HOLIDAYS} holidays"));
        }
        let holidays = node
            .holidays
            .iter()
            .map(|d| {
                d.trim().parse::<Date>().map_err(|_| {
                    format!(
                        "holidays: `{}` is not a date like 2026-12-25",
                        d.chars().take(32).collect::<String>()
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Hours { tz, week, holidays })
    }

    /// Whether the business is open at `now`.
    pub fn open_at(&self, now: Timestamp) -> bool {
        let local = now.to_zoned_datetime(self.tz.clone());
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let day = local.weekday().to_monday_zero_offset() as usize;
        let t = local.time();
        let minute = t.hour() as u16 * 60 + t.minute() as u16;
        self.week
            .get(day)
            .is_some_and(|r| r.iter().any(|(from, to)| (*from..*to).contains(&minute)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(open: &[(&str, &str)], holidays: &[&str]) -> HoursNode {
        HoursNode {
            time_zone: "America/New_York".into(),
            open: open
                .iter()
                .map(|(d, r)| (d.to_string(), r.to_string()))
                .collect::<BTreeMap<_, _>>(),
            holidays: holidays.iter().map(|h| h.to_string()).collect(),
            open_next: "open".into(),
            closed_next: "closed".into(),
        }
    }

    fn at(utc: &str) -> Timestamp {
        utc.parse().unwrap()
    }

    #[test]
    fn open_in_the_time_zone_of_the_business() {
        let h = Hours::parse(&node(
            &[("mon", "09:00-12:00, 13:00-17:30"), ("sat", "10:00-14:00")],
            &["2026-12-28"],
        ))
        .unwrap();
        // Monday 2026-12-21, New York is UTC-5 in winter.
        assert!(!h.open_at(at("2026-12-21T13:59:00Z")), "08:59 local");
        assert!(h.open_at(at("2026-12-21T14:00:00Z")), "09:00 local");
        assert!(!h.open_at(at("2026-12-21T17:30:00Z")), "12:30 local, lunch");
        assert!(h.open_at(at("2026-12-21T22:29:00Z")), "17:29 local");
        assert!(
            !h.open_at(at("2026-12-21T22:30:00Z")),
            "17:30 local, closed"
        );
        // Tuesday is not listed: closed all day.
        assert!(!h.open_at(at("2026-12-22T15:00:00Z")));
        // Saturday 10:00-14:00.
        assert!(h.open_at(at("2026-12-26T15:00:00Z")));
        // A holiday Monday.
        assert!(!h.open_at(at("2026-12-28T15:00:00Z")));
        // Summer time: UTC-4, so 13:30Z on Monday 2026-06-01 is 09:30 local.
        assert!(h.open_at(at("2026-06-01T13:30:00Z")));
        // Monday 01:00 UTC is still Sunday evening in New York.
        assert!(!h.open_at(at("2026-12-22T01:00:00Z")));
    }

    #[test]
    fn a_whole_day() {
        let h = Hours::parse(&node(&[("wed", "00:00-24:00")], &[])).unwrap();
        assert!(h.open_at(at("2026-12-23T05:00:00Z")), "00:00 local");
        assert!(h.open_at(at("2026-12-24T04:59:00Z")), "23:59 local");
        assert!(!h.open_at(at("2026-12-24T05:00:00Z")), "thursday");
    }

    #[test]
    fn bad_hours_are_named() {
        let cases = [
            (
                node(&[("mon", "9-17")], &[]),
                "open.mon: `9-17` is not a range",
            ),
            (node(&[("mon", "17:00-09:00")], &[]), "is not a range"),
            (
                node(&[("funday", "09:00-10:00")], &[]),
                "`funday` is not a day",
            ),
            (node(&[], &["2026-13-01"]), "holidays: `2026-13-01`"),
        ];
        for (n, want) in cases {
            let err = Hours::parse(&n).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        let mut n = node(&[], &[]);
        n.time_zone = "Mars/Olympus".into();
        assert!(Hours::parse(&n)
            .unwrap_err()
            .contains("not a known time zone"));
    }
}
