//! Schedule triggers: when does an entry fire next?
//!
//! A [`TriggerSpec`] (what TOML files and the database hold) compiles into a
//! [`Trigger`], whose [`Schedule::next_after`] gives the first fire time
//! strictly after an instant. Everything here is pure computation: no clock,
//! no I/O, no randomness (jitter is applied by the caller, see
//! [`Trigger::jitter`]).
//!
//! The cron and fields parsers are written here on purpose: they follow
//! croniter's and APScheduler's dialects exactly (Vixie's day-of-month /
//! day-of-week rule, `L`, `#`, APScheduler's field defaults and Monday-first
//! weekdays), which the `cron` crate's own dialect does not.
//!
//! # Trigger types
//!
//! * `cron` — crontab strings, checked against croniter 7.0.0.
//! * `fields` — APScheduler 3.x `CronTrigger` fields, checked against
//!   APScheduler 3.11.3.
//! * `interval` — every fixed period of elapsed time from an anchor
//!   ([`parse_duration`] for `every = "1h30m"`).
//! * `date` — once, at `run_at`.
//!
//! # Crontab strings
//!
//! * 5 fields `minute hour day-of-month month day-of-week`; 6 fields put
//!   `second` first; 7 fields also end with `year` (1970-2099).
//! * `*`, numbers, lists `a,b`, ranges `a-b`, steps `*/n`, `a/n` (from `a` to
//!   the maximum), `a-b/n`; month names `jan`..`dec` and weekday names
//!   `sun`..`sat` in any case. A range whose start is above its end wraps
//!   (`fri-mon`, `22-2`) and a step wider than the field is allowed (`*/90`
//!   minutes = minute 0), both as in croniter.
//! * Day of week: 0 and 7 are Sunday; `5L`/`FRIL` = last Friday of the month;
//!   `5#3`/`FRI#3` = third Friday. Day of month: `L` = last day, `L-3` = three
//!   days before it. `?` means `*` in both day fields. `W` is not supported.
//! * When day-of-month and day-of-week are both restricted (neither is `*` or
//!   `?`), a day matches if *either* matches (Vixie cron); otherwise both must.
//!   This includes `L`/`#` forms: `0 0 15 * 5#3` is the 15th and the third
//!   Friday (croniter 7 intersects these instead).
//! * `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.
//!
//! # APScheduler fields
//!
//! `year` (1970-9999), `month` (1-12, `jan`..), `day` (1-31), `week` (ISO week
//! 1-53), `day_of_week` (0-6 = **Monday**-Sunday, `mon`..`sun`), `hour`,
//! `minute`, `second`; values may be numbers or strings.
//!
//! * A field left out is `*` if it is more significant than the least
//!   significant field given, else its minimum (`month`/`day` 1, time fields 0),
//!   except `week` and `day_of_week`, always `*`: `{hour = 2}` is daily at
//!   02:00:00, `{day_of_week = "mon"}` Mondays at 00:00:00, `{}` every second.
//! * `*`, `*/a` (from the field's minimum: `year = "*/2"` is 1970, 1972, ...),
//!   `a`, `a-b`, `a/b`, `a-b/c`, names and name ranges, comma lists; in `day`
//!   also `1st fri`..`5th fri`, `last fri` and `last`.
//! * `day`, `week` and `day_of_week` must all match (AND).
//! * As in APScheduler, a step may not exceed the span it steps over and ranges
//!   may not go backwards; unlike APScheduler, text after a name (`"mon-fri/2"`)
//!   is an error instead of being ignored.
//!
//! # Time zones and daylight saving time
//!
//! `cron` and `fields` triggers are evaluated on the wall clock of their IANA
//! `timezone` (default UTC); `interval` triggers count elapsed time and `date`
//! triggers name one instant, so clock changes do not affect them. What a
//! calendar trigger does when the clock jumps is its `dst` policy
//! ([`DstPolicy`]): `"cron"` (the default) or `"repeat"`.
//!
//! **Fixed or wildcard hour.** The `cron` policy treats an entry by its hour
//! field: the hour is a *wildcard* when the field starts with `*` (`*`,
//! `*/2`, `@hourly`), or, for APScheduler fields, when `hour` is left out and
//! the fill rule makes it `*` (`{minute = 0}`); any other hour (`1`, `1-3`,
//! `9,17`, `@daily`, `{day = 1}` whose hour is filled with 0) is *fixed*.
//! (Vixie cron looks at the minute field too; here only the hour counts.)
//!
//! Examples in America/New_York, where clocks go 02:00→03:00 on 2026-03-08 and
//! 02:00→01:00 on 2026-11-01:
//!
//! | entry | clock goes back (01:00-02:00 twice) | clock jumps forward (02:00-03:00 skipped) |
//! | --- | --- | --- |
//! | `30 1 * * *`, `cron` | once, 01:30-04:00 (first pass) | — |
//! | `30 2 * * *`, `cron` | — | once, at the jump: 03:00-04:00 |
//! | `*/15 2 * * *`, `cron` | — | once, at the jump: 03:00-04:00 |
//! | `0 * * * *`, `cron` | 01:00-04:00 and 01:00-05:00 (every real hour) | 01:00-05:00, 03:00-04:00 (02:00 did not happen) |
//! | `30 1 * * *`, `repeat` | 01:30-04:00 and 01:30-05:00 | — |
//! | `30 2 * * *`, `repeat` | — | shifted by the gap: 03:30-04:00 |
//! | `*/15 2 * * *`, `repeat` | — | 03:00, 03:15, 03:30, 03:45 -04:00 |
//!
//! * **`cron`** (Vixie cron, cronie). Clock goes back: a fixed-hour entry
//!   fires only in the first pass (the earlier instant) of a repeated wall
//!   time; a wildcard-hour entry fires at every real instant whose wall time
//!   matches, in both passes. Clock jumps forward: a fixed-hour entry whose
//!   wall time(s) fall in the gap fires *once*, at the first instant after the
//!   jump (03:00 for a 02:00→03:00 gap, 02:30 for Lord Howe's 02:00→02:30);
//!   several skipped times collapse into that run, and so does a real match
//!   at the same instant (`0 2,3 * * *` fires once at 03:00). A wildcard-hour
//!   entry does not catch up: the times that did not exist do not fire. The
//!   catch-up is at 03:00, as cron runs it, rather than at 03:30 as
//!   APScheduler shifts it: the job runs as soon as the clock allows, and a
//!   shifted time cannot land on a real one of the same entry (`30 2,3 * * *`
//!   runs at 03:00 and 03:30; shifted, both would be one run at 03:30).
//! * **`repeat`** (APScheduler 3.x; croniter 7 on fall back). Clock goes
//!   back: every instant whose wall time matches fires, in *both* passes,
//!   whatever the schedule. Clock jumps forward: a nonexistent wall time fires
//!   at the instant it would have had under the offset in force *before* the
//!   change, i.e. shifted forward by the gap (`30 2 * * *` at 03:30,
//!   `*/15 2 * * *` at 03:00, 03:15, 03:30, 03:45: the number of runs is
//!   kept); two wall times landing on one instant fire once. APScheduler 3.11
//!   does this when it reaches the time directly (`hour=2, minute=30`); when
//!   it reaches one by carrying from an earlier fire it skips it, which we
//!   treat as a bug. croniter 7 fires nonexistent times at the change (03:00),
//!   collapsing `*/15 2 * * *` to a single run.
//! * Naive `start_date`/`end_date` values resolve the same way under both
//!   policies: the earlier instant of a repeated wall time, and a nonexistent
//!   one shifted forward by the gap.
//! * Half-hour shifts (Australia/Lord_Howe), southern-hemisphere zones and
//!   midnight changes (America/Santiago) follow the same rules; a zone with no
//!   change (UTC, Asia/Kolkata) is unaffected. chrono-tz ships DST rules up to
//!   2099; later years use the last offset.
//!
//! See `docs/dst.md` for how cron, APScheduler and Celery beat compare.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use celeriac_beat::trigger::{Schedule, TriggerSpec};
//! let nightly = |dst: &str| {
//!     TriggerSpec::from_json(&serde_json::json!({
//!         "type": "cron", "expr": "30 1 * * *", "timezone": "America/New_York", "dst": dst
//!     }))
//!     .unwrap()
//!     .compile()
//!     .unwrap()
//! };
//! let after: DateTime<Utc> = "2026-10-31T12:00:00Z".parse().unwrap();
//! let fires = |dst| -> Vec<String> {
//!     let trigger = nightly(dst);
//!     trigger.fire_times(after).take(2).map(|t| trigger.to_local(t).to_rfc3339()).collect()
//! };
//! // As cron does it (the default): once on the night clocks go back.
//! assert_eq!(fires("cron"), ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]);
//! // `repeat`: in both passes of 01:00-02:00.
//! assert_eq!(fires("repeat"), ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]);
//! ```
//!
//! # Exclusion calendars
//!
//! `cron`, `fields` and `interval` triggers may name exclusion calendars
//! (`calendars = ["us-holidays"]`; see [`Calendars`]): a fire time whose
//! local date in the trigger's `timezone` is excluded is skipped, after the
//! DST rules are applied, and the next one on a date that is not excluded is
//! returned. Names are looked up when compiling ([`TriggerSpec::compile_in`]);
//! the search skips a whole range of excluded dates at a time, so a calendar
//! that excludes every date gives `None` at once.
//!
//! # Bounds, anchors, precision
//!
//! * `start_date` and `end_date` are inclusive on every recurring trigger (see
//!   [`TriggerSpec`] for accepted formats).
//! * Interval anchor: `start_date`, else the anchor given to
//!   [`TriggerSpec::compile_with_anchor`], else the Unix epoch.
//! * Calendar triggers fire on whole seconds; `next_after` is strictly after
//!   its argument (sub-second parts round up). A search gives up after 400
//!   candidate years (the Gregorian cycle), so an impossible expression such
//!   as `0 0 30 2 *` returns `None` at once (it is detected when compiled).

