//! The default `dst = "cron"` policy, as Vixie cron and cronie do it: when
//! the clock goes back, a fixed-hour entry runs once (first pass) and a
//! wildcard-hour entry runs by real time (both passes); when it jumps forward,
//! a fixed-hour entry whose time was skipped runs once, at the jump, and a
//! wildcard-hour entry skips the missing times.
//!
//! 2026 transitions: America/New_York 03-08 02:00→03:00 and 11-01
//! 02:00→01:00; Europe/Berlin 03-29 02:00→03:00 and 10-25 03:00→02:00;
//! Australia/Lord_Howe 04-05 02:00→01:30 and 10-04 02:00→02:30.

use celeriac_beat::trigger::{DstPolicy, TriggerSpec, preview};
use serde_json::json;

use super::{repeat, with_policy};
use crate::common::{cron, err, next_n, spec, try_spec, utc};

#[test]
fn the_issue_example_runs_once() {
    // celeriac-beat preview --cron "30 1 * * *" --tz America/New_York
    //   --from 2026-10-31T12:00:00Z --count 3
    let t = cron("30 1 * * *", "America/New_York");
    let shown: Vec<String> = preview(&t, utc("2026-10-31T12:00:00Z"), 3)
        .iter()
        .map(|t| t.to_rfc3339())
        .collect();
    assert_eq!(
        shown,
        [
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:30:00-05:00",
            "2026-11-03T01:30:00-05:00"
        ]
    );
    // Today's behaviour stays available.
    let t = repeat("30 1 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-10-31T12:00:00Z", 3),
        [
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-02T01:30:00-05:00"
        ]
    );
}

#[test]
fn new_york_fall_back() {
    // A wildcard hour follows real time: 01:00 happens twice.
    let t = cron("0 * * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-11-01T04:30:00Z", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
    // A fixed hour, however many minutes: first pass only.
    let t = cron("*/30 1 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-10-31T12:00:00Z", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-02T01:00:00-05:00"
        ]
    );
    // A range and a list are fixed hours too.
    let t = cron("45 0-2 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-11-01T04:00:00Z", 4),
        [
            "2026-11-01T00:45:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T02:45:00-05:00",
            "2026-11-02T00:45:00-05:00"
        ]
    );
    // A beat starting during the second pass does not run it again.
    let t = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-11-01T06:10:00Z", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    // Nor does one resuming from the first-pass run.
    assert_eq!(
        next_n(&t, "2026-11-01T05:30:00Z", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn berlin_fall_back() {
    let t = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    let t = cron("*/15 * * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-10-25T00:40:00Z", 4),
        [
            "2026-10-25T02:45:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:15:00+01:00",
            "2026-10-25T02:30:00+01:00"
        ]
    );
    let t = cron("0 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:00:00+02:00", "2026-10-26T02:00:00+01:00"]
    );
}

#[test]
fn lord_howe_half_hour_fall_back() {
    // 2026-04-05 02:00 (+11) -> 01:30 (+10:30): 01:30-02:00 happens twice.
    let t = cron("45 1 * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2026-04-04T00:00:00Z", 2),
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
    );
    let t = cron("*/15 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2026-04-04T14:40:00Z", 4),
        [
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30"
        ]
    );
}

#[test]
fn spring_forward_runs_once_right_after_the_jump() {
    let t = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    let t = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    // Several skipped times collapse into one run.
    let t = cron("*/15 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:00:00+02:00",
            "2026-03-30T02:15:00+02:00"
        ]
    );
    // A skipped time and a real one on the same instant: one run.
    let t = cron("0 2,3 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]
    );
    let t = cron("30 1-3 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-28T22:00:00Z", 4),
        [
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T01:30:00+02:00"
        ]
    );
    // Once the jump has passed, the catch-up run is not repeated.
    let t = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-29T01:00:00Z", 1),
        ["2026-03-30T02:30:00+02:00"]
    );
}

