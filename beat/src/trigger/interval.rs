//! Fixed-interval triggers and duration strings such as `"1h30m"`.
//!
//! An interval trigger fires at `anchor + k * period` for `k = 0, 1, 2, ...`.
//! The period is *elapsed* time (UTC arithmetic): `every = "1d"` across a DST
//! change keeps 24 real hours between fires, so the wall-clock time shifts by an
//! hour. The anchor is `start_date` when the spec has one, else the `anchor`
//! passed to [`super::TriggerSpec::compile_with_anchor`] (e.g. the entry's
//! creation time), else the Unix epoch, which aligns fires to multiples of the
//! period since 1970-01-01T00:00:00Z (`"1h"` fires on every UTC hour, `"1w"` on
//! Thursdays 00:00 UTC).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::{TriggerError, suggest};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Unit names and their length in nanoseconds; short forms first so that
/// "did you mean" prefers them.
const UNITS: [(&str, u128); 27] = [
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
    ("w", 604_800 * NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("msec", 1_000_000),
    ("millis", 1_000_000),
    ("millisecond", 1_000_000),
    ("milliseconds", 1_000_000),
    ("sec", NANOS_PER_SEC),
    ("secs", NANOS_PER_SEC),
    ("second", NANOS_PER_SEC),
    ("seconds", NANOS_PER_SEC),
    ("min", 60 * NANOS_PER_SEC),
    ("mins", 60 * NANOS_PER_SEC),
    ("minute", 60 * NANOS_PER_SEC),
    ("minutes", 60 * NANOS_PER_SEC),
    ("hr", 3600 * NANOS_PER_SEC),
    ("hrs", 3600 * NANOS_PER_SEC),
    ("hour", 3600 * NANOS_PER_SEC),
    ("hours", 3600 * NANOS_PER_SEC),
    ("day", 86_400 * NANOS_PER_SEC),
    ("days", 86_400 * NANOS_PER_SEC),
    ("wk", 604_800 * NANOS_PER_SEC),
    ("week", 604_800 * NANOS_PER_SEC),
    ("weeks", 604_800 * NANOS_PER_SEC),
];

/// Parses a duration such as `"1h30m"`, `"90s"`, `"2d"`, `"1w"`, `"500ms"`,
/// `"1.5h"` or `"1h 30m"`.
///
/// A duration is one or more `<number><unit>` parts, optionally separated by
/// spaces; numbers may have a decimal fraction. Units: `ms`, `s`, `m`, `h`,
/// `d`, `w` and their long forms (`sec`, `min`, `hours`, `days`, `week`, ...).
/// A bare number without a unit is an error, so `"90"` is never silently
/// taken as seconds or minutes.
///
/// ```
/// use std::time::Duration;
/// use celeriac_beat::trigger::parse_duration;
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert!(parse_duration("90").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, TriggerError> {
    parse_duration_for("duration", s)
}

/// [`parse_duration`], reporting errors under the given key (e.g. `every`).
pub(crate) fn parse_duration_for(field: &'static str, s: &str) -> Result<Duration, TriggerError> {
    let fail = |reason: String| TriggerError::InvalidDuration {
        field,
        input: s.to_string(),
        reason,
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(fail("empty duration".into()));
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let here = rest;
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        if number.is_empty() {
            return Err(fail(format!("expected a number at \"{here}\"")));
        }
        if unit.is_empty() {
            return Err(fail(format!(
                "missing unit after \"{number}\" (use ms, s, m, h, d or w)"
            )));
        }
        let lower = unit.to_ascii_lowercase();
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == lower)
            .map(|(_, scale)| *scale)
            .ok_or_else(|| {
                let hint = suggest(unit, UNITS.iter().map(|(n, _)| *n))
                    .map(|s| format!(", did you mean \"{s}\"?"))
                    .unwrap_or_default();
                fail(format!("unknown unit \"{unit}\"{hint}"))
            })?;
        let part =
            scaled(number, scale).ok_or_else(|| fail(format!("invalid number \"{number}\"")))?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= u128::from(u64::MAX))
            .ok_or_else(|| fail("duration is too long".into()))?;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// `number * scale` exactly, for a decimal `number` such as `1.5`.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(scale)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let denominator = 10u128.pow(frac.len() as u32);
        value = value.checked_add(digits.checked_mul(scale)? / denominator)?;
    }
    Some(value)
}

