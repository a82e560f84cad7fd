//! Reading exclusion dates from an iCalendar (`.ics`, RFC 5545) file, with
//! the `icalendar` crate's parser.
//!
//! Every `VEVENT` gives the local dates it covers:
//!
//! * an all-day event (`DTSTART;VALUE=DATE:20261225`) covers its start date up
//!   to, not including, its `DTEND` date (RFC 5545: the end is exclusive);
//!   with no `DTEND`, one day;
//! * a timed event covers the dates of its own wall clock (the `TZID` or
//!   floating time as written; UTC for a time ending in `Z`) from its start to
//!   its end, an end at exactly midnight not counting the day it starts;
//! * `RRULE:FREQ=YEARLY` (optionally with `INTERVAL`, `COUNT` or `UNTIL`) is
//!   expanded, up to 2099 when unbounded; a 29 February start recurs only in
//!   leap years. Any other rule, and `EXDATE`, cannot be expanded here: the
//!   first occurrence alone is imported and a warning says so.
//!
//! The event's `SUMMARY` becomes the date's label.

use chrono::{Datelike, Months, NaiveDate, NaiveTime};
use icalendar::{CalendarComponent, CalendarDateTime, Component, DatePerhapsTime, Event};

use crate::trigger::DateRange;

/// The last year an unbounded yearly rule is expanded to.
pub const YEARLY_HORIZON: i32 = 2099;

/// What an `.ics` file holds, as exclusion dates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IcsDates {
    /// Each event's dates, with its `SUMMARY` as label.
    pub dates: Vec<(DateRange, Option<String>)>,
    /// Events not (fully) imported, one line each.
    pub warnings: Vec<String>,
}

/// An `.ics` file that cannot be read as a calendar.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not an iCalendar file: {0}")]
pub struct IcsError(String);

/// Reads the events of iCalendar text as exclusion dates.
pub fn read(text: &str) -> Result<IcsDates, IcsError> {
    let calendar: icalendar::Calendar = text.parse().map_err(IcsError)?;
    let mut out = IcsDates::default();
    let mut events = 0usize;
    for component in &calendar.components {
        let CalendarComponent::Event(event) = component else {
            continue;
        };
        events += 1;
        read_event(event, &mut out);
    }
    if events == 0 && !text.contains("BEGIN:VCALENDAR") {
        return Err(IcsError("no BEGIN:VCALENDAR".into()));
    }
    Ok(out)
}

fn read_event(event: &Event, out: &mut IcsDates) {
    let label = event.get_summary().map(str::to_owned);
    let name = label
        .clone()
        .or_else(|| event.get_uid().map(str::to_owned))
        .unwrap_or_else(|| "an event".into());
    let Some(start) = event.get_start() else {
        out.warnings
            .push(format!("\"{name}\": no DTSTART, not imported"));
        return;
    };
    let Some(first) = covered(&start, event.get_end().as_ref()) else {
        out.warnings.push(format!(
            "\"{name}\": its dates cannot be read, not imported"
        ));
        return;
    };
    let rule = event.property_value("RRULE");
    let occurrences = match rule.map(|r| yearly(r, first)) {
        None => vec![first],
        Some(Some(all)) => all,
        Some(None) => {
            out.warnings.push(format!(
                "\"{name}\": RRULE {} is not supported \
                 (only FREQ=YEARLY with INTERVAL, COUNT or UNTIL); only {first} imported",
                rule.unwrap_or_default()
            ));
            vec![first]
        }
    };
    if rule.is_some() && event.property_value("EXDATE").is_some() {
        out.warnings.push(format!(
            "\"{name}\": EXDATE is ignored (every occurrence imported)"
        ));
    }
    out.dates
        .extend(occurrences.into_iter().map(|r| (r, label.clone())));
}

/// The dates an event covers, from its DTSTART and DTEND.
fn covered(start: &DatePerhapsTime, end: Option<&DatePerhapsTime>) -> Option<DateRange> {
    let from = local_date(start)?;
    let to = match (start, end) {
        (_, None) => from,
        // All-day: DTEND is the day after the last one.
        (DatePerhapsTime::Date(_), Some(end)) => local_date(end)?.pred_opt()?.max(from),
        (DatePerhapsTime::DateTime(_), Some(end)) => {
            let last = local_date(end)?;
            let at_midnight = local_time(end) == Some(NaiveTime::MIN);
            if at_midnight && last > from {
                last.pred_opt()?
            } else {
                last.max(from)
            }
        }
    };
    Some(DateRange { from, to })
}

fn local_date(value: &DatePerhapsTime) -> Option<NaiveDate> {
    Some(value.date_naive())
}

