//! The `dst = "repeat"` policy (APScheduler 3.x): both passes of a repeated
//! wall time fire, and a nonexistent one fires shifted forward by the gap.

use celeriac_beat::trigger::{DstPolicy, TriggerSpec};
use serde_json::json;

use super::repeat;
use crate::common::{next_n, spec, utc};

#[test]
fn berlin_spring_forward_shifts_by_the_gap() {
    // 2024-03-31: 02:00 CET -> 03:00 CEST.
    let t = repeat("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-03-30T12:00:00Z", 3),
        [
            "2024-03-31T03:30:00+02:00",
            "2024-04-01T02:30:00+02:00",
            "2024-04-02T02:30:00+02:00"
        ]
    );
    let t = repeat("0 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-03-30T12:00:00Z", 1),
        ["2024-03-31T03:00:00+02:00"]
    );
    // Two wall times on one instant fire once.
    let t = repeat("30 1-3 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-03-30T22:00:00Z", 3),
        [
            "2024-03-31T01:30:00+01:00",
            "2024-03-31T03:30:00+02:00",
            "2024-04-01T01:30:00+02:00"
        ]
    );
    // Every nonexistent run still happens, an hour late: the count is kept.
    let t = repeat("*/15 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-03-30T12:00:00Z", 4),
        [
            "2024-03-31T03:00:00+02:00",
            "2024-03-31T03:15:00+02:00",
            "2024-03-31T03:30:00+02:00",
            "2024-03-31T03:45:00+02:00"
        ]
    );
    // Same rule for fields.
    let t = spec(
        json!({"type": "fields", "hour": 2, "minute": 30, "timezone": "Europe/Berlin", "dst": "repeat"}),
    );
    assert_eq!(
        next_n(&t, "2024-03-30T12:00:00Z", 1),
        ["2024-03-31T03:30:00+02:00"]
    );
}

#[test]
fn berlin_fall_back_fires_in_both_passes() {
    // 2024-10-27: 03:00 CEST -> 02:00 CET.
    let t = repeat("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-10-26T12:00:00Z", 3),
        [
            "2024-10-27T02:30:00+02:00",
            "2024-10-27T02:30:00+01:00",
            "2024-10-28T02:30:00+01:00"
        ]
    );
    let t = repeat("*/15 * * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-10-27T00:40:00Z", 4),
        [
            "2024-10-27T02:45:00+02:00",
            "2024-10-27T02:00:00+01:00",
            "2024-10-27T02:15:00+01:00",
            "2024-10-27T02:30:00+01:00"
        ]
    );
    // Starting inside the second pass only gives second-pass fires.
    let t = repeat("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-10-27T01:10:00Z", 1),
        ["2024-10-27T02:30:00+01:00"]
    );
    // Starting in the first pass after 02:30 still catches the second 02:30.
    assert_eq!(
        next_n(&t, "2024-10-27T00:45:00Z", 1),
        ["2024-10-27T02:30:00+01:00"]
    );
}

#[test]
fn new_york() {
    let t = repeat("30 2 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2024-03-09T12:00:00Z", 2),
        ["2024-03-10T03:30:00-04:00", "2024-03-11T02:30:00-04:00"]
    );
    let t = repeat("30 1 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2024-11-02T12:00:00Z", 3),
        [
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-04T01:30:00-05:00"
        ]
    );
}

#[test]
fn sydney_southern_hemisphere() {
    // 2024-04-07 03:00 AEDT -> 02:00 AEST; 2024-10-06 02:00 AEST -> 03:00 AEDT.
    let t = repeat("30 2 * * *", "Australia/Sydney");
    assert_eq!(
        next_n(&t, "2024-04-06T00:00:00Z", 3),
        [
            "2024-04-07T02:30:00+11:00",
            "2024-04-07T02:30:00+10:00",
            "2024-04-08T02:30:00+10:00"
        ]
    );
    assert_eq!(
        next_n(&t, "2024-10-05T00:00:00Z", 2),
        ["2024-10-06T03:30:00+11:00", "2024-10-07T02:30:00+11:00"]
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    // 2024-10-06 02:00 LHST (+10:30) -> 02:30 LHDT (+11).
    let t = repeat("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2024-10-05T00:00:00Z", 2),
        ["2024-10-06T02:45:00+11:00", "2024-10-07T02:15:00+11:00"]
    );
    let t = repeat("0 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2024-10-05T14:00:00Z", 3),
        [
            "2024-10-06T01:00:00+10:30",
            "2024-10-06T02:30:00+11:00",
            "2024-10-06T03:00:00+11:00"
        ]
    );
    // 2024-04-07 02:00 LHDT -> 01:30 LHST: 01:45 happens twice, 30 minutes apart.
    let t = repeat("45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2024-04-06T12:00:00Z", 2),
        ["2024-04-07T01:45:00+11:00", "2024-04-07T01:45:00+10:30"]
    );
}