#[test]
fn lord_howe_half_hour_spring_forward() {
    // 2026-10-04 02:00 (+10:30) -> 02:30 (+11): the catch-up is at the jump.
    let t = cron("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2026-10-03T00:00:00Z", 2),
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
    // A wildcard hour skips 02:00, which did not happen.
    let t = cron("0 * * * *", "Australia/Lord_Howe");
    assert_eq!(
        next_n(&t, "2026-10-03T14:00:00Z", 3),
        [
            "2026-10-04T01:00:00+10:30",
            "2026-10-04T03:00:00+11:00",
            "2026-10-04T04:00:00+11:00"
        ]
    );
}

#[test]
fn wildcard_hours_skip_missing_times_without_catch_up() {
    let t = cron("*/20 * * * *", "Europe/Berlin");
    assert_eq!(
        next_n(&t, "2026-03-29T00:30:00Z", 4),
        [
            "2026-03-29T01:40:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:20:00+02:00",
            "2026-03-29T03:40:00+02:00"
        ]
    );
    let t = cron("15 */1 * * *", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-03-08T06:00:00Z", 2),
        ["2026-03-08T01:15:00-05:00", "2026-03-08T03:15:00-04:00"]
    );
}

#[test]
fn santiago_midnight_transitions() {
    // 2026-09-06 00:00 (-04) -> 01:00 (-03): midnight runs at the jump.
    let t = cron("0 0 * * *", "America/Santiago");
    assert_eq!(
        next_n(&t, "2026-09-05T12:00:00Z", 2),
        ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]
    );
    // 2026-04-05 00:00 (-03) -> 04-04 23:00 (-04): 23:30 runs once.
    let t = cron("30 23 * * *", "America/Santiago");
    assert_eq!(
        next_n(&t, "2026-04-04T12:00:00Z", 2),
        ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]
    );
}

#[test]
fn zones_without_a_change_are_unaffected() {
    for tz in ["UTC", "Asia/Kolkata"] {
        let t = cron("30 1 * * *", tz);
        let offset = if tz == "UTC" { "+00:00" } else { "+05:30" };
        assert_eq!(
            next_n(&t, "2026-10-31T12:00:00Z", 2),
            [
                format!("2026-11-01T01:30:00{offset}"),
                format!("2026-11-02T01:30:00{offset}")
            ]
        );
    }
}

