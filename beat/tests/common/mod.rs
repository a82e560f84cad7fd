//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use celeriac_beat::trigger::{Schedule, Trigger, TriggerError, TriggerSpec};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// A compiled crontab trigger in `tz` ("UTC" for none).
pub fn cron(expr: &str, tz: &str) -> Trigger {
    try_cron(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

pub fn try_cron(expr: &str, tz: &str) -> Result<Trigger, TriggerError> {
    TriggerSpec::Cron {
        expr: expr.to_string(),
        timezone: (tz != "UTC").then(|| tz.to_string()),
        start_date: None,
        end_date: None,
        dst: None,
        calendars: Vec::new(),
    }
    .compile()
}

/// A trigger from a JSON description (any type).
pub fn spec(json: Value) -> Trigger {
    try_spec(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

pub fn try_spec(json: Value) -> Result<Trigger, TriggerError> {
    TriggerSpec::from_json(&json)?.compile()
}

pub fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The next `n` fires strictly after `from`, as local RFC 3339 strings.
pub fn next_n(trigger: &Trigger, from: &str, n: usize) -> Vec<String> {
    trigger
        .fire_times(utc(from))
        .take(n)
        .map(|t| trigger.to_local(t).to_rfc3339())
        .collect()
}

/// Like [`next_n`] but only the `YYYY-MM-DDTHH:MM:SS` part (for UTC tests).
pub fn next_naive(trigger: &Trigger, from: &str, n: usize) -> Vec<String> {
    next_n(trigger, from, n)
        .into_iter()
        .map(|s| s[..19].to_string())
        .collect()
}

pub fn first(trigger: &Trigger, from: &str) -> Option<DateTime<Utc>> {
    trigger.next_after(utc(from))
}

pub fn err(result: Result<Trigger, TriggerError>) -> String {
    match result {
        Ok(t) => panic!("expected an error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}
