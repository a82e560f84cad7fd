//! Exponential backoff, the one policy behind every retry loop in celeriac:
//! reconnecting to the broker, storing results, retrying a beat run or a
//! migration, and a task's own `retry_backoff`.
//!
//! ```
//! use celeriac_common::backoff::{Backoff, Jitter};
//! use std::time::Duration;
//!
//! let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//! assert_eq!(b.next_delay(), Duration::from_millis(200));
//! assert_eq!(b.delay_for(10), Duration::from_secs(1)); // capped
//! b.reset();
//! assert_eq!(b.next_delay(), Duration::from_millis(100));
//!
//! let full = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(Jitter::Full);
//! assert!(full.delay_for(3) <= Duration::from_secs(8));
//! ```

use std::time::Duration;

/// How a delay is randomised, so that many processes that failed together
/// do not all retry at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// The delay as computed (deterministic).
    #[default]
    None,
    /// Uniform in `[0, delay]` (AWS's "full jitter"; Celery's `retry_jitter`).
    Full,
    /// Uniform in `[delay / 2, delay]`: never much shorter than asked.
    Equal,
}

/// Delays that start at `start`, double at each failure and stop growing at
/// `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    jitter: Jitter,
    failures: u32,
}

impl Backoff {
    /// Doubling from `start` up to `max`, no jitter.
    pub const fn new(start: Duration, max: Duration) -> Self {
        Backoff {
            start,
            max,
            jitter: Jitter::None,
            failures: 0,
        }
    }

    /// The same policy with `jitter`.
    #[must_use]
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay after failure number `failures + 1`: `start × 2^failures`,
    /// at most `max`, then jittered.
    pub fn delay_for(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(31));
        let delay = self.start.saturating_mul(factor).min(self.max);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay.mul_f64(rand::random::<f64>()),
            Jitter::Equal => delay / 2 + (delay / 2).mul_f64(rand::random::<f64>()),
        }
    }

    /// The delay to wait now, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay_for(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures counted since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts again from `start` (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_then_caps() {
        let mut b = Backoff::new(S, Duration::from_secs(5));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5, 5]);
        assert_eq!(b.failures(), 6);
        assert_eq!(b.delay_for(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let full = Backoff::new(S, Duration::from_secs(60)).jitter(Jitter::Full);
        let equal = Backoff::new(S, Duration::from_secs(60)).jitter(Jitter::Equal);
        let fulls: Vec<Duration> = (0..200).map(|_| full.delay_for(3)).collect();
        assert!(fulls.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(
            fulls.iter().any(|d| *d != fulls[0]),
            "full jitter never varied"
        );
        for _ in 0..200 {
            let d = equal.delay_for(3);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }
}