#[test]
fn fields_follow_the_same_rule() {
    let fields = |extra: serde_json::Value| {
        let mut spec_json = json!({"type": "fields", "timezone": "America/New_York"});
        for (k, v) in extra.as_object().unwrap() {
            spec_json[k] = v.clone();
        }
        spec(spec_json)
    };
    // Fixed hour: once on fall back.
    let t = fields(json!({"hour": 1, "minute": 30}));
    assert_eq!(
        next_n(&t, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    let t = fields(json!({"hour": "1-2", "minute": "*/30"}));
    assert_eq!(
        next_n(&t, "2026-11-01T04:30:00Z", 4),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T02:00:00-05:00",
            "2026-11-01T02:30:00-05:00"
        ]
    );
    // Hour left out and filled as `*`, or given as `*/1`: both passes.
    for t in [
        fields(json!({"minute": 0})),
        fields(json!({"hour": "*/1", "minute": 0})),
        fields(json!({"hour": "*", "minute": "0"})),
    ] {
        assert_eq!(
            next_n(&t, "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00"
            ]
        );
    }
    // Hour left out but filled with 0 (nothing less significant given): fixed.
    let t = fields(json!({"day": 1}));
    assert_eq!(
        next_n(&t, "2026-10-31T12:00:00Z", 1),
        ["2026-11-01T00:00:00-04:00"]
    );
    // Spring forward: one run at the jump, collapsed.
    for t in [
        fields(json!({"hour": 2, "minute": 30})),
        fields(json!({"hour": 2, "minute": "*/15"})),
    ] {
        assert_eq!(
            next_n(&t, "2026-03-07T12:00:00Z", 1),
            ["2026-03-08T03:00:00-04:00"]
        );
    }
    // A wildcard hour has no catch-up.
    let t = fields(json!({"minute": 30}));
    assert_eq!(
        next_n(&t, "2026-03-08T06:00:00Z", 2),
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"]
    );
    // Berlin, as fields.
    let t = spec(json!({"type": "fields", "hour": 2, "minute": 30, "timezone": "Europe/Berlin"}));
    assert_eq!(
        next_n(&t, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    assert_eq!(
        next_n(&t, "2026-03-28T12:00:00Z", 1),
        ["2026-03-29T03:00:00+02:00"]
    );
}

#[test]
fn nicknames_are_classified_by_their_hour() {
    // @hourly = `0 * * * *` (wildcard), @daily = `0 0 * * *` (fixed).
    let t = cron("@hourly", "America/New_York");
    assert_eq!(
        next_n(&t, "2026-11-01T05:30:00Z", 2),
        ["2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
    );
    let t = cron("@daily", "America/Santiago");
    assert_eq!(
        next_n(&t, "2026-09-05T12:00:00Z", 1),
        ["2026-09-06T01:00:00-03:00"]
    );
}

#[test]
fn the_policy_is_part_of_the_spec() {
    // Absent means cron, and stays absent when stored.
    let s = TriggerSpec::from_json(&json!({"type": "cron", "expr": "30 1 * * *"})).unwrap();
    assert_eq!(s.compile().unwrap().dst_policy(), Some(DstPolicy::Cron));
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({"type": "cron", "expr": "30 1 * * *"})
    );
    let stored = json!({"type": "fields", "hour": "1", "dst": "repeat"});
    let s = TriggerSpec::from_json(&stored).unwrap();
    assert_eq!(s.compile().unwrap().dst_policy(), Some(DstPolicy::Repeat));
    assert_eq!(serde_json::to_value(&s).unwrap(), stored);
    // Written as TOML (schedule files).
    let s: TriggerSpec =
        toml::from_str("type = \"cron\"\nexpr = \"30 1 * * *\"\ndst = \"cron\"\n").unwrap();
    assert_eq!(s.compile().unwrap().dst_policy(), Some(DstPolicy::Cron));
    // Same trigger as the helper.
    assert_eq!(
        with_policy("30 1 * * *", "America/New_York", DstPolicy::Cron),
        cron("30 1 * * *", "America/New_York")
    );
    // Interval and date triggers have none.
    let t = spec(json!({"type": "interval", "every": "1h"}));
    assert_eq!(t.dst_policy(), None);
}

#[test]
fn bad_policies_are_explained() {
    assert_eq!(
        err(try_spec(
            json!({"type": "cron", "expr": "0 1 * * *", "dst": "repaet"})
        )),
        "dst: unknown policy \"repaet\", did you mean \"repeat\"?"
    );
    assert_eq!(
        err(try_spec(json!({"type": "fields", "hour": 1, "dst": 2}))),
        "dst: expected \"cron\" or \"repeat\", got 2"
    );
    assert_eq!(
        err(try_spec(
            json!({"type": "interval", "every": "1h", "dst": "cron"})
        )),
        "dst: applies to cron and fields triggers only \
         (interval triggers count elapsed time, unaffected by clock changes)"
    );
    assert_eq!(
        err(try_spec(
            json!({"type": "date", "run_at": "2026-11-01T01:30:00-04:00", "dst": "repeat"})
        )),
        "dst: applies to cron and fields triggers only (date triggers fire at one fixed instant)"
    );
    // A near miss of the key itself.
    assert_eq!(
        err(try_spec(
            json!({"type": "cron", "expr": "0 1 * * *", "dts": "cron"})
        )),
        "cron trigger: unknown key \"dts\", did you mean \"dst\"?"
    );
}

#[test]
fn intervals_count_elapsed_time() {
    let t = spec(json!({
        "type": "interval", "every": "1h", "timezone": "America/New_York",
        "start_date": "2026-11-01T00:30:00-04:00"
    }));
    assert_eq!(
        next_n(&t, "2026-11-01T04:00:00Z", 4),
        [
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:30:00-05:00"
        ]
    );
}