/// The period in nanoseconds from either the unit fields (weeks, days, hours,
/// minutes, seconds) or `every`, not both.
pub(crate) fn period(units: [Option<u64>; 5], every: Option<&str>) -> Result<u64, TriggerError> {
    const SCALES: [u128; 5] = [604_800, 86_400, 3600, 60, 1];
    let has_units = units.iter().any(Option::is_some);
    let nanos = match (every, has_units) {
        (Some(_), true) => {
            return Err(TriggerError::invalid(
                "every",
                "give either every or weeks/days/hours/minutes/seconds, not both",
            ));
        }
        (Some(text), false) => parse_duration_for("every", text)?.as_nanos(),
        (None, true) => units
            .iter()
            .zip(SCALES)
            .map(|(v, scale)| u128::from(v.unwrap_or(0)) * scale * NANOS_PER_SEC)
            .sum(),
        (None, false) => {
            return Err(TriggerError::invalid(
                "every",
                "an interval needs every or one of weeks, days, hours, minutes, seconds",
            ));
        }
    };
    match u64::try_from(nanos) {
        Ok(0) => Err(TriggerError::invalid(
            "every",
            "interval must be longer than zero",
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(TriggerError::invalid("every", "interval is too long")),
    }
}

/// Validates `jitter_seconds`.
pub(crate) fn jitter(seconds: Option<f64>) -> Result<Option<Duration>, TriggerError> {
    match seconds {
        None => Ok(None),
        Some(j) if j.is_finite() && (0.0..1e12).contains(&j) => {
            Ok(Some(Duration::from_secs_f64(j)))
        }
        Some(j) => Err(TriggerError::invalid(
            "jitter_seconds",
            format!("{j} is not a number of seconds of at least 0"),
        )),
    }
}

/// A compiled interval: fires at `anchor + k * period`, `k >= 0`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Interval {
    pub(crate) anchor: DateTime<Utc>,
    /// Nanoseconds, at least 1.
    pub(crate) period: u64,
}

impl Interval {
    /// The first fire strictly after `after`.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let anchor = nanos(self.anchor);
        let now = nanos(after);
        let period = i128::from(self.period);
        let k = if now < anchor {
            0
        } else {
            (now - anchor) / period + 1
        };
        let t = anchor.checked_add(k.checked_mul(period)?)?;
        let secs = i64::try_from(t.div_euclid(NANOS_PER_SEC as i128)).ok()?;
        let sub = t.rem_euclid(NANOS_PER_SEC as i128) as u32;
        DateTime::from_timestamp(secs, sub)
    }
}

fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * NANOS_PER_SEC as i128 + i128::from(t.timestamp_subsec_nanos())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("90s"), Duration::from_secs(90));
        assert_eq!(d("2d"), Duration::from_secs(172_800));
        assert_eq!(d("1w"), Duration::from_secs(604_800));
        assert_eq!(d("2 weeks"), Duration::from_secs(1_209_600));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d(" 1h 30m 15s "), Duration::from_secs(5415));
        assert_eq!(d("1H"), Duration::from_secs(3600));
        assert_eq!(d("0s"), Duration::ZERO);
    }

    #[test]
    fn duration_errors() {
        let e = |s| parse_duration(s).unwrap_err().to_string();
        assert_eq!(
            e("90"),
            "duration: invalid duration \"90\": missing unit after \"90\" (use ms, s, m, h, d or w)"
        );
        assert_eq!(
            e("1hr30mn"),
            "duration: invalid duration \"1hr30mn\": unknown unit \"mn\", did you mean \"m\"?"
        );
        assert!(e("").contains("empty duration"));
        assert!(e("h").contains("expected a number at \"h\""));
        assert!(e("1.2.3s").contains("invalid number"));
        assert!(e("99999999999999w").contains("too long"));
        assert!(e("-5s").contains("expected a number"));
    }

    #[test]
    fn interval_steps() {
        let anchor = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let i = Interval {
            anchor,
            period: 90 * 1_000_000_000,
        };
        let before = anchor - chrono::TimeDelta::hours(1);
        assert_eq!(i.next_after(before), Some(anchor));
        assert_eq!(
            i.next_after(anchor),
            Some(anchor + chrono::TimeDelta::seconds(90))
        );
        let mid = anchor + chrono::TimeDelta::seconds(100);
        assert_eq!(
            i.next_after(mid),
            Some(anchor + chrono::TimeDelta::seconds(180))
        );
    }
}
