//! Crontab strings: `"*/15 9-17 * * mon-fri"`.
//!
//! * 5 fields: `minute hour day-of-month month day-of-week`;
//!   6 fields: `second` first; 7 fields: `second` first and `year` (1970-2099) last.
//! * Per field: `*`, numbers, names (`jan`..`dec`, `sun`..`sat`, any case),
//!   lists `a,b`, ranges `a-b`, steps `*/n`, `a/n` (from `a` to the field's
//!   maximum), `a-b/n`. A range whose start is above its end wraps around
//!   (`fri-mon`, `22-2`), as croniter does. Steps larger than the field are
//!   allowed (`*/90` in minutes means minute 0), as in Vixie cron.
//! * Day of week: 0 and 7 are Sunday. `5L`/`FRIL` = last Friday of the month,
//!   `5#3`/`FRI#3` = third Friday. Day of month: `L` = last day, `L-3` = three
//!   days before the last day. `?` is accepted as `*` in both day fields.
//! * Vixie day rule: when both day-of-month and day-of-week are restricted
//!   (neither is `*` nor `?`), a day matches if *either* matches; otherwise both
//!   must match.
//! * Nicknames: `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.

use super::calendar::{ALL_WEEKS, Calendar, DayCombine, DaySet, NTH_LAST, YearRange};
use super::error::{TriggerError, suggest};
use super::values::{FieldRange, expand};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
/// Crontab numbering: 0 = Sunday.
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const SECOND: FieldRange = FieldRange::new("second", 0, 59);
const MINUTE: FieldRange = FieldRange::new("minute", 0, 59);
const HOUR: FieldRange = FieldRange::new("hour", 0, 23);
const DOM: FieldRange = FieldRange::new("day_of_month", 1, 31);
const MONTH: FieldRange = FieldRange::new("month", 1, 12).with_names(&MONTHS, 1);
const DOW: FieldRange = FieldRange::new("day_of_week", 0, 7).with_names(&WEEKDAYS, 0);
const YEAR: FieldRange = FieldRange::new("year", 1970, 2099);

/// Parses a crontab string into a calendar.
pub(crate) fn parse(expr: &str) -> Result<Calendar, TriggerError> {
    let trimmed = expr.trim();
    let expanded;
    let text = if trimmed.starts_with('@') {
        let lower = trimmed.to_ascii_lowercase();
        expanded = NICKNAMES
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, e)| *e)
            .ok_or_else(|| TriggerError::UnknownNickname {
                name: trimmed.to_string(),
                suggestion: suggest(trimmed, NICKNAMES.iter().map(|(n, _)| *n)),
            })?;
        expanded
    } else {
        trimmed
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let (second, rest, year) = match parts.len() {
        5 => ("0", &parts[..], None),
        6 => (parts[0], &parts[1..], None),
        7 => (parts[0], &parts[1..6], Some(parts[6])),
        found => return Err(TriggerError::FieldCount { found }),
    };
    let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
    let dom_set = parse_dom(dom)?;
    let dow_set = parse_dow(dow)?;
    let combine = if dom_set.is_some() && dow_set.is_some() {
        DayCombine::Or
    } else {
        DayCombine::And
    };
    Ok(Calendar {
        seconds: simple_field(second, &SECOND)?,
        minutes: simple_field(minute, &MINUTE)?,
        hours: bits32(simple_field(hour, &HOUR)?),
        months: simple_field(month, &MONTH)? as u16,
        dom: dom_set,
        dow: dow_set,
        combine,
        weeks: ALL_WEEKS,
        years: year.map(parse_years).transpose()?.flatten(),
        never: false,
        hour_wildcard: hour.starts_with('*'),
    }
    .seal())
}

fn bits32(bits: u64) -> u32 {
    (bits & u64::from(u32::MAX)) as u32
}

fn split_list<'a>(text: &'a str, field: &FieldRange) -> Result<Vec<&'a str>, TriggerError> {
    let items: Vec<&str> = text.split(',').collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(TriggerError::invalid(
            field.name,
            format!("empty item in list \"{text}\""),
        ));
    }
    Ok(items)
}

/// A plain numeric/named field as a bitset of values.
fn simple_field(text: &str, field: &FieldRange) -> Result<u64, TriggerError> {
    if text == "?" {
        return Err(TriggerError::invalid(
            field.name,
            "\"?\" is only allowed in day_of_month and day_of_week",
        ));
    }
    let mut bits = 0u64;
    for item in split_list(text, field)? {
        bits |= parse_item(item, field)?;
    }
    Ok(bits)
}