mod calendar;
mod cron;
mod date;
mod dst;
mod error;
mod exclusions;
mod fields;
mod interval;
mod preview;
mod spec;
mod tz;
mod values;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

pub use dst::DstPolicy;
pub use error::TriggerError;
pub(crate) use error::suggest;
pub use exclusions::{
    CALENDAR_NAME_MAX_LEN, Calendars, DateRange, ExcludedDates, validate_calendar_name,
};
pub use interval::parse_duration;
pub use preview::{FireTimes, preview};
pub use spec::TriggerSpec;

use calendar::Calendar;
use dst::DstRule;
use interval::Interval;

/// A schedule: given an instant, the next fire time strictly after it.
pub trait Schedule {
    /// The first fire time strictly after `after`, or `None` if there is none.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>>;
}

/// A compiled trigger: compact (a calendar expression is one shared
/// allocation, see [`SharedCalendars`]) and quick to evaluate. Build it with [`TriggerSpec::compile`].
#[derive(Clone, Debug, PartialEq)]
pub struct Trigger {
    kind: Kind,
    tz: Tz,
    /// Calendar triggers only: the DST policy applied to this entry's hour.
    dst: DstRule,
    /// Interval triggers only: the start date is the interval's anchor
    /// (kept there, not in `limits`).
    start_is_anchor: bool,
    /// What most triggers leave unset, boxed together and only when one
    /// is set (100,000 entries hold 100,000 triggers).
    limits: Option<Box<Limits>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// Shared: triggers of the same expression can hold one copy (see
    /// [`SharedCalendars`]).
    Calendar(Arc<Calendar>),
    Interval(Interval),
    Date(DateTime<FixedOffset>),
}