#[test]
fn santiago_midnight_transitions() {
    // 2024-09-08 00:00 (-04) -> 01:00 (-03): midnight does not exist.
    let t = repeat("0 0 * * *", "America/Santiago");
    assert_eq!(
        next_n(&t, "2024-09-07T12:00:00Z", 2),
        ["2024-09-08T01:00:00-03:00", "2024-09-09T00:00:00-03:00"]
    );
    // 2024-04-07 00:00 (-03) -> 2024-04-06 23:00 (-04): 23:30 happens twice.
    let t = repeat("30 23 * * *", "America/Santiago");
    assert_eq!(
        next_n(&t, "2024-04-06T12:00:00Z", 3),
        [
            "2024-04-06T23:30:00-03:00",
            "2024-04-06T23:30:00-04:00",
            "2024-04-07T23:30:00-04:00"
        ]
    );
}

#[test]
fn yearly_schedules_keep_the_right_offset() {
    // 27 October 02:30: the fall-back day in 2024 (twice), a plain CET day in 2025.
    let t = repeat("30 2 27 10 *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 3),
        [
            "2024-10-27T02:30:00+02:00",
            "2024-10-27T02:30:00+01:00",
            "2025-10-27T02:30:00+01:00"
        ]
    );
    let t = repeat("0 12 29 2 *", "America/New_York");
    assert_eq!(
        next_n(&t, "2024-03-01T00:00:00Z", 2),
        ["2028-02-29T12:00:00-05:00", "2032-02-29T12:00:00-05:00"]
    );
    let t = repeat("0 12 1 7 *", "Australia/Sydney");
    assert_eq!(
        next_n(&t, "2024-07-02T00:00:00Z", 2),
        ["2025-07-01T12:00:00+10:00", "2026-07-01T12:00:00+10:00"]
    );
}

#[test]
fn naive_bounds_use_the_same_rules() {
    // A naive start inside the gap resolves like a schedule: shifted forward.
    let t = spec(json!({
        "type": "cron", "expr": "*/15 * * * *", "timezone": "Europe/Berlin", "dst": "repeat",
        "start_date": "2024-03-31 02:30:00", "end_date": "2024-03-31T04:00"
    }));
    assert_eq!(t.start_date(), Some(utc("2024-03-31T01:30:00Z")));
    assert_eq!(
        next_n(&t, "2024-03-30T00:00:00Z", 5),
        [
            "2024-03-31T03:30:00+02:00",
            "2024-03-31T03:45:00+02:00",
            "2024-03-31T04:00:00+02:00"
        ]
    );
    // An ambiguous naive bound takes the first occurrence.
    let t = spec(json!({
        "type": "fields", "minute": 0, "timezone": "Europe/Berlin", "dst": "repeat",
        "start_date": "2024-10-27T02:00"
    }));
    assert_eq!(t.start_date(), Some(utc("2024-10-27T00:00:00Z")));
}

#[test]
fn intervals_count_elapsed_time_across_dst() {
    let t = spec(json!({
        "type": "interval", "every": "1d", "timezone": "Europe/Berlin",
        "start_date": "2024-03-30T12:00:00+01:00"
    }));
    assert_eq!(
        next_n(&t, "2024-03-30T00:00:00Z", 2),
        ["2024-03-30T12:00:00+01:00", "2024-03-31T13:00:00+02:00"]
    );
}

#[test]
fn spec_roundtrip_keeps_timezone() {
    let s = TriggerSpec::Cron {
        expr: "0 9 * * mon-fri".into(),
        timezone: Some("Asia/Kolkata".into()),
        start_date: None,
        end_date: None,
        dst: Some(DstPolicy::Repeat),
        calendars: Vec::new(),
    };
    let t = s.compile().unwrap();
    assert_eq!(t.timezone(), chrono_tz::Asia::Kolkata);
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 1),
        ["2024-01-01T09:00:00+05:30"]
    );
}
