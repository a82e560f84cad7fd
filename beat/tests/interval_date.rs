//! Interval and date triggers, bounds, jitter, preview and (de)serialization.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use std::time::Duration;

use celeriac_beat::trigger::{Schedule, TriggerSpec, parse_duration, preview};
use common::{cron, err, first, next_n, spec, try_spec, utc};
use serde_json::json;

#[test]
fn interval_units_and_every_agree() {
    let a = spec(json!({"type": "interval", "hours": 1, "minutes": 30}));
    let b = spec(json!({"type": "interval", "every": "1h30m"}));
    let from = "2024-01-01T00:10:00Z";
    assert_eq!(next_n(&a, from, 3), next_n(&b, from, 3));
    let c = spec(json!({"type": "interval", "weeks": 1, "days": 1, "seconds": 1}));
    assert_eq!(
        c.next_after(utc("1970-01-01T00:00:00Z")),
        Some(utc("1970-01-09T00:00:01Z"))
    );
}

#[test]
fn interval_anchor_rules() {
    // Default anchor: the Unix epoch, so "1h" fires on the UTC hour.
    let t = spec(json!({"type": "interval", "every": "1h"}));
    assert_eq!(
        next_n(&t, "2024-01-01T00:10:00Z", 2),
        ["2024-01-01T01:00:00+00:00", "2024-01-01T02:00:00+00:00"]
    );
    // Explicit anchor (e.g. the entry's creation time): first fire at the anchor.
    let s = TriggerSpec::from_json(&json!({"type": "interval", "every": "1h"})).unwrap();
    let t = s.compile_with_anchor(utc("2024-01-01T00:10:00Z")).unwrap();
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 2),
        ["2024-01-01T00:10:00+00:00", "2024-01-01T01:10:00+00:00"]
    );
    assert_eq!(
        next_n(&t, "2024-01-01T00:30:00Z", 1),
        ["2024-01-01T01:10:00+00:00"]
    );
    // start_date wins over the anchor and is inclusive.
    let s = TriggerSpec::from_json(&json!({
        "type": "interval", "every": "1h", "start_date": "2024-01-01T00:20:00Z"
    }))
    .unwrap();
    let t = s.compile_with_anchor(utc("2024-01-01T00:10:00Z")).unwrap();
    assert_eq!(
        next_n(&t, "2023-12-01T00:00:00Z", 2),
        ["2024-01-01T00:20:00+00:00", "2024-01-01T01:20:00+00:00"]
    );
    // Same anchor, same answers: deterministic.
    assert_eq!(
        t.next_after(utc("2024-05-05T05:05:05Z")),
        t.next_after(utc("2024-05-05T05:05:05Z"))
    );
}

#[test]
fn interval_sub_second_and_end() {
    let t = spec(json!({
        "type": "interval", "every": "500ms",
        "start_date": "2024-01-01T00:00:00Z", "end_date": "2024-01-01T00:00:01Z"
    }));
    let times: Vec<_> = t.fire_times(utc("2023-12-31T23:59:59Z")).collect();
    assert_eq!(
        times,
        [
            utc("2024-01-01T00:00:00Z"),
            utc("2024-01-01T00:00:00.5Z"),
            utc("2024-01-01T00:00:01Z")
        ]
    );
}

#[test]
fn jitter_is_separate() {
    let t = spec(json!({"type": "interval", "every": "10m", "jitter_seconds": 30}));
    assert_eq!(t.jitter(), Some(Duration::from_secs(30)));
    let fire = t.next_after(utc("2024-01-01T00:01:00Z")).unwrap();
    assert_eq!(fire, utc("2024-01-01T00:10:00Z"));
    // Triggers without jitter have none.
    let c = cron("0 * * * *", "UTC");
    assert_eq!(c.jitter(), None);
}

#[test]
fn interval_errors() {
    let e = |v| err(try_spec(v));
    assert_eq!(
        e(json!({"type": "interval", "every": "1h", "minutes": 5})),
        "every: give either every or weeks/days/hours/minutes/seconds, not both"
    );
    assert!(e(json!({"type": "interval"})).starts_with("every: an interval needs"));
    assert_eq!(
        e(json!({"type": "interval", "seconds": 0})),
        "every: interval must be longer than zero"
    );
    assert_eq!(
        e(json!({"type": "interval", "every": "1y"})),
        "every: invalid duration \"1y\": unknown unit \"y\""
    );
    assert!(
        e(json!({"type": "interval", "every": "1h", "jitter_seconds": -1.0}))
            .starts_with("jitter_seconds:")
    );
    assert_eq!(
        e(json!({"type": "interval", "every": "1h", "jiter_seconds": 5})),
        "interval trigger: unknown key \"jiter_seconds\", did you mean \"jitter_seconds\"?"
    );
    assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
}

