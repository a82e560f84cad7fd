//! Cross-checks celeriac's triggers against fixtures generated from the
//! reference implementations (croniter 7.0.0 for crontab strings, APScheduler
//! 3.11.3 for fields) by `scripts/gen_trigger_fixtures.py`. The references
//! fire repeated wall times twice, so the triggers are compiled with
//! `dst = "repeat"` (the default `cron` policy is checked in `dst.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use celeriac_beat::trigger::{DstPolicy, Schedule, Trigger, TriggerSpec};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is json")
}

/// Runs every case; returns descriptions of mismatches.
fn check(fixture: &Value, compile: impl Fn(&Value) -> Trigger) -> Vec<String> {
    let mut failures = Vec::new();
    for case in fixture["cases"].as_array().expect("cases") {
        let trigger = compile(case);
        let mut cursor: DateTime<Utc> = case["start"].as_str().unwrap().parse().unwrap();
        let expected: Vec<&str> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            match trigger.next_after(cursor) {
                Some(next) => {
                    got.push(trigger.to_local(next).to_rfc3339());
                    cursor = next;
                }
                None => break,
            }
        }
        let mut ok = got == expected;
        if ok && case["complete"].as_bool() == Some(true) {
            ok = trigger.next_after(cursor).is_none();
            if !ok {
                got.push("<more fires where the reference has none>".into());
            }
        }
        if !ok {
            failures.push(format!("{case}\n    got {got:?}"));
        }
    }
    failures
}

fn report(name: &str, fixture: &Value, failures: &[String]) {
    let cases = fixture["cases"].as_array().map_or(0, Vec::len);
    let excluded = fixture["excluded"].as_array().map_or(0, Vec::len);
    println!(
        "{name}: {} of {cases} reference cases match, {excluded} excluded (see fixture)",
        cases - failures.len()
    );
    for failure in failures.iter().take(20) {
        println!("MISMATCH {failure}");
    }
    assert!(
        failures.is_empty(),
        "{} {name} cases differ",
        failures.len()
    );
}

#[test]
fn crontab_strings_match_croniter() {
    let fixture = load("cron_reference.json");
    assert!(fixture["cases"].as_array().unwrap().len() >= 200);
    let failures = check(&fixture, |case| {
        TriggerSpec::Cron {
            expr: case["expr"].as_str().unwrap().to_string(),
            timezone: Some(case["timezone"].as_str().unwrap().to_string()),
            start_date: None,
            end_date: None,
            dst: Some(DstPolicy::Repeat),
            calendars: Vec::new(),
        }
        .compile()
        .unwrap_or_else(|e| panic!("{case}: {e}"))
    });
    report("cron", &fixture, &failures);
}

#[test]
fn fields_match_apscheduler() {
    let fixture = load("fields_reference.json");
    assert!(fixture["cases"].as_array().unwrap().len() >= 200);
    let failures = check(&fixture, |case| {
        let mut spec = case["fields"].as_object().unwrap().clone();
        spec.insert("type".into(), json!("fields"));
        spec.insert("timezone".into(), case["timezone"].clone());
        spec.insert("dst".into(), json!("repeat"));
        for key in ["start_date", "end_date"] {
            if let Some(v) = case.get(key) {
                spec.insert(key.into(), v.clone());
            }
        }
        TriggerSpec::from_json(&Value::Object(spec))
            .and_then(|s| s.compile())
            .unwrap_or_else(|e| panic!("{case}: {e}"))
    });
    report("fields", &fixture, &failures);
}