fn local_time(value: &DatePerhapsTime) -> Option<NaiveTime> {
    match value {
        DatePerhapsTime::Date(_) => None,
        DatePerhapsTime::DateTime(CalendarDateTime::Floating(t)) => Some(t.time()),
        DatePerhapsTime::DateTime(CalendarDateTime::Utc(t)) => Some(t.time()),
        DatePerhapsTime::DateTime(CalendarDateTime::WithTimezone { date_time, .. }) => {
            Some(date_time.time())
        }
    }
}

/// The occurrences of a `FREQ=YEARLY` rule, or `None` for any other rule.
fn yearly(rule: &str, first: DateRange) -> Option<Vec<DateRange>> {
    let mut interval = 1u32;
    let mut count: Option<usize> = None;
    let mut until: Option<NaiveDate> = None;
    let mut freq_yearly = false;
    for part in rule.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=')?;
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => freq_yearly = value.eq_ignore_ascii_case("YEARLY"),
            "INTERVAL" => interval = value.parse().ok().filter(|n| *n > 0)?,
            "COUNT" => count = Some(value.parse().ok()?),
            "UNTIL" => until = Some(NaiveDate::parse_from_str(value.get(..8)?, "%Y%m%d").ok()?),
            "WKST" => {}
            _ => return None,
        }
    }
    if !freq_yearly {
        return None;
    }
    let span = first.to - first.from;
    let last_year = until.map_or(YEARLY_HORIZON, |u| u.year());
    let mut out = Vec::new();
    let mut year = first.from.year();
    while year <= last_year && count.is_none_or(|c| out.len() < c) {
        let months = u32::try_from(year - first.from.year()).ok()? * 12;
        // `checked_add_months` clamps 29 February; RFC 5545 skips the year instead.
        if let Some(from) = first.from.checked_add_months(Months::new(months))
            && from.day() == first.from.day()
            && until.is_none_or(|u| from <= u)
        {
            out.push(DateRange {
                from,
                to: from + span,
            });
        }
        year += i32::try_from(interval).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ics(events: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{events}END:VCALENDAR\r\n")
    }

    fn dates(text: &str) -> Vec<String> {
        read(text)
            .expect("reads")
            .dates
            .iter()
            .map(|(r, _)| r.to_string())
            .collect()
    }

    #[test]
    fn all_day_multi_day_and_timed_events() {
        let text = ics(concat!(
            "BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:Christmas\r\n",
            "DTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261226\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:2\r\nSUMMARY:Shutdown\r\n",
            "DTSTART;VALUE=DATE:20261228\r\nDTEND;VALUE=DATE:20270101\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:3\r\nSUMMARY:Move\r\n",
            "DTSTART;TZID=Europe/Berlin:20260703T220000\r\n",
            "DTEND;TZID=Europe/Berlin:20260705T000000\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:4\r\nDTSTART;VALUE=DATE:20260101\r\nEND:VEVENT\r\n",
        ));
        assert_eq!(
            dates(&text),
            [
                "2026-12-25",
                "2026-12-28..2026-12-31",
                "2026-07-03..2026-07-04",
                "2026-01-01"
            ]
        );
        let read = read(&text).expect("reads");
        assert_eq!(read.dates[0].1.as_deref(), Some("Christmas"));
        assert!(read.warnings.is_empty());
    }

    #[test]
    fn yearly_rules_expand_and_others_warn() {
        let text = ics(concat!(
            "BEGIN:VEVENT\r\nUID:1\r\nSUMMARY:New Year\r\n",
            "DTSTART;VALUE=DATE:20260101\r\nRRULE:FREQ=YEARLY;COUNT=3\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:2\r\nSUMMARY:Leap\r\n",
            "DTSTART;VALUE=DATE:20240229\r\nRRULE:FREQ=YEARLY;UNTIL=20321231\r\nEND:VEVENT\r\n",
            "BEGIN:VEVENT\r\nUID:3\r\nSUMMARY:Standup\r\n",
            "DTSTART;VALUE=DATE:20260105\r\nRRULE:FREQ=WEEKLY\r\nEND:VEVENT\r\n",
        ));
        assert_eq!(
            dates(&text),
            [
                "2026-01-01",
                "2027-01-01",
                "2028-01-01",
                "2024-02-29",
                "2028-02-29",
                "2032-02-29",
                "2026-01-05"
            ]
        );
        let warnings = read(&text).expect("reads").warnings;
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("\"Standup\": RRULE FREQ=WEEKLY is not supported"));
        let forever = ics(concat!(
            "BEGIN:VEVENT\r\nUID:1\r\n",
            "DTSTART;VALUE=DATE:20261225\r\nRRULE:FREQ=YEARLY\r\nEND:VEVENT\r\n",
        ));
        let all = dates(&forever);
        assert_eq!(all.len(), 74);
        assert_eq!(all.last().map(String::as_str), Some("2099-12-25"));
    }

    #[test]
    fn rejects_what_is_not_a_calendar() {
        assert!(read("hello").is_err());
    }
}
