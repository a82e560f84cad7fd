//! APScheduler-style calendar fields (APScheduler 3.x `CronTrigger` rules).
//!
//! Fields, most significant first: `year` (1970-9999), `month` (1-12 or
//! `jan`..`dec`), `day` (1-31), `week` (ISO week 1-53), `day_of_week` (0-6 =
//! Monday-Sunday, or `mon`..`sun`), `hour`, `minute`, `second`.
//!
//! * A field left out takes `*` if it is more significant than the least
//!   significant field given, and its minimum otherwise (`month`→1, `day`→1,
//!   `hour`/`minute`/`second`→0), except `week` and `day_of_week`, which always
//!   default to `*`. So `{hour = "2"}` fires daily at 02:00:00 and
//!   `{day_of_week = "mon"}` every Monday at 00:00:00. No field at all means
//!   every second.
//! * Expressions (comma lists allowed): `*`, `*/a` (every `a` from the field's
//!   minimum: `year = "*/2"` is 1970, 1972, ...), `a`, `a-b`, `a/b` (from `a`
//!   up to the maximum every `b`), `a-b/c`, month and weekday names and name
//!   ranges (`mon-fri`), and in `day` also `1st fri`..`5th fri`, `last fri`
//!   and `last` (last day of the month).
//! * `day`, `week` and `day_of_week` must all match (AND), unlike crontab strings.
//! * Validation follows APScheduler: a step must be at least 1 and not larger
//!   than the span it steps over, ranges must not go backwards. Unlike
//!   APScheduler, trailing text after a name (`"mon-fri/2"`) is an error rather
//!   than silently ignored.

use super::calendar::{ALL_WEEKS, Calendar, DayCombine, DaySet, NTH_LAST, YearRange};
use super::error::{TriggerError, suggest};
use super::values::FieldRange;

/// Field names, most significant first.
pub(crate) const FIELD_NAMES: [&str; 8] = [
    "year",
    "month",
    "day",
    "week",
    "day_of_week",
    "hour",
    "minute",
    "second",
];
/// Position of `hour` in [`FIELD_NAMES`].
const HOUR_INDEX: usize = 5;
/// Value used for a field left out that is less significant than every field given.
const DEFAULTS: [&str; 8] = ["*", "1", "1", "*", "*", "0", "0", "0"];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
/// APScheduler numbering: 0 = Monday.
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const POSITIONS: [&str; 6] = ["1st", "2nd", "3rd", "4th", "5th", "last"];

const RANGES: [FieldRange; 8] = [
    FieldRange::new("year", 1970, 9999),
    FieldRange::new("month", 1, 12).with_names(&MONTHS, 1),
    FieldRange::new("day", 1, 31),
    FieldRange::new("week", 1, 53),
    FieldRange::new("day_of_week", 0, 6).with_names(&WEEKDAYS, 0),
    FieldRange::new("hour", 0, 23),
    FieldRange::new("minute", 0, 59),
    FieldRange::new("second", 0, 59),
];

/// One parsed list item.
enum Item {
    /// `first..=last` every `step`.
    Range { first: u32, last: u32, step: u32 },
    /// `last` in `day`.
    LastDay,
    /// `3rd fri` (position 0..=4) or `last fri` (position 5) in `day`; weekday 0 = Monday.
    Position { position: usize, weekday: u32 },
}

/// Builds a calendar from the eight optional field expressions, in
/// [`FIELD_NAMES`] order.
pub(crate) fn parse(given: [Option<&str>; 8]) -> Result<Calendar, TriggerError> {
    let last_given = given.iter().rposition(Option::is_some);
    let mut items: Vec<Option<Vec<Item>>> = Vec::with_capacity(8);
    let mut hour_wildcard = false;
    for (i, value) in given.iter().enumerate() {
        let text = match (value, last_given) {
            (Some(text), _) => *text,
            (None, Some(last)) if i > last => DEFAULTS[i],
            _ => "*",
        };
        if i == HOUR_INDEX {
            hour_wildcard = text.trim_start().starts_with('*');
        }
        items.push(parse_field(text, &RANGES[i])?);
    }
    let mut it = items.into_iter();
    let mut next = || it.next().flatten();
    let (year, month, day, week, dow) = (next(), next(), next(), next(), next());
    let (hour, minute, second) = (next(), next(), next());
    Ok(Calendar {
        seconds: bits(second.as_deref(), (1 << 60) - 1),
        minutes: bits(minute.as_deref(), (1 << 60) - 1),
        hours: bits(hour.as_deref(), (1 << 24) - 1) as u32,
        months: bits(month.as_deref(), 0b1_1111_1111_1110) as u16,
        dom: day.as_deref().map(day_set),
        dow: dow.as_deref().map(|items| DaySet {
            weekdays: bits(Some(items), 0) as u8,
            ..DaySet::default()
        }),
        combine: DayCombine::And,
        weeks: bits(week.as_deref(), ALL_WEEKS),
        years: year.map(|items| year_ranges(&items)),
        never: false,
        hour_wildcard,
    }
    .seal())
}