/// A trigger's bounds, jitter and exclusions.
#[derive(Clone, Debug, Default, PartialEq)]
struct Limits {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    /// Interval triggers only: the largest delay added to each run.
    jitter: Option<Duration>,
    /// Local dates on which nothing fires (the entry's exclusion calendars).
    excluded: Option<Arc<ExcludedDates>>,
}

impl Trigger {
    /// The trigger's time zone (UTC for date triggers, which keep their own offset).
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Inclusive lower bound of fire times, if any.
    pub fn start_date(&self) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Interval(interval) if self.start_is_anchor => Some(interval.anchor),
            _ => self.limits.as_ref()?.start,
        }
    }

    /// Inclusive upper bound of fire times, if any.
    pub fn end_date(&self) -> Option<DateTime<Utc>> {
        self.limits.as_ref()?.end
    }

    /// The trigger's limits to change; boxed again only if one is set.
    fn set_limits(&mut self, change: impl FnOnce(&mut Limits)) {
        let mut limits = self.limits.take().map_or_else(Limits::default, |b| *b);
        change(&mut limits);
        self.limits = (limits != Limits::default()).then(|| Box::new(limits));
    }

    /// The daylight-saving policy of a `cron` or `fields` trigger (`None`
    /// for interval and date triggers, which clock changes do not affect).
    pub fn dst_policy(&self) -> Option<DstPolicy> {
        match (&self.kind, self.dst) {
            (Kind::Calendar(_), DstRule::Repeat) => Some(DstPolicy::Repeat),
            (Kind::Calendar(_), _) => Some(DstPolicy::Cron),
            _ => None,
        }
    }

    /// The maximum random delay the caller should add to each fire time
    /// (`jitter_seconds` of an interval trigger). [`Schedule::next_after`]
    /// never applies it, so schedules stay deterministic: the next fire is
    /// computed from the un-jittered time, and beat delays each run by a
    /// fixed amount in `0..=jitter` derived from the run's task id, the same
    /// in every beat (see [`crate::firing::plan`]).
    pub fn jitter(&self) -> Option<Duration> {
        self.limits.as_ref()?.jitter
    }

    /// An instant shown in the trigger's time zone with the offset in force
    /// then (a date trigger uses the offset of its `run_at`).
    pub fn to_local(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        match &self.kind {
            Kind::Date(run_at) => t.with_timezone(run_at.offset()),
            _ => t.with_timezone(&self.tz).fixed_offset(),
        }
    }

    /// The local dates this trigger skips (its exclusion calendars together).
    pub fn excluded_dates(&self) -> Option<&ExcludedDates> {
        self.limits.as_ref()?.excluded.as_deref()
    }

    /// This trigger, also skipping every fire time whose local date (in
    /// [`Trigger::timezone`]) is in `dates`.
    pub fn excluding(mut self, dates: ExcludedDates) -> Trigger {
        if !dates.is_empty() {
            self.set_limits(|l| {
                l.excluded = Some(Arc::new(match l.excluded.take() {
                    Some(own) => own.union(&dates),
                    None => dates,
                }));
            });
        }
        self
    }

    /// Successive fire times strictly after `from`.
    pub fn fire_times(&self, from: DateTime<Utc>) -> FireTimes<'_> {
        FireTimes {
            trigger: self,
            cursor: Some(from),
        }
    }
}

