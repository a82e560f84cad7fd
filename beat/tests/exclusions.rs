//! Exclusion calendars (issue #22): a fire time whose local date is excluded
//! is skipped, DST rules and all; schedule files define calendars with
//! dates and `.ics` files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use celeriac_beat::schedule::file_source::{self, check_calendars};
use celeriac_beat::trigger::{Calendars, DateRange, ExcludedDates, Schedule, Trigger, TriggerSpec};
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::json;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn dates(list: &[&str]) -> ExcludedDates {
    ExcludedDates::new(list.iter().map(|s| {
        let r = DateRange::parse(s).unwrap();
        (r.from, r.to)
    }))
}

/// A trigger from JSON naming calendar "off", which excludes `excluded`.
fn trigger(spec: serde_json::Value, excluded: &[&str]) -> Trigger {
    let mut cals = Calendars::new();
    cals.insert("off", dates(excluded));
    let mut spec = spec;
    spec["calendars"] = json!(["off"]);
    TriggerSpec::from_json(&spec)
        .unwrap()
        .compile_in(None, &cals)
        .unwrap()
}

fn local(trigger: &Trigger, from: &str, n: usize) -> Vec<String> {
    trigger
        .fire_times(t(from))
        .take(n)
        .map(|x| trigger.to_local(x).to_rfc3339())
        .collect()
}

#[test]
fn weekdays_at_nine_skip_christmas_on_a_friday() {
    let weekdays = trigger(
        json!({"type": "cron", "expr": "0 9 * * 1-5", "timezone": "America/New_York"}),
        &["2026-12-25"],
    );
    // Thursday 24 December has run; Friday is Christmas: next is Monday.
    assert_eq!(
        local(&weekdays, "2026-12-24T15:00:00Z", 2),
        ["2026-12-28T09:00:00-05:00", "2026-12-29T09:00:00-05:00"]
    );
    assert_eq!(
        weekdays.next_after(t("2026-12-24T15:00:00Z")),
        Some(t("2026-12-28T14:00:00Z"))
    );
}

#[test]
fn a_range_is_skipped_whole() {
    let weekdays = trigger(
        json!({"type": "cron", "expr": "0 9 * * mon-fri", "timezone": "Europe/Berlin"}),
        &["2026-12-24..2027-01-01"],
    );
    assert_eq!(
        local(&weekdays, "2026-12-23T12:00:00Z", 2),
        ["2027-01-04T09:00:00+01:00", "2027-01-05T09:00:00+01:00"]
    );
}

#[test]
fn the_date_is_the_entry_s_local_date() {
    // 01:00 in Tokyo on 25 December is 16:00 UTC on the 24th.
    let tokyo = trigger(
        json!({"type": "cron", "expr": "0 1 * * *", "timezone": "Asia/Tokyo"}),
        &["2026-12-25"],
    );
    assert_eq!(
        tokyo.next_after(t("2026-12-24T00:00:00Z")),
        Some(t("2026-12-25T16:00:00Z"))
    );
}