/// Parses one field; `None` means the unrestricted `*`.
fn parse_field(text: &str, field: &FieldRange) -> Result<Option<Vec<Item>>, TriggerError> {
    let text = text.trim();
    if text == "*" {
        return Ok(None);
    }
    text.split(',')
        .map(|item| parse_item(item.trim(), field))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_item(item: &str, field: &FieldRange) -> Result<Item, TriggerError> {
    if item.is_empty() {
        return Err(TriggerError::invalid(field.name, "empty item in list"));
    }
    if field.name == "day" {
        if item.eq_ignore_ascii_case("last") {
            return Ok(Item::LastDay);
        }
        if let Some((position, weekday)) = item.split_once(' ') {
            return parse_position(item, position, weekday.trim_start());
        }
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(parse_step(step, field)?)),
        None => (item, None),
    };
    let named = base.bytes().any(|b| b.is_ascii_alphabetic());
    if named && step.is_some() {
        return Err(TriggerError::invalid(
            field.name,
            format!("\"{item}\": a step cannot follow a name"),
        ));
    }
    let (first, last) = if base == "*" {
        (field.min, field.max)
    } else if let Some((a, b)) = base.split_once('-') {
        (value(a, field, named)?, value(b, field, named)?)
    } else {
        let a = value(base, field, named)?;
        (a, if step.is_some() { field.max } else { a })
    };
    if first > last {
        return Err(TriggerError::invalid(
            field.name,
            format!("range \"{base}\" goes backwards"),
        ));
    }
    if let Some(step) = step.filter(|s| *s > last - first) {
        return Err(TriggerError::invalid(
            field.name,
            format!(
                "step {step} is larger than the span {} of \"{base}\"",
                last - first
            ),
        ));
    }
    Ok(Item::Range {
        first,
        last,
        step: step.unwrap_or(1),
    })
}

/// A number, or (in month/day_of_week) a name; names and numbers don't mix in a range.
fn value(text: &str, field: &FieldRange, named: bool) -> Result<u32, TriggerError> {
    if named {
        return field.named(text).ok_or_else(|| field.unknown_name(text));
    }
    field.value(text)
}

fn parse_step(text: &str, field: &FieldRange) -> Result<u32, TriggerError> {
    match field.number(text) {
        Some(0) => Err(TriggerError::invalid(field.name, "step must be at least 1")),
        Some(n) => Ok(n),
        None => Err(TriggerError::invalid(
            field.name,
            format!("invalid step \"{text}\""),
        )),
    }
}

fn parse_position(item: &str, position: &str, weekday: &str) -> Result<Item, TriggerError> {
    let position = POSITIONS
        .iter()
        .position(|p| p.eq_ignore_ascii_case(position))
        .ok_or_else(|| {
            let known = FieldRange::new("day", 1, 31).with_names(&POSITIONS, 0);
            match known.unknown_name(position) {
                TriggerError::UnknownName {
                    suggestion: Some(s),
                    ..
                } => TriggerError::invalid(
                    "day",
                    format!("unknown position in \"{item}\", did you mean \"{s}\"?"),
                ),
                _ => TriggerError::invalid(
                    "day",
                    format!("invalid \"{item}\", expected e.g. \"3rd fri\" or \"last mon\""),
                ),
            }
        })?;
    let weekday = RANGES[4]
        .named(weekday)
        .ok_or_else(|| TriggerError::UnknownName {
            field: "day",
            name: weekday.to_string(),
            suggestion: suggest(weekday, WEEKDAYS),
        })?;
    Ok(Item::Position { position, weekday })
}

/// Bitset of plain ranges; `all` when the field is unrestricted.
fn bits(items: Option<&[Item]>, all: u64) -> u64 {
    let Some(items) = items else {
        return all;
    };
    let mut bits = 0u64;
    for item in items {
        if let Item::Range { first, last, step } = item {
            let mut v = *first;
            while v <= *last {
                bits |= 1 << v;
                v += step;
            }
        }
    }
    bits
}

fn day_set(items: &[Item]) -> DaySet {
    let mut set = DaySet {
        days: bits(Some(items), 0) as u32,
        ..DaySet::default()
    };
    for item in items {
        match item {
            Item::LastDay => set.last |= 1,
            Item::Position { position, weekday } => {
                set.nth[*weekday as usize] |= if *position == 5 {
                    NTH_LAST
                } else {
                    1 << position
                };
            }
            Item::Range { .. } => {}
        }
    }
    set
}

fn year_ranges(items: &[Item]) -> Box<[YearRange]> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Range { first, last, step } => Some(YearRange {
                first: *first as u16,
                last: *last as u16,
                step: (*step).min(u32::from(u16::MAX)) as u16,
            }),
            _ => None,
        })
        .collect()
}
