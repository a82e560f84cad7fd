//! Hand-written tests for APScheduler-style fields (UTC unless noted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use celeriac_beat::trigger::TriggerSpec;
use common::{err, first, next_naive, spec, try_spec};
use serde_json::{Value, json};

fn fields(mut v: Value) -> celeriac_beat::trigger::Trigger {
    v["type"] = json!("fields");
    spec(v)
}

fn fields_err(mut v: Value) -> String {
    v["type"] = json!("fields");
    err(try_spec(v))
}

#[test]
fn defaulting_rules() {
    let from = "2024-01-01T00:00:00Z";
    // Less significant fields than the last given default to their minimum.
    assert_eq!(
        next_naive(&fields(json!({"hour": 2})), from, 2),
        ["2024-01-01T02:00:00", "2024-01-02T02:00:00"]
    );
    assert_eq!(
        next_naive(&fields(json!({"month": 6})), from, 2),
        ["2024-06-01T00:00:00", "2025-06-01T00:00:00"]
    );
    // week and day_of_week default to `*`, the time fields to 0.
    assert_eq!(
        next_naive(&fields(json!({"day_of_week": "mon"})), from, 2),
        ["2024-01-08T00:00:00", "2024-01-15T00:00:00"]
    );
    // More significant fields default to `*`.
    assert_eq!(
        next_naive(&fields(json!({"minute": "*/30"})), from, 3),
        [
            "2024-01-01T00:30:00",
            "2024-01-01T01:00:00",
            "2024-01-01T01:30:00"
        ]
    );
    assert_eq!(
        next_naive(&fields(json!({"second": 5})), from, 2),
        ["2024-01-01T00:00:05", "2024-01-01T00:01:05"]
    );
    // No field at all: every second.
    assert_eq!(
        next_naive(&fields(json!({})), from, 2),
        ["2024-01-01T00:00:01", "2024-01-01T00:00:02"]
    );
    // A year alone fires once, on 1 January at midnight.
    let t = fields(json!({"year": 2025}));
    assert_eq!(next_naive(&t, from, 3), ["2025-01-01T00:00:00"]);
    // A week alone: every day of that ISO week at midnight.
    let t = fields(json!({"week": 1}));
    assert_eq!(
        next_naive(&t, "2024-12-01T00:00:00Z", 2),
        ["2024-12-30T00:00:00", "2024-12-31T00:00:00"]
    );
}

#[test]
fn expressions() {
    let from = "2024-01-01T00:00:00Z";
    let t = fields(json!({"minute": "5/20"}));
    assert_eq!(
        next_naive(&t, from, 4),
        [
            "2024-01-01T00:05:00",
            "2024-01-01T00:25:00",
            "2024-01-01T00:45:00",
            "2024-01-01T01:05:00"
        ]
    );
    let t = fields(json!({"hour": "9-17/4", "minute": "0,30"}));
    assert_eq!(
        next_naive(&t, from, 4),
        [
            "2024-01-01T09:00:00",
            "2024-01-01T09:30:00",
            "2024-01-01T13:00:00",
            "2024-01-01T13:30:00"
        ]
    );
    let t = fields(json!({"month": "jan-mar", "day": 1}));
    assert_eq!(
        next_naive(&t, from, 3),
        [
            "2024-02-01T00:00:00",
            "2024-03-01T00:00:00",
            "2025-01-01T00:00:00"
        ]
    );
    // day_of_week numbers: 0 = Monday.
    assert_eq!(
        next_naive(&fields(json!({"day_of_week": 0})), from, 1),
        ["2024-01-08T00:00:00"]
    );
    let t = fields(json!({"day_of_week": "MON-Fri", "hour": 9}));
    assert_eq!(
        next_naive(&t, "2024-01-05T10:00:00Z", 1),
        ["2024-01-08T09:00:00"]
    );
    let t = fields(json!({"day_of_week": "mon , fri"}));
    assert_eq!(
        next_naive(&t, from, 2),
        ["2024-01-05T00:00:00", "2024-01-08T00:00:00"]
    );
    // `*/2` on day_of_week counts from Monday: mon, wed, fri, sun.
    let t = fields(json!({"day_of_week": "*/2"}));
    assert_eq!(
        next_naive(&t, from, 4),
        [
            "2024-01-03T00:00:00",
            "2024-01-05T00:00:00",
            "2024-01-07T00:00:00",
            "2024-01-08T00:00:00"
        ]
    );
}

#[test]
fn day_positions() {
    let from = "2024-01-01T00:00:00Z";
    let days = |v: Value, n| -> Vec<String> {
        next_naive(&fields(v), from, n)
            .into_iter()
            .map(|s| s[..10].to_string())
            .collect()
    };
    assert_eq!(
        days(json!({"day": "3rd fri"}), 3),
        ["2024-01-19", "2024-02-16", "2024-03-15"]
    );
    assert_eq!(
        days(json!({"day": "last fri"}), 3),
        ["2024-01-26", "2024-02-23", "2024-03-29"]
    );
    assert_eq!(
        days(json!({"day": "LAST"}), 3),
        ["2024-01-31", "2024-02-29", "2024-03-31"]
    );
    assert_eq!(
        days(json!({"day": "5th fri"}), 2),
        ["2024-03-29", "2024-05-31"]
    );
    assert_eq!(
        days(json!({"day": "1st mon,last sun"}), 4),
        ["2024-01-28", "2024-02-05", "2024-02-25", "2024-03-04"]
    );
    assert_eq!(
        days(json!({"day": "2nd  tue", "hour": 10}), 1),
        ["2024-01-09"]
    );
}

