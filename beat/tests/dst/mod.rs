//! Daylight-saving behaviour of calendar triggers, for both `dst` policies
//! (`cron`, the default, and `repeat`) in several zones, plus brute-force
//! oracle checks of each policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cron;
mod oracle;
mod repeat;

use celeriac_beat::trigger::{DstPolicy, Trigger, TriggerSpec};

/// A crontab trigger in `tz` with an explicit policy.
fn with_policy(expr: &str, tz: &str, dst: DstPolicy) -> Trigger {
    TriggerSpec::Cron {
        expr: expr.to_string(),
        timezone: Some(tz.to_string()),
        start_date: None,
        end_date: None,
        dst: Some(dst),
        calendars: Vec::new(),
    }
    .compile()
    .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

/// A crontab trigger in `tz` with `dst = "repeat"`.
fn repeat(expr: &str, tz: &str) -> Trigger {
    with_policy(expr, tz, DstPolicy::Repeat)
}
