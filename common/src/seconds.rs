//! Spans given as a number of seconds by a message, a remote-control
//! request, a database row or a command line. `Duration::from_secs_f64`
//! panics on a negative number or one over about 1.8e19, and adding a
//! `Duration` of 1e19 s to a clock reading overflows; a value from outside
//! must do neither. Spans are therefore capped at [`MAX_SECONDS`], far
//! beyond any limit or timeout that means something, and short enough to
//! add to any clock reading or date this program meets.

use std::time::Duration;

/// The longest span read from a number of seconds: 1,000 years.
pub const MAX_SECONDS: f64 = 1000.0 * 365.25 * 86_400.0;

/// `secs` as a `Duration`, at most [`MAX_SECONDS`] (so infinity is that
/// cap); `None` for a negative number or NaN.
pub fn capped(secs: f64) -> Option<Duration> {
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_SECONDS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_number_of_seconds_is_read_without_a_panic() {
        assert_eq!(capped(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(capped(0.0), Some(Duration::ZERO));
        let cap = Some(Duration::from_secs_f64(MAX_SECONDS));
        for huge in [1e13, 1e19, 1e20, 1e300, f64::MAX, f64::INFINITY] {
            assert_eq!(capped(huge), cap, "{huge}");
        }
        for bad in [-1.0, -0.5, f64::NEG_INFINITY, f64::NAN] {
            assert_eq!(capped(bad), None, "{bad}");
        }
        // The cap can be added to clock readings and dates.
        let cap = capped(f64::INFINITY).expect("cap");
        let _ = std::time::Instant::now() + cap;
        let _ = tokio::time::Instant::now() + cap;
        let delta = chrono::TimeDelta::from_std(cap).expect("fits a TimeDelta");
        assert!(chrono::Utc::now().checked_add_signed(delta).is_some());
    }
}
