//! Per-task options: retry policy, time limits and rate limit, with
//! Celery's names and defaults.

use celeriac_common::backoff::{Backoff, Jitter};
use std::time::Duration;

/// How a task is retried and limited. `TaskOptions::default()` matches
/// Celery's defaults: 3 retries, 180 s apart, no limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Retries allowed after the first run (`None`: unlimited). Default 3.
    pub max_retries: Option<u32>,
    /// Delay before a retry the task asked for without a countdown. Default 180 s.
    pub retry_delay: Duration,
    /// Error kinds (the error's type name, e.g. `"IoError"`, or a
    /// `TaskFailure` kind) retried automatically. Default none.
    pub autoretry_for: Vec<String>,
    /// Exponential backoff for automatic and policy retries: `retry_delay ×
    /// 2^retries`, capped by `retry_backoff_max`. Default off.
    pub retry_backoff: bool,
    /// Cap on the backoff delay. Default 600 s.
    pub retry_backoff_max: Duration,
    /// Randomise the backoff delay in `[0, delay]` (full jitter). Default on.
    pub retry_jitter: bool,
    /// Hard time limit: the task is stopped and recorded as FAILURE
    /// `TimeLimitExceeded`. A message's own `timelimit` header wins.
    pub time_limit: Option<Duration>,
    /// Soft time limit: `TaskContext::soft_time_limit()` resolves.
    pub soft_time_limit: Option<Duration>,
    /// At most this many starts per interval, per worker.
    pub rate_limit: Option<RateLimit>,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_retries: Some(3),
            retry_delay: Duration::from_secs(180),
            autoretry_for: Vec::new(),
            retry_backoff: false,
            retry_backoff_max: Duration::from_secs(600),
            retry_jitter: true,
            time_limit: None,
            soft_time_limit: None,
            rate_limit: None,
        }
    }
}

impl TaskOptions {
    /// The delay before retry number `retries + 1` under this policy.
    pub fn policy_delay(&self, retries: u32) -> Duration {
        if !self.retry_backoff {
            return self.retry_delay;
        }
        let jitter = if self.retry_jitter {
            Jitter::Full
        } else {
            Jitter::None
        };
        Backoff::new(self.retry_delay, self.retry_backoff_max)
            .jitter(jitter)
            .delay_for(retries)
    }
}

/// A rate such as `"100/s"`, `"10/m"` or `"500/h"` (Celery's spelling; a
/// bare number means per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Time between two starts.
    pub interval: Duration,
}

/// A rate limit that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid rate limit {0:?}: expected N/s, N/m or N/h with N > 0, e.g. \"100/s\"")]
pub struct RateLimitError(pub String);

impl std::str::FromStr for RateLimit {
    type Err = RateLimitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RateLimitError(s.to_owned());
        let (count, unit) = s.trim().split_once('/').unwrap_or((s.trim(), "s"));
        let count: f64 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        if !(count.is_finite() && count > 0.0) {
            return Err(bad());
        }
        // "1e-30/s" is one run in a thousand years (the cap), not a panic.
        let interval = celeriac_common::seconds::capped(period / count).ok_or_else(bad)?;
        Ok(RateLimit { interval })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_like_celery() {
        let r: RateLimit = "100/s".parse().expect("rate");
        assert_eq!(r.interval, Duration::from_millis(10));
        assert_eq!(
            "10/m".parse::<RateLimit>().expect("rate").interval,
            Duration::from_secs(6)
        );
        assert_eq!(
            "2/h".parse::<RateLimit>().expect("rate").interval,
            Duration::from_secs(1800)
        );
        assert_eq!(
            "4".parse::<RateLimit>().expect("rate").interval,
            Duration::from_millis(250)
        );
        for bad in ["", "x/s", "0/s", "-1/m", "10/d", "10/", "inf/s"] {
            assert!(
                bad.parse::<RateLimit>().is_err(),
                "{bad:?} should be refused"
            );
        }
        // One run in 1e30 s: the longest span a clock can hold, not a panic.
        assert_eq!(
            "1e-30/s".parse::<RateLimit>().expect("rate").interval,
            celeriac_common::seconds::capped(f64::INFINITY).expect("cap")
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let o = TaskOptions {
            retry_backoff: true,
            retry_jitter: false,
            retry_delay: Duration::from_secs(1),
            ..TaskOptions::default()
        };
        assert_eq!(o.policy_delay(0), Duration::from_secs(1));
        assert_eq!(o.policy_delay(3), Duration::from_secs(8));
        assert_eq!(o.policy_delay(30), Duration::from_secs(600));
        let jittered = TaskOptions {
            retry_jitter: true,
            ..o
        };
        assert!(jittered.policy_delay(3) <= Duration::from_secs(8));
    }
}
