//! Turning wall-clock matches into instants, across daylight-saving changes.
//!
//! The rules, per [`DstRule`] (see the [module documentation](super) for
//! examples):
//!
//! * **Overlap** (clocks go back): a wall-clock time that happens twice
//!   matches at *both* instants under `repeat` (APScheduler 3.11, croniter 7)
//!   and for a wildcard-hour entry under `cron`; a fixed-hour entry under
//!   `cron` matches only the first (the instants of the second pass, `[at, at
//!   + overlap)`, are skipped).
//! * **Gap** (clocks go forward): under `repeat`, a wall-clock time that does
//!   not exist fires at the instant it would have had with the offset in force
//!   *before* the gap, i.e. shifted forward by the length of the gap (02:30 in
//!   a 02:00→03:00 gap fires at 03:30 new time), APScheduler's behaviour and
//!   RFC 5545's rule for nonexistent local times; two wall-clock times that
//!   land on the same instant fire once. Under `cron`, a fixed-hour entry with
//!   any matching time in the gap fires once at the instant of the jump
//!   (03:00), as cron does; a wildcard-hour entry skips them.
//!
//! The search walks the zone's offset segments. Inside a segment with offset
//! `o`, wall time and instants are a straight shift, so a calendar search from
//! `t + o` gives the segment's first match. chrono-tz does not expose its
//! transition table, so transitions are located by probing the offset (at most
//! one day apart, then bisecting); the tz database has no two transitions
//! less than a week apart since 1970. Long jumps (a yearly schedule) skip the
//! middle, because every instant more than 26 hours away from both ends has
//! its wall time inside the searched range (all UTC offsets lie within ±26h of
//! each other).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz};

use super::dst::DstRule;
use super::error::{TriggerError, suggest};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// Larger than any DST gap (Samoa skipped 24 hours in 2011) and than the
/// spread of all UTC offsets (-12h..+14h).
const MARGIN: i64 = 26 * HOUR;
/// Offset probes are never further apart than this.
const PROBE_STEP: i64 = DAY;
/// Safety net for the segment walk; real zones need a handful of iterations.
const MAX_STEPS: usize = 10_000;

/// Parses an IANA zone name (`None` means UTC).
pub(crate) fn parse_tz(name: Option<&str>) -> Result<Tz, TriggerError> {
    let Some(name) = name else {
        return Ok(Tz::UTC);
    };
    name.parse::<Tz>()
        .map_err(|_| TriggerError::UnknownTimezone {
            name: name.to_string(),
            suggestion: suggest(name, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())),
        })
}

/// The UTC offset (seconds) in force at instant `t` (seconds since the epoch).
pub(crate) fn offset_at(tz: Tz, t: i64) -> i64 {
    match DateTime::from_timestamp(t, 0) {
        Some(dt) => i64::from(
            tz.offset_from_utc_datetime(&dt.naive_utc())
                .fix()
                .local_minus_utc(),
        ),
        None => 0,
    }
}

/// The first transition in `(from, until]`, as (instant, new offset), given
/// that the offset at `from` is `offset`. Probes at most [`PROBE_STEP`] apart.
fn first_transition(tz: Tz, from: i64, offset: i64, until: i64) -> Option<(i64, i64)> {
    let mut lo = from;
    while lo < until {
        let hi = (lo + PROBE_STEP).min(until);
        if offset_at(tz, hi) != offset {
            // Bisect (lo, hi]: offset(lo) == offset, offset(hi) != offset.
            let mut hi = hi;
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid) == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some((hi, offset_at(tz, hi)));
        }
        lo = hi;
    }
    None
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first instant `>= s` (seconds) whose wall-clock time in `tz` matches,
/// where `next_wall(w)` returns the first matching wall time `>= w` (local
/// seconds). Applies the overlap and gap rules of this module for `rule`.
pub(crate) fn next_instant(
    tz: Tz,
    rule: DstRule,
    s: i64,
    next_wall: impl Fn(i64) -> Option<i64>,
) -> Option<i64> {
    if tz == Tz::UTC {
        return next_wall(s);
    }
    let mut t = s - MARGIN;
    let mut offset = offset_at(tz, t);
    // Best candidate coming from a gap's nonexistent wall times.
    let mut gap_best: Option<i64> = None;
    // End of the second pass of the last overlap (fixed-hour rule only):
    // instants before it whose wall time was already shown do not fire.
    let mut second_pass_end = i64::MIN;
    for _ in 0..MAX_STEPS {
        let from = t.max(s).max(second_pass_end);
        let candidate = next_wall(from + offset).map(|w| w - offset);
        let best = min_opt(candidate, gap_best);
        let horizon = best.unwrap_or(from + MARGIN);
        let window_end = if horizon - t <= 3 * DAY {
            horizon
        } else {
            from + MARGIN
        };
        let transition = first_transition(tz, t, offset, window_end);
        let (at, new_offset) = match (transition, best) {
            (Some(tr), _) => tr,
            (None, best) if window_end == horizon => return best,
            (None, Some(far)) => {
                // No transition near the start; nothing can match strictly
                // between the windows. Accept `far` if its neighbourhood has
                // no transition either, else restart the walk just before it.
                if offset_at(tz, far - MARGIN) == offset && offset_at(tz, far) == offset {
                    return Some(far);
                }
                t = far - 2 * MARGIN;
                offset = offset_at(tz, t);
                continue;
            }
            (None, None) => return None,
        };
        if new_offset > offset {
            // Gap: wall times [at + offset, at + new_offset) do not exist.
            gap_best = min_opt(
                gap_best,
                gap_fire(rule, s, at, offset, new_offset, &next_wall),
            );
        } else if rule == DstRule::FixedHour {
            // Overlap: wall times [at + new_offset, at + offset) come again
            // during [at, at + offset - new_offset); the first pass had them.
            second_pass_end = at + (offset - new_offset);
        }
        t = at;
        offset = new_offset;
    }
    None
}