#[test]
fn excluding_the_day_clocks_change() {
    // Spring forward: 02:30 does not exist on 8 March 2026 in New York; under
    // `cron` it would run at 03:00. With that day excluded it does not run.
    let spring = trigger(
        json!({"type": "cron", "expr": "30 2 * * *", "timezone": "America/New_York"}),
        &["2026-03-08"],
    );
    assert_eq!(
        local(&spring, "2026-03-07T12:00:00Z", 2),
        ["2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    );
    // Fall back under `repeat`: 01:30 happens twice on 1 November; both go.
    let fall = |excluded: &[&str]| {
        trigger(
            json!({"type": "cron", "expr": "30 1 * * *", "timezone": "America/New_York", "dst": "repeat"}),
            excluded,
        )
    };
    assert_eq!(
        local(&fall(&["2026-10-01"]), "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00"]
    );
    assert_eq!(
        local(&fall(&["2026-11-01"]), "2026-10-31T12:00:00Z", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    // A midnight change (Santiago, 6 September 2026: 00:00 -> 01:00): the
    // day after an excluded one starts at 01:00 and its run is not lost.
    let santiago = trigger(
        json!({"type": "cron", "expr": "30 0 * * *", "timezone": "America/Santiago"}),
        &["2026-09-05"],
    );
    assert_eq!(
        local(&santiago, "2026-09-04T12:00:00Z", 1),
        ["2026-09-06T01:00:00-03:00"]
    );
}

#[test]
fn intervals_skip_excluded_dates_too() {
    let every_6h = trigger(
        json!({"type": "interval", "hours": 6, "start_date": "2026-12-24T00:00:00Z"}),
        &["2026-12-25"],
    );
    assert_eq!(
        local(&every_6h, "2026-12-24T12:00:00Z", 2),
        ["2026-12-24T18:00:00+00:00", "2026-12-26T00:00:00+00:00"]
    );
}

#[test]
fn excluding_everything_ends_instead_of_hanging() {
    let all = trigger(
        json!({"type": "cron", "expr": "* * * * * *"}),
        &["1970-01-01..9999-12-31"],
    );
    assert_eq!(all.next_after(t("2026-01-01T00:00:00Z")), None);
    // Every weekday of five years, one range per week: a weekday job
    // resumes in 2031 after skipping 261 ranges, quickly.
    let mut weeks = Vec::new();
    let mut monday = d("2025-12-29");
    while monday < d("2031-01-01") {
        weeks.push((monday, monday + Days::new(4)));
        monday = monday + Days::new(7);
    }
    let mut cals = Calendars::new();
    cals.insert("weekdays", ExcludedDates::new(weeks));
    let spec = TriggerSpec::from_json(
        &json!({"type": "cron", "expr": "0 9 * * 1-5", "calendars": ["weekdays"]}),
    )
    .unwrap();
    let job = spec.compile_in(None, &cals).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        job.next_after(t("2026-01-01T00:00:00Z")),
        Some(t("2031-01-06T09:00:00Z"))
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn names_are_checked_and_date_triggers_refuse_calendars() {
    let mut cals = Calendars::new();
    cals.insert("us-holidays", dates(&["2026-07-03"]));
    let spec = TriggerSpec::from_json(
        &json!({"type": "cron", "expr": "0 9 * * *", "calendars": ["us-holiday"]}),
    )
    .unwrap();
    assert_eq!(
        spec.compile_in(None, &cals).unwrap_err().to_string(),
        "calendars: unknown calendar \"us-holiday\", did you mean \"us-holidays\"?"
    );
    // Without calendars to look names up in, compile refuses too.
    assert!(spec.compile().is_err());
    assert!(spec.validate().is_ok());
    let date = TriggerSpec::from_json(
        &json!({"type": "date", "run_at": "2026-07-03T09:00:00Z", "calendars": ["us-holidays"]}),
    )
    .unwrap_err();
    assert!(
        date.to_string()
            .starts_with("calendars: apply to recurring triggers only"),
        "{date}"
    );
    let fields =
        TriggerSpec::from_json(&json!({"type": "fields", "hour": 9, "calendars": ["us-holidays"]}))
            .unwrap();
    assert_eq!(fields.calendars(), ["us-holidays"]);
    // Stored and read back as JSON, the names stay with the trigger.
    let back = TriggerSpec::from_json(&serde_json::to_value(&fields).unwrap()).unwrap();
    assert_eq!(back, fields);
}

#[test]
fn schedule_files_define_calendars_with_dates_and_ics() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/holidays.ics");
    std::fs::copy(&fixture, dir.path().join("holidays.ics")).unwrap();
    let path = dir.path().join("schedule.toml");
    std::fs::write(
        &path,
        r#"
[calendars.us-holidays]
ics = "holidays.ics"
dates = ["2026-11-26", { date = "2026-12-24", label = "Christmas Eve" }, "2026-07-03..2026-07-04"]

[entries.payroll]
task = "tasks.payroll"
cron = "0 9 * * 1-5"
timezone = "America/New_York"
dst = "repeat"
calendars = ["us-holidays"]
"#,
    )
    .unwrap();
    let file = file_source::load(&path).unwrap();
    let cals = file.calendars();
    let us = cals.get("us-holidays").unwrap();
    for day in [
        "2026-07-03",
        "2026-07-04",
        "2026-11-18",
        "2026-11-19",
        "2026-11-26",
        "2026-12-24",
        "2026-12-25",
        "2026-12-28",
        "2026-12-31",
        "2027-01-01",
        "2028-01-01",
    ] {
        assert!(us.contains(d(day)), "{day}");
    }
    for day in ["2026-11-20", "2026-12-26", "2029-01-01"] {
        assert!(!us.contains(d(day)), "{day}");
    }
    let labels: Vec<Option<&str>> = file
        .calendar_days
        .iter()
        .filter(|c| c.range.from == d("2026-12-24") || c.range.from == d("2026-12-25"))
        .map(|c| c.label.as_deref())
        .collect();
    assert!(labels.contains(&Some("Christmas Eve")));
    assert!(labels.contains(&Some("Christmas Day")));
    let payroll = &file.entries[0];
    let trigger = payroll.compile_in(&cals).unwrap();
    assert_eq!(
        trigger.dst_policy(),
        Some(celeriac_beat::trigger::DstPolicy::Repeat)
    );
    // Wednesday 23 December, then the holidays, the shutdown, New Year.
    assert_eq!(
        local(&trigger, "2026-12-22T15:00:00Z", 2),
        ["2026-12-23T09:00:00-05:00", "2027-01-04T09:00:00-05:00"]
    );
    check_calendars(&file, &Calendars::new(), &path).unwrap();

    // An entry naming a calendar defined nowhere: one line with a hint.
    std::fs::write(
        &path,
        "[calendars.us-holidays]\ndates = [\"2026-12-25\"]\n\n[entries.a]\ntask = \"t\"\ncron = \"0 9 * * *\"\ncalendars = [\"us-holiday\"]\n",
    )
    .unwrap();
    let file = file_source::load(&path).unwrap();
    let err = celeriac_common::cli::one_line(
        &check_calendars(&file, &Calendars::new(), &path).unwrap_err(),
    );
    assert!(
        err.ends_with(
            "entry \"a\": calendars: unknown calendar \"us-holiday\", did you mean \"us-holidays\"?"
        ),
        "{err}"
    );
    // ...unless the database defines it.
    let mut db = Calendars::new();
    db.insert("us-holiday", dates(&["2026-01-01"]));
    check_calendars(&file, &db, &path).unwrap();

    // Bad calendar tables name the calendar and the problem.
    let bad =
        |text: &str| celeriac_common::cli::one_line(&file_source::parse(text, &path).unwrap_err());
    assert!(
        bad("[calendars.x]\ndates = [\"2026-13-01\"]\n")
            .contains("calendar \"x\": dates: invalid date \"2026-13-01\""),
    );
    assert!(bad("[calendars.x]\ndate = [\"2026-12-01\"]\n").contains("did you mean \"dates\"?"));
    assert!(bad("[calendars.x]\nics = \"missing.ics\"\n").contains("ics: cannot read"));
    assert!(bad("[calendars.x]\n").contains("has no dates"));
    assert!(
        bad("[entries.a]\ntask = \"t\"\nat = 2030-01-01T00:00:00Z\ncalendars = [\"x\"]\n")
            .contains("do not apply to a one-shot")
    );
}