#[test]
fn day_fields_are_anded() {
    // Friday the 13th.
    let t = fields(json!({"day": 13, "day_of_week": "fri"}));
    let got: Vec<String> = next_naive(&t, "2024-01-01T00:00:00Z", 3)
        .into_iter()
        .map(|s| s[..10].to_string())
        .collect();
    assert_eq!(got, ["2024-09-13", "2024-12-13", "2025-06-13"]);
    // 29 February that is a Thursday: 2024, then 2052.
    let t = fields(json!({"month": 2, "day": 29, "day_of_week": "thu"}));
    assert_eq!(
        next_naive(&t, "2024-03-01T00:00:00Z", 1),
        ["2052-02-29T00:00:00"]
    );
}

#[test]
fn iso_weeks() {
    // ISO week 1 of 2025 starts on Monday 2024-12-30.
    let t = fields(json!({"week": 1, "day_of_week": "mon"}));
    assert_eq!(
        next_naive(&t, "2024-12-01T00:00:00Z", 2),
        ["2024-12-30T00:00:00", "2025-12-29T00:00:00"]
    );
    // Week 52 of 2024 ends on Sunday 2024-12-29.
    let t = fields(json!({"week": 52, "day_of_week": "sun"}));
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 1),
        ["2024-12-29T00:00:00"]
    );
    // Week 53 exists in 2020 and 2026 (years starting on Thursday), not 2024.
    let t = fields(json!({"week": 53, "day_of_week": "mon"}));
    assert_eq!(
        next_naive(&t, "2020-01-01T00:00:00Z", 2),
        ["2020-12-28T00:00:00", "2026-12-28T00:00:00"]
    );
    // Days of week 53 spill into January of the next year.
    let t = fields(json!({"week": 53, "day_of_week": "sun"}));
    assert_eq!(
        next_naive(&t, "2020-06-01T00:00:00Z", 1),
        ["2021-01-03T00:00:00"]
    );
    // Every other ISO week (1, 3, 5, ...) on Monday.
    let t = fields(json!({"week": "*/2", "day_of_week": "mon"}));
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 2),
        ["2024-01-15T00:00:00", "2024-01-29T00:00:00"]
    );
}

#[test]
fn years() {
    let t = fields(json!({"year": "2024-2026", "month": 1, "day": 1}));
    assert_eq!(
        next_naive(&t, "2023-06-01T00:00:00Z", 4),
        [
            "2024-01-01T00:00:00",
            "2025-01-01T00:00:00",
            "2026-01-01T00:00:00"
        ]
    );
    // `*/4` counts from 1970 (APScheduler's minimum), so it never hits a leap year.
    let t = fields(json!({"year": "*/4", "month": 2, "day": 29}));
    assert_eq!(first(&t, "2024-01-01T00:00:00Z"), None);
    let t = fields(json!({"year": 9999, "month": 12, "day": 31}));
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 1),
        ["9999-12-31T00:00:00"]
    );
}

#[test]
fn error_messages() {
    assert_eq!(
        fields_err(json!({"minute": 60})),
        "minute: value 60 out of range 0-59"
    );
    assert_eq!(
        fields_err(json!({"day_of_week": 7})),
        "day_of_week: value 7 out of range 0-6"
    );
    assert_eq!(
        fields_err(json!({"week": 54})),
        "week: value 54 out of range 1-53"
    );
    assert_eq!(
        fields_err(json!({"year": 1969})),
        "year: value 1969 out of range 1970-9999"
    );
    assert_eq!(
        fields_err(json!({"minute": "*/60"})),
        "minute: step 60 is larger than the span 59 of \"*\""
    );
    assert_eq!(
        fields_err(json!({"minute": "*/0"})),
        "minute: step must be at least 1"
    );
    assert_eq!(
        fields_err(json!({"hour": "5-3"})),
        "hour: range \"5-3\" goes backwards"
    );
    assert_eq!(
        fields_err(json!({"day_of_week": "fry"})),
        "day_of_week: unknown name \"fry\", did you mean \"fri\"?"
    );
    assert_eq!(
        fields_err(json!({"month": "jan/2"})),
        "month: \"jan/2\": a step cannot follow a name"
    );
    assert_eq!(
        fields_err(json!({"day": "last fry"})),
        "day: unknown name \"fry\", did you mean \"fri\"?"
    );
    assert_eq!(
        fields_err(json!({"day": "lats fri"})),
        "day: unknown position in \"lats fri\", did you mean \"last\"?"
    );
    assert_eq!(
        fields_err(json!({"hour": "1,,2"})),
        "hour: empty item in list"
    );
    assert_eq!(
        fields_err(json!({"minuet": 5})),
        "fields trigger: unknown key \"minuet\", did you mean \"minute\"?"
    );
    assert_eq!(
        err(try_spec(json!({"type": "feilds", "hour": 1}))),
        "type: unknown trigger type \"feilds\", did you mean \"fields\"?"
    );
    assert!(
        err(try_spec(json!({"type": "fields", "hour": [1]})))
            .starts_with("invalid trigger description:")
    );
}

#[test]
fn numbers_and_strings_round_trip() {
    let from_ints =
        TriggerSpec::from_json(&json!({"type": "fields", "hour": 2, "minute": "30"})).unwrap();
    let TriggerSpec::Fields { hour, minute, .. } = &from_ints else {
        panic!("not fields")
    };
    assert_eq!(
        (hour.as_deref(), minute.as_deref()),
        (Some("2"), Some("30"))
    );
    let json = serde_json::to_value(&from_ints).unwrap();
    assert_eq!(json, json!({"type": "fields", "hour": "2", "minute": "30"}));
    let back: TriggerSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, from_ints);
}