/// The earliest instant `>= s` at which `rule` fires nonexistent wall times
/// `[at + before, at + after)` of the gap at instant `at`, if any match.
fn gap_fire(
    rule: DstRule,
    s: i64,
    at: i64,
    before: i64,
    after: i64,
    next_wall: impl Fn(i64) -> Option<i64>,
) -> Option<i64> {
    match rule {
        // Shifted forward by the gap: `wall - before`, in [at, at + gap).
        DstRule::Repeat => next_wall(at.max(s) + before)
            .filter(|w| *w < at + after)
            .map(|w| w - before),
        // Once, at the jump, however many wall times were skipped.
        DstRule::FixedHour if at >= s => next_wall(at + before)
            .filter(|w| *w < at + after)
            .map(|_| at),
        DstRule::FixedHour | DstRule::WildcardHour => None,
    }
}

/// The instant of a naive wall-clock time in `tz`: the earlier instant if it
/// is ambiguous, and if it falls in a gap the instant it would have with the
/// offset in force before the gap (the same rules as schedules).
pub(crate) fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(dt) => Some(dt.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        chrono::LocalResult::None => {
            let before = GapInfo::new(&local, &tz)?.begin?.1;
            let offset = i64::from(before.fix().local_minus_utc());
            DateTime::from_timestamp(local.and_utc().timestamp() - offset, 0)
        }
    }
}

/// Parses a bound: RFC 3339, or a naive date-time/date in `zone`.
pub(crate) fn parse_instant(
    field: &'static str,
    text: &str,
    zone: Tz,
) -> Result<DateTime<Utc>, TriggerError> {
    let text = text.trim();
    let mut normalized = text.to_string();
    if normalized.len() > 10 && normalized.as_bytes()[10] == b' ' {
        normalized.replace_range(10..11, "T");
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok(t.to_utc());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&normalized, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(&normalized, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN))
        });
    naive
        .and_then(|n| resolve_local(zone, n))
        .ok_or_else(|| TriggerError::InvalidDateTime {
            field,
            value: text.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn finds_berlin_transitions() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let from = ts("2024-03-30T12:00:00Z");
        let (at, off) = first_transition(tz, from, 3600, from + 3 * DAY).unwrap();
        assert_eq!(at, ts("2024-03-31T01:00:00Z"));
        assert_eq!(off, 7200);
    }

    #[test]
    fn resolves_gap_and_overlap() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let gap = NaiveDateTime::parse_from_str("2024-03-31 02:30", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            resolve_local(tz, gap).unwrap().timestamp(),
            ts("2024-03-31T01:30:00Z")
        );
        let overlap = NaiveDateTime::parse_from_str("2024-10-27 02:30", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            resolve_local(tz, overlap).unwrap().timestamp(),
            ts("2024-10-27T00:30:00Z")
        );
    }

    #[test]
    fn unknown_zone_suggests() {
        let err = parse_tz(Some("Europe/Berln")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "timezone: unknown time zone \"Europe/Berln\", did you mean \"Europe/Berlin\"?"
        );
    }
}
