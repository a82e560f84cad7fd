//! What to do with runs that are due: the misfire rules, as APScheduler
//! has them.
//!
//! Given the first due fire time `F` of an entry and the current time:
//!
//! * **coalesce on**: of all fire times in `[F, now]`, only the latest is
//!   considered; the earlier ones are *coalesced* into it. It is sent if it
//!   is within `misfire_grace_time`, else it (and the rest) are *missed*.
//! * **coalesce off**: fire times later than the grace time are *missed*;
//!   the first one within it is sent, and the ones after it follow, one
//!   per tick.
//!
//! "Late" is measured from the scheduled time; an interval trigger's
//! `jitter` is added to the allowance, so jitter alone never makes a run
//! miss. Long backlogs are not walked one by one: counts stop at 1,000 and
//! the latest fire time is found by bisection.

use chrono::{DateTime, TimeDelta, Utc};

use crate::schedule::entry::{Firing, Grace};
use crate::trigger::{Schedule, Trigger};

/// Backlogs longer than this are counted as "at least this many".
pub const COUNT_CAP: u64 = 1000;

/// A number of runs, possibly capped at [`COUNT_CAP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runs {
    /// How many (at least, if `capped`).
    pub count: u64,
    /// Whether counting stopped at [`COUNT_CAP`].
    pub capped: bool,
}

impl std::fmt::Display for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.count, if self.capped { "+" } else { "" })
    }
}

/// The decision for one entry at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The fire time to send now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// The last fire time handled (sent or skipped): the new cursor.
    pub cursor: DateTime<Utc>,
    /// Runs skipped as later than the grace time, and the last of them.
    pub missed: Option<(Runs, DateTime<Utc>)>,
    /// Runs folded into `fire` by coalescing.
    pub coalesced: Option<Runs>,
}