/// Compiled calendar expressions shared between triggers: 100,000 entries
/// of a handful of crontab expressions hold a handful of calendars.
/// Calendars no trigger uses any more are dropped as the set grows.
#[derive(Debug, Default)]
pub struct SharedCalendars {
    set: std::collections::HashSet<Arc<Calendar>>,
    prune_at: usize,
}

impl SharedCalendars {
    /// `trigger`, its calendar (if it has one) replaced by the shared copy
    /// of an equal one; the trigger fires at exactly the same times.
    pub fn share(&mut self, mut trigger: Trigger) -> Trigger {
        if let Kind::Calendar(calendar) = &mut trigger.kind {
            match self.set.get(&**calendar) {
                Some(shared) => *calendar = shared.clone(),
                None => {
                    if self.set.len() >= self.prune_at {
                        self.set.retain(|c| Arc::strong_count(c) > 1);
                        self.prune_at = (2 * self.set.len()).max(64);
                    }
                    self.set.insert(calendar.clone());
                }
            }
        }
        trigger
    }

    /// How many distinct calendars are held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

impl Schedule for Trigger {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let Some(excluded) = self.excluded_dates() else {
            return self.next_rule(after);
        };
        // Each round skips one whole merged range of excluded dates (and the
        // ranges are sorted), so this ends, even if every date is excluded.
        let mut after = after;
        for _ in 0..=excluded.ranges().len() {
            let next = self.next_rule(after)?;
            let date = next.with_timezone(&self.tz).date_naive();
            let Some((_, last)) = excluded.range_containing(date) else {
                return Some(next);
            };
            // Go on from the first instant of the day after the range.
            let day_after = last.succ_opt()?.and_time(NaiveTime::MIN);
            let start = tz::resolve_local(self.tz, day_after)?;
            after = just_before(start).max(next);
        }
        None
    }
}

