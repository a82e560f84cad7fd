//! One-shot date triggers.

use chrono::{DateTime, FixedOffset, Utc};

/// The next fire of a trigger that fires once at `run_at`: `run_at` itself if
/// it is strictly after `after`, else nothing.
pub(crate) fn next_after(
    run_at: &DateTime<FixedOffset>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let at = run_at.to_utc();
    (after < at).then_some(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fires_once() {
        let run_at = DateTime::parse_from_rfc3339("2024-06-01T12:00:00+02:00").unwrap();
        let before = DateTime::parse_from_rfc3339("2024-06-01T09:59:59Z")
            .unwrap()
            .to_utc();
        assert_eq!(next_after(&run_at, before), Some(run_at.to_utc()));
        assert_eq!(next_after(&run_at, run_at.to_utc()), None);
    }
}