/// Decides about an entry whose first due fire time is `first` (`<= now`).
pub fn decide(
    trigger: &Trigger,
    firing: &Firing,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Decision {
    let jitter = trigger
        .jitter()
        .and_then(|j| TimeDelta::from_std(j).ok())
        .unwrap_or_default();
    // Runs scheduled before `limit` are too late.
    let limit = match firing.misfire_grace {
        Grace::Within(g) => TimeDelta::from_std(g)
            .ok()
            .and_then(|g| now.checked_sub_signed(g))
            .and_then(|t| t.checked_sub_signed(jitter)),
        Grace::Unlimited => None,
    };
    let in_grace = |t: DateTime<Utc>| limit.is_none_or(|l| t >= l);
    if firing.coalesce {
        let (last, earlier) = last_until(trigger, first, now);
        if in_grace(last) {
            Decision {
                fire: Some(last),
                cursor: last,
                missed: None,
                coalesced: (earlier.count > 0).then_some(earlier),
            }
        } else {
            let all = Runs {
                count: earlier.count + 1,
                capped: earlier.capped,
            };
            Decision {
                fire: None,
                cursor: last,
                missed: Some((all, last)),
                coalesced: None,
            }
        }
    } else if in_grace(first) {
        Decision {
            fire: Some(first),
            cursor: first,
            missed: None,
            coalesced: None,
        }
    } else {
        let limit = limit.unwrap_or(now);
        // Last fire time before `limit`: the last one missed.
        let before = limit
            .checked_sub_signed(TimeDelta::nanoseconds(1))
            .unwrap_or(limit);
        let (last_missed, after_first) = last_until(trigger, first, before);
        let missed = Runs {
            count: after_first.count + 1,
            capped: after_first.capped,
        };
        match trigger.next_after(last_missed).filter(|t| *t <= now) {
            Some(next) => Decision {
                fire: Some(next),
                cursor: next,
                missed: Some((missed, last_missed)),
                coalesced: None,
            },
            None => Decision {
                fire: None,
                cursor: last_missed,
                missed: Some((missed, last_missed)),
                coalesced: None,
            },
        }
    }
}

/// The last fire time `<= until`, starting from the fire time `first`
/// (`<= until`), and how many fire times come after `first` up to it.
pub fn last_until(
    trigger: &Trigger,
    first: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (DateTime<Utc>, Runs) {
    let fires_by = |x: DateTime<Utc>| trigger.next_after(x).is_some_and(|t| t <= until);
    let mut last = first;
    let mut count = 0;
    while count < COUNT_CAP {
        match trigger.next_after(last) {
            Some(t) if t <= until => {
                last = t;
                count += 1;
            }
            _ => {
                return (
                    last,
                    Runs {
                        count,
                        capped: false,
                    },
                );
            }
        }
    }
    if !fires_by(last) {
        return (
            last,
            Runs {
                count,
                capped: false,
            },
        );
    }
    // Bisection: fires_by(lo) holds, fires_by(hi) does not.
    let (mut lo, mut hi) = (last, until);
    while hi - lo > TimeDelta::nanoseconds(1) {
        let mid = lo + (hi - lo) / 2;
        if fires_by(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let end = trigger
        .next_after(lo)
        .filter(|t| *t <= until)
        .unwrap_or(last);
    (
        end,
        Runs {
            count,
            capped: true,
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::trigger::TriggerSpec;

    fn every(secs: u64) -> Trigger {
        TriggerSpec::Interval {
            weeks: None,
            days: None,
            hours: None,
            minutes: None,
            seconds: Some(secs),
            every: None,
            start_date: None,
            end_date: None,
            jitter_seconds: None,
            timezone: None,
            calendars: Vec::new(),
        }
        .compile()
        .unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn firing(grace_secs: Option<u64>, coalesce: bool) -> Firing {
        Firing {
            misfire_grace: grace_secs
                .map_or(Grace::Unlimited, |s| Grace::Within(Duration::from_secs(s))),
            coalesce,
            max_instances: 0,
        }
    }

    #[test]
    fn on_time_fires() {
        let d = decide(
            &every(10),
            &firing(Some(5), true),
            t("2024-01-01T00:00:10Z"),
            t("2024-01-01T00:00:10.004Z"),
        );
        assert_eq!(d.fire, Some(t("2024-01-01T00:00:10Z")));
        assert_eq!(d.missed, None);
        assert_eq!(d.coalesced, None);
    }

    #[test]
    fn coalesce_sends_the_latest_once() {
        let d = decide(
            &every(10),
            &firing(Some(5), true),
            t("2024-01-01T00:00:10Z"),
            t("2024-01-01T00:01:02Z"),
        );
        assert_eq!(d.fire, Some(t("2024-01-01T00:01:00Z")));
        assert_eq!(
            d.coalesced,
            Some(Runs {
                count: 5,
                capped: false
            })
        );
        assert_eq!(d.cursor, t("2024-01-01T00:01:00Z"));
    }

    #[test]
    fn coalesce_misses_when_the_latest_is_too_late() {
        let d = decide(
            &every(10),
            &firing(Some(1), true),
            t("2024-01-01T00:00:10Z"),
            t("2024-01-01T00:01:05Z"),
        );
        assert_eq!(d.fire, None);
        assert_eq!(
            d.missed,
            Some((
                Runs {
                    count: 6,
                    capped: false
                },
                t("2024-01-01T00:01:00Z")
            ))
        );
        assert_eq!(d.cursor, t("2024-01-01T00:01:00Z"));
    }

    #[test]
    fn without_coalesce_each_run_in_grace_is_sent() {
        let f = firing(Some(25), false);
        let d = decide(
            &every(10),
            &f,
            t("2024-01-01T00:00:10Z"),
            t("2024-01-01T00:01:05Z"),
        );
        // 00:40 is the first within 25 s of 01:05; 10, 20, 30 are missed.
        assert_eq!(d.fire, Some(t("2024-01-01T00:00:40Z")));
        assert_eq!(
            d.missed,
            Some((
                Runs {
                    count: 3,
                    capped: false
                },
                t("2024-01-01T00:00:30Z")
            ))
        );
        let d = decide(
            &every(10),
            &firing(None, false),
            t("2024-01-01T00:00:10Z"),
            t("2024-01-01T00:01:05Z"),
        );
        assert_eq!(d.fire, Some(t("2024-01-01T00:00:10Z")));
        assert_eq!(d.missed, None);
    }

    #[test]
    fn long_backlogs_are_bisected() {
        // Every second for ten days: 864,000 runs, found without walking them.
        let (last, runs) = last_until(
            &every(1),
            t("2024-01-01T00:00:00Z"),
            t("2024-01-11T00:00:00.5Z"),
        );
        assert_eq!(last, t("2024-01-11T00:00:00Z"));
        assert!(runs.capped);
        let d = decide(
            &every(1),
            &firing(Some(60), false),
            t("2024-01-01T00:00:00Z"),
            t("2024-01-11T00:00:00.5Z"),
        );
        assert_eq!(d.fire, Some(t("2024-01-10T23:59:01Z")));
        assert_eq!(d.missed.map(|m| m.1), Some(t("2024-01-10T23:59:00Z")));
    }
}