impl Trigger {
    /// The next fire time of the rule alone (bounds applied, no exclusions).
    fn next_rule(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = match self.start_date() {
            Some(start) if after < start => just_before(start),
            _ => after,
        };
        let next = match &self.kind {
            Kind::Calendar(calendar) => {
                // First whole second strictly after `after`.
                let s = after.timestamp().checked_add(1)?;
                let t = tz::next_instant(self.tz, self.dst, s, |wall| calendar.next_local(wall))?;
                DateTime::from_timestamp(t, 0)?
            }
            Kind::Interval(interval) => interval.next_after(after)?,
            Kind::Date(run_at) => date::next_after(run_at, after)?,
        };
        match self.end_date() {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }
}

/// One nanosecond before `t` (to turn an inclusive bound into a strict one).
fn just_before(t: DateTime<Utc>) -> DateTime<Utc> {
    t.checked_sub_signed(TimeDelta::nanoseconds(1)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expr: &str) -> Trigger {
        TriggerSpec::from_json(&serde_json::json!({"type": "cron", "expr": expr}))
            .and_then(|s| s.compile())
            .expect("valid")
    }

    fn calendar(t: &Trigger) -> &Arc<Calendar> {
        match &t.kind {
            Kind::Calendar(c) => c,
            _ => panic!("not a calendar trigger"),
        }
    }

    #[test]
    fn equal_calendars_are_shared_and_unused_ones_dropped() {
        let mut shared = SharedCalendars::default();
        let a = shared.share(cron("*/5 * * * *"));
        let b = shared.share(cron("0-59/5 * * * *"));
        let c = shared.share(cron("0 9 * * 1-5"));
        assert!(Arc::ptr_eq(calendar(&a), calendar(&b)));
        assert!(!Arc::ptr_eq(calendar(&a), calendar(&c)));
        assert_eq!(a, cron("*/5 * * * *"));
        assert_eq!(shared.len(), 2);
        drop((a, b, c));
        let kept: Vec<Trigger> = (0..120)
            .map(|k| shared.share(cron(&format!("{} {} * * *", k % 60, k / 60))))
            .collect();
        // The first two, used by no trigger any more, were dropped on the way.
        assert_eq!(shared.len(), kept.len());
        let interval = shared.share(
            TriggerSpec::from_json(&serde_json::json!({"type": "interval", "seconds": 5}))
                .and_then(|s| s.compile())
                .expect("valid"),
        );
        assert_eq!(interval.jitter(), None);
    }
}
