//! Brute-force checks: random crontab strings and APScheduler fields around
//! DST changes in several zones, against a minute-by-minute simulation of
//! each policy written independently of the trigger code (fixed seeds).

use std::collections::BTreeSet;

use celeriac_beat::trigger::{Schedule, Trigger};
use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::repeat;
use crate::common::{cron, spec, utc};

const MINUTES: [&str; 10] = [
    "*", "*/15", "0", "30", "0,30", "15,45", "*/7", "10-20", "5/25", "59",
];
const HOURS: [&str; 11] = [
    "*", "1", "2", "3", "1-3", "*/2", "0,2", "2-4", "23,0,1", "1,2", "*/1",
];
/// A day before each change (2024 and 2026), in zones with whole-hour,
/// half-hour and midnight changes in both hemispheres.
const SCENARIOS: [(&str, &str); 16] = [
    ("Europe/Berlin", "2024-03-30T12:00:00Z"),
    ("Europe/Berlin", "2024-10-26T12:00:00Z"),
    ("America/New_York", "2024-03-09T18:00:00Z"),
    ("America/New_York", "2024-11-02T18:00:00Z"),
    ("Australia/Sydney", "2024-04-06T00:00:00Z"),
    ("Australia/Sydney", "2024-10-05T00:00:00Z"),
    ("Australia/Lord_Howe", "2024-04-06T00:00:00Z"),
    ("Australia/Lord_Howe", "2024-10-05T00:00:00Z"),
    ("America/Santiago", "2024-04-06T12:00:00Z"),
    ("America/Santiago", "2024-09-07T12:00:00Z"),
    ("Europe/Berlin", "2026-03-28T12:00:00Z"),
    ("Europe/Berlin", "2026-10-24T12:00:00Z"),
    ("America/New_York", "2026-03-07T18:00:00Z"),
    ("America/New_York", "2026-10-31T18:00:00Z"),
    ("Australia/Lord_Howe", "2026-04-04T00:00:00Z"),
    ("Australia/Lord_Howe", "2026-10-03T00:00:00Z"),
];

/// Wall-clock matching and offsets for one expression in one zone.
struct Clock {
    wall: Trigger,
    zone: Tz,
}

impl Clock {
    fn new(expr: &str, zone: Tz) -> Self {
        Self {
            wall: cron(expr, "UTC"),
            zone,
        }
    }

    fn matches(&self, w: NaiveDateTime) -> bool {
        let t = w.and_utc();
        self.wall.next_after(t - TimeDelta::seconds(1)) == Some(t)
    }

    fn offset(&self, t: DateTime<Utc>) -> TimeDelta {
        let offset = self.zone.offset_from_utc_datetime(&t.naive_utc()).fix();
        TimeDelta::seconds(i64::from(offset.local_minus_utc()))
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + self.offset(t)
    }
}

/// Whole minutes from well before `from` (so a simulation knows what the
/// clock showed earlier) up to `until`.
fn minutes(from: DateTime<Utc>, until: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> {
    let start = (from - TimeDelta::hours(26)).timestamp();
    let first = DateTime::from_timestamp(start - start.rem_euclid(60), 0).unwrap();
    (0..)
        .map(move |i| first + TimeDelta::minutes(i))
        .take_while(move |t| *t <= until)
}

fn keep(
    out: BTreeSet<DateTime<Utc>>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    out.into_iter()
        .filter(|t| *t > from && *t <= until)
        .collect()
}

/// `repeat`: every minute whose local wall time matches, plus gap wall times
/// shifted forward by the gap.
fn repeat_oracle(clock: &Clock, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = BTreeSet::new();
    let minute = TimeDelta::minutes(1);
    for t in minutes(from, until) {
        let (now, before) = (clock.offset(t), clock.offset(t - minute));
        if clock.matches(t.naive_utc() + now) {
            out.insert(t);
        }
        if now > before {
            let mut w = t.naive_utc() + before;
            while w < t.naive_utc() + now {
                if clock.matches(w) {
                    out.insert(w.and_utc() - before);
                }
                w += minute;
            }
        }
    }
    keep(out, from, until)
}

/// `cron`, simulated as a cron daemon does it: wake every real minute and
/// look at the clock. A fixed-hour job does not run at a wall time the clock
/// has already shown (the second pass), and runs once for the wall times it
/// jumped over; a wildcard-hour job runs whenever the clock shows a match.
fn cron_oracle(
    clock: &Clock,
    fixed_hour: bool,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = BTreeSet::new();
    let minute = TimeDelta::minutes(1);
    let mut latest_shown: Option<NaiveDateTime> = None;
    for t in minutes(from, until) {
        let wall = clock.local(t);
        let previous = clock.local(t - minute);
        let shown_before = latest_shown.is_some_and(|l| wall <= l);
        let mut run = clock.matches(wall) && !(fixed_hour && shown_before);
        if fixed_hour {
            let mut skipped = previous + minute;
            while skipped < wall {
                run |= clock.matches(skipped);
                skipped += minute;
            }
        }
        if run {
            out.insert(t);
        }
        latest_shown = latest_shown.max(Some(wall));
    }
    keep(out, from, until)
}

/// Fire times of `trigger` in `(from, until]`.
fn fires(trigger: &Trigger, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    trigger
        .fire_times(from)
        .take_while(|t| *t <= until)
        .collect()
}

#[test]
fn repeat_matches_brute_force_around_transitions() {
    let mut rng = StdRng::seed_from_u64(20240331);
    let mut checked = 0;
    for (zone_name, start) in SCENARIOS {
        let zone: Tz = zone_name.parse().unwrap();
        for _ in 0..7 {
            let expr = format!(
                "{} {} * * *",
                MINUTES[rng.random_range(0..MINUTES.len())],
                HOURS[rng.random_range(0..HOURS.len())]
            );
            // Random start within the day before the change, to any second.
            let from = utc(start) + TimeDelta::seconds(rng.random_range(0..86_400));
            let until = utc(start) + TimeDelta::hours(36);
            assert_eq!(
                fires(&repeat(&expr, zone_name), from, until),
                repeat_oracle(&Clock::new(&expr, zone), from, until),
                "{expr} in {zone_name} from {from}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * SCENARIOS.len());
}

#[test]
fn cron_matches_brute_force_around_transitions() {
    let mut rng = StdRng::seed_from_u64(20261101);
    let mut checked = 0;
    for (zone_name, start) in SCENARIOS {
        let zone: Tz = zone_name.parse().unwrap();
        for _ in 0..10 {
            let minute = MINUTES[rng.random_range(0..MINUTES.len())];
            // `None`: an APScheduler hour left out (filled as `*`).
            let hour = if rng.random_bool(0.1) {
                None
            } else {
                Some(HOURS[rng.random_range(0..HOURS.len())])
            };
            let expr = format!("{minute} {} * * *", hour.unwrap_or("*"));
            let fixed_hour = hour.is_some_and(|h| !h.starts_with('*'));
            let from = utc(start) + TimeDelta::seconds(rng.random_range(0..86_400));
            let until = utc(start) + TimeDelta::hours(36);
            let expected = cron_oracle(&Clock::new(&expr, zone), fixed_hour, from, until);
            assert_eq!(
                fires(&cron(&expr, zone_name), from, until),
                expected,
                "{expr} in {zone_name} from {from}"
            );
            let mut fields = json!({"type": "fields", "minute": minute, "timezone": zone_name});
            if let Some(hour) = hour {
                fields["hour"] = json!(hour);
            }
            assert_eq!(
                fires(&spec(fields.clone()), from, until),
                expected,
                "{fields} from {from}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 10 * SCENARIOS.len());
}
