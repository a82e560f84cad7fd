//! The clock seam: scheduling logic never reads the wall clock itself, so
//! tests drive it with a [`FakeClock`] and exact instants.

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant (UTC).
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<DateTime<Utc>>,
}

impl FakeClock {
    /// A clock showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        FakeClock {
            now: Mutex::new(now),
        }
    }

    /// Moves the clock to `now` (backwards too).
    pub fn set(&self, now: DateTime<Utc>) {
        if let Ok(mut t) = self.now.lock() {
            *t = now;
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut t) = self.now.lock() {
            *t = t
                .checked_add_signed(TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX))
                .unwrap_or(*t);
        }
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|p| *p.into_inner())
    }
}

/// An instant as beat stores and sends it: RFC 3339 in UTC with as many
/// fractional digits as needed (`2024-05-01T09:00:00Z`,
/// `2024-05-01T09:00:00.250Z`), so it reads back exactly.
pub fn format_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Reads an instant written by [`format_instant`] (any RFC 3339 instant).
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip() {
        for s in [
            "2024-05-01T09:00:00Z",
            "2024-05-01T09:00:00.250Z",
            "2024-05-01T09:00:00.000000001Z",
        ] {
            let t = parse_instant(s).expect("parses");
            assert_eq!(format_instant(t), s);
        }
        assert_eq!(
            parse_instant("2024-05-01T11:00:00+02:00").map(format_instant),
            Some("2024-05-01T09:00:00Z".to_owned())
        );
    }

    #[test]
    fn fake_clock_moves_when_told() {
        let t0 = parse_instant("2024-05-01T09:00:00Z").expect("parses");
        let clock = FakeClock::new(t0);
        assert_eq!(clock.now(), t0);
        clock.advance(std::time::Duration::from_millis(1500));
        assert_eq!(format_instant(clock.now()), "2024-05-01T09:00:01.500Z");
    }
}