#[test]
fn date_trigger_fires_once() {
    let t = spec(json!({"type": "date", "run_at": "2024-06-01T12:00:00+02:00"}));
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 3),
        ["2024-06-01T12:00:00+02:00"]
    );
    assert_eq!(first(&t, "2024-06-01T10:00:00Z"), None);
    assert_eq!(
        first(&t, "2024-06-01T09:59:59.999Z"),
        Some(utc("2024-06-01T10:00:00Z"))
    );
    let t = spec(json!({"type": "date", "run_at": "2024-06-01T10:00:00Z"}));
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 1),
        ["2024-06-01T10:00:00+00:00"]
    );
    assert!(
        err(try_spec(json!({"type": "date", "run_at": "tomorrow"})))
            .starts_with("invalid trigger description")
    );
}

#[test]
fn start_and_end_bounds() {
    let t = spec(json!({
        "type": "cron", "expr": "0 * * * *",
        "start_date": "2024-01-02T10:30:00Z", "end_date": "2024-01-02T13:00:00Z"
    }));
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-02T11:00:00+00:00",
            "2024-01-02T12:00:00+00:00",
            "2024-01-02T13:00:00+00:00"
        ]
    );
    // Start is inclusive when it is a fire time; date-only bounds mean midnight.
    let t = spec(json!({
        "type": "fields", "hour": 0, "timezone": "America/New_York",
        "start_date": "2024-07-04", "end_date": "2024-07-05"
    }));
    assert_eq!(
        next_n(&t, "2024-01-01T00:00:00Z", 5),
        ["2024-07-04T00:00:00-04:00", "2024-07-05T00:00:00-04:00"]
    );
    assert_eq!(
        err(try_spec(
            json!({"type": "cron", "expr": "* * * * *", "start_date": "2024-02-01", "end_date": "2024-01-01"})
        )),
        "start_date (2024-02-01T00:00:00+00:00) is after end_date (2024-01-01T00:00:00+00:00)"
    );
    assert!(
        err(try_spec(
            json!({"type": "cron", "expr": "* * * * *", "start_date": "next tuesday"})
        ))
        .starts_with("start_date: invalid date-time \"next tuesday\"")
    );
}

#[test]
fn preview_lists_local_times() {
    let t = cron("0 9 * * 1", "Europe/Berlin");
    let times: Vec<String> = preview(&t, utc("2024-03-20T00:00:00Z"), 3)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        times,
        [
            "2024-03-25T09:00:00+01:00",
            "2024-04-01T09:00:00+02:00",
            "2024-04-08T09:00:00+02:00"
        ]
    );
    let once = spec(json!({"type": "date", "run_at": "2030-01-01T00:00:00-05:00"}));
    assert_eq!(preview(&once, utc("2024-01-01T00:00:00Z"), 5).len(), 1);
    assert!(preview(&t, utc("2024-01-01T00:00:00Z"), 0).is_empty());
}

#[test]
fn serde_round_trip_of_every_variant() {
    let specs = [
        json!({"type": "cron", "expr": "*/5 * * * *", "timezone": "Europe/Berlin", "start_date": "2024-01-01T00:00:00Z"}),
        json!({"type": "fields", "day": "last fri", "hour": "9", "timezone": "UTC", "end_date": "2030-01-01"}),
        json!({"type": "interval", "every": "1h30m", "jitter_seconds": 2.5, "timezone": "Asia/Tokyo"}),
        json!({"type": "interval", "days": 2, "start_date": "2024-01-01T00:00:00+09:00"}),
        json!({"type": "date", "run_at": "2024-06-01T12:00:00+02:00"}),
    ];
    for value in specs {
        let parsed = TriggerSpec::from_json(&value).unwrap();
        parsed.validate().unwrap();
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back, value);
        let again: TriggerSpec = serde_json::from_value(back).unwrap();
        assert_eq!(again, parsed);
    }
    // Plain serde also rejects unknown keys.
    let plain = serde_json::from_value::<TriggerSpec>(
        json!({"type": "cron", "expr": "* * * * *", "tz": "UTC"}),
    );
    assert!(plain.is_err());
    assert!(
        TriggerSpec::from_json(&json!({"type": "cron", "expr": "61 * * * *"}))
            .unwrap()
            .validate()
            .is_err()
    );
}