/// One list item: `*`, `*/n`, `a`, `a/n`, `a-b`, `a-b/n` (wrapping if a > b).
fn parse_item(item: &str, field: &FieldRange) -> Result<u64, TriggerError> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(parse_step(step, field)?)),
        None => (item, None),
    };
    let (first, last) = if base == "*" {
        (field.min, field.max)
    } else if let Some((a, b)) = base.split_once('-') {
        (field.value(a)?, field.value(b)?)
    } else {
        let a = field.value(base)?;
        (a, if step.is_some() { field.max } else { a })
    };
    let mut bits = 0u64;
    for v in expand(first, last, step.unwrap_or(1), field) {
        bits |= 1 << v;
    }
    Ok(bits)
}

fn parse_step(text: &str, field: &FieldRange) -> Result<u32, TriggerError> {
    match text.parse::<u32>() {
        Ok(0) | Err(_) => Err(TriggerError::invalid(
            field.name,
            format!("invalid step \"{text}\", expected a whole number of at least 1"),
        )),
        Ok(n) => Ok(n),
    }
}

fn is_star(text: &str) -> bool {
    text == "*" || text == "?"
}

fn parse_dom(text: &str) -> Result<Option<DaySet>, TriggerError> {
    if is_star(text) {
        return Ok(None);
    }
    let mut set = DaySet::default();
    for item in split_list(text, &DOM)? {
        let upper = item.to_ascii_uppercase();
        if upper == "L" {
            set.last |= 1;
        } else if let Some(n) = upper.strip_prefix("L-") {
            let n = DOM.number(n).filter(|n| *n <= 30).ok_or_else(|| {
                TriggerError::invalid(
                    DOM.name,
                    format!("invalid \"{item}\", expected L-n with n from 0 to 30"),
                )
            })?;
            set.last |= 1 << n;
        } else if upper.contains('W') {
            return Err(TriggerError::invalid(
                DOM.name,
                format!("\"{item}\": the nearest-weekday (W) syntax is not supported"),
            ));
        } else {
            set.days |= bits32(parse_item(item, &DOM)?);
        }
    }
    Ok(Some(set))
}

/// Crontab weekday (0 or 7 = Sunday) to internal (0 = Monday).
fn to_monday_based(v: u32) -> u32 {
    (v + 6) % 7
}

fn parse_dow(text: &str) -> Result<Option<DaySet>, TriggerError> {
    if is_star(text) {
        return Ok(None);
    }
    let mut set = DaySet::default();
    for item in split_list(text, &DOW)? {
        if let Some((day, nth)) = item.split_once('#') {
            let w = to_monday_based(DOW.value(day)?);
            let k = DOW
                .number(nth)
                .filter(|k| (1..=5).contains(k))
                .ok_or_else(|| {
                    TriggerError::invalid(
                        DOW.name,
                        format!("invalid \"{item}\", expected weekday#n with n from 1 to 5"),
                    )
                })?;
            set.nth[w as usize] |= 1 << (k - 1);
        } else if item.len() > 1 && item.to_ascii_uppercase().ends_with('L') {
            let w = to_monday_based(DOW.value(&item[..item.len() - 1])?);
            set.nth[w as usize] |= NTH_LAST;
        } else if item.eq_ignore_ascii_case("L") {
            return Err(TriggerError::invalid(
                DOW.name,
                "\"L\" needs a weekday, e.g. 5L or FRIL for the last friday",
            ));
        } else {
            let bits = parse_item(item, &DOW)?;
            for v in 0..=7 {
                if bits & (1 << v) != 0 {
                    set.weekdays |= 1 << to_monday_based(v);
                }
            }
        }
    }
    Ok(Some(set))
}

fn parse_years(text: &str) -> Result<Option<Box<[YearRange]>>, TriggerError> {
    if text == "*" {
        return Ok(None);
    }
    let mut ranges = Vec::new();
    for item in split_list(text, &YEAR)? {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, parse_step(step, &YEAR)?),
            None => (item, 1),
        };
        let (first, last) = if base == "*" {
            (YEAR.min, YEAR.max)
        } else if let Some((a, b)) = base.split_once('-') {
            (YEAR.value(a)?, YEAR.value(b)?)
        } else {
            let a = YEAR.value(base)?;
            (a, if item.contains('/') { YEAR.max } else { a })
        };
        if first > last {
            return Err(TriggerError::invalid(
                YEAR.name,
                format!("range \"{base}\" goes backwards"),
            ));
        }
        ranges.push(YearRange {
            first: first as u16,
            last: last as u16,
            step: step.min(u32::from(u16::MAX)) as u16,
        });
    }
    Ok(Some(ranges.into_boxed_slice()))
}
