//! The search skips by field instead of scanning minutes: sparse, far and
//! impossible schedules answer quickly, and the compiled form stays small.
//! Time limits are generous (debug build, shared machine); they catch a
//! minute-by-minute scan, which would take seconds to minutes per call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use std::time::{Duration, Instant};

use celeriac_beat::trigger::{Schedule, Trigger};
use chrono::TimeDelta;
use common::{cron, spec, utc};
use serde_json::json;

/// Average time of `next_after` over `n` successive calls from `from`.
fn time_per_call(trigger: &Trigger, from: &str, n: u32) -> Duration {
    let started = Instant::now();
    let mut t = utc(from);
    for _ in 0..n {
        t = match trigger.next_after(t) {
            Some(next) => next,
            None => utc(from) + TimeDelta::days(1),
        };
    }
    started.elapsed() / n
}

#[test]
fn compiled_trigger_is_compact() {
    let size = std::mem::size_of::<Trigger>();
    println!("size_of::<Trigger>() = {size} bytes");
    assert!(size <= 160, "Trigger is {size} bytes");
}

#[test]
fn sparse_and_impossible_schedules_are_fast() {
    let limit = Duration::from_millis(20);
    let cases = [
        ("0 0 29 2 *", "Europe/Berlin"),
        ("0 12 29 2 1", "America/New_York"),
        ("0 0 30 2 *", "Europe/Berlin"),
        ("0 0 31 4 *", "Australia/Sydney"),
        ("0 0 0 1 1 * 2099", "Australia/Lord_Howe"),
        ("30 2 27 10 *", "Europe/Berlin"),
        ("0 0 * * 5#5", "America/Santiago"),
        ("* * * * * *", "Europe/Berlin"),
    ];
    for (expr, zone) in cases {
        let per_call = time_per_call(&cron(expr, zone), "2024-01-01T00:00:00Z", 50);
        println!("{expr:>22} {zone:<20} {per_call:?} per call");
        assert!(per_call < limit, "{expr} in {zone}: {per_call:?} per call");
    }
    let far = spec(json!({"type": "fields", "year": 9999, "timezone": "Europe/Berlin"}));
    let per_call = time_per_call(&far, "2024-01-01T00:00:00Z", 20);
    println!("year 9999 (fields)                          {per_call:?} per call");
    assert!(per_call < limit);
    assert_eq!(
        far.next_after(utc("2024-01-01T00:00:00Z")),
        Some(utc("9998-12-31T23:00:00Z"))
    );
}

#[test]
fn many_compiled_triggers() {
    let started = Instant::now();
    let triggers: Vec<Trigger> = (0..10_000)
        .map(|i| cron(&format!("{} {} * * *", i % 60, i % 24), "Europe/Berlin"))
        .collect();
    let compiled = started.elapsed();
    let started = Instant::now();
    let from = utc("2024-10-27T00:30:00Z");
    let fired = triggers.iter().filter_map(|t| t.next_after(from)).count();
    let evaluated = started.elapsed();
    println!("10k triggers: compile {compiled:?}, next_after {evaluated:?}");
    assert_eq!(fired, 10_000);
    assert!(evaluated < Duration::from_secs(5));
}
