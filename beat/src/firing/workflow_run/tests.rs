use super::*;
use crate::firing::dispatch::task_id;
use crate::schedule::entry::Entry;
use crate::schedule::workflow::parse;
use crate::trigger::TriggerSpec;
use chrono::{DateTime, Utc};

fn run_at(at: &str) -> RunMessage {
    let at: DateTime<Utc> = at.parse().expect("time");
    let flow = parse(&json!({"chain": [
        {"task": "a", "options": {"task_id": "fixed"}},
        {"group": ["b", {"task": "c", "options": {"queue": "own"}}]},
        "d",
    ]}))
    .expect("workflow");
    let trigger = TriggerSpec::from_json(&json!({"type": "interval", "every": "1s"}));
    let mut entry = Entry::with_workflow("etl", flow, trigger.expect("trigger"));
    entry.options.queue = Some("etl".into());
    entry.options.expires_secs = Some(60.0);
    RunMessage::new(&entry, at, task_id("etl", at))
}

/// (task, task_id, options) of every task, in order.
fn tasks(canvas: &Canvas) -> Vec<(String, String, Map<String, Value>)> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<(String, String, Map<String, Value>)>) {
        let options = v["options"].as_object().cloned().unwrap_or_default();
        match v["subtask_type"].as_str() {
            None => out.push((
                v["task"].as_str().unwrap_or_default().to_owned(),
                options["task_id"].as_str().unwrap_or_default().to_owned(),
                options,
            )),
            Some(_) => {
                for key in ["tasks", "header"] {
                    if let Some(list) = v["kwargs"][key].as_array() {
                        list.iter().for_each(|t| walk(t, out));
                    }
                }
                if !v["kwargs"]["body"].is_null() {
                    walk(&v["kwargs"]["body"], out);
                }
            }
        }
    }
    walk(&serde_json::to_value(canvas).expect("json"), &mut out);
    out
}

#[test]
fn each_run_gets_fresh_ids_and_a_resend_the_same_ones() {
    let run = run_at("2026-01-01T02:00:00Z");
    let workflow = run.workflow.clone().expect("a workflow run");
    let first = tasks(&instantiate(&workflow, &run));
    assert_eq!(first.len(), 4);
    // The final task is the run's id; the others differ from it and each other.
    assert_eq!(first[3].1, run.task_id.to_string());
    let mut ids: Vec<&str> = first.iter().map(|t| t.1.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{first:?}");
    assert!(
        !ids.contains(&"fixed"),
        "an id written in the workflow is replaced"
    );
    let again = tasks(&instantiate(&workflow, &run));
    assert_eq!(first, again, "a resend has the same ids");
    let next = run_at("2026-01-01T02:00:01Z");
    let later = tasks(&instantiate(&workflow, &next));
    for (a, b) in first.iter().zip(&later) {
        assert_ne!(a.1, b.1, "the next run has new ids");
    }
}

#[test]
fn the_first_task_is_marked_as_a_beat_run_and_queues_default_to_the_entry() {
    let run = run_at("2026-01-01T02:00:00Z");
    let workflow = run.workflow.clone().expect("a workflow run");
    let t = tasks(&instantiate(&workflow, &run));
    let first = &t[0].2;
    assert_eq!(first["headers"]["beat_entry"], "etl");
    assert_eq!(
        first["headers"]["beat_scheduled_at"],
        "2026-01-01T02:00:00Z"
    );
    assert_eq!(first["eta"], "2026-01-01T02:00:00Z");
    assert_eq!(first["expires"], "2026-01-01T02:01:00Z");
    assert_eq!(first["queue"], "etl");
    // Later steps: no beat headers, eta or expires; their own queue kept.
    for (_, _, o) in &t[1..] {
        assert!(
            o.get("headers").is_none() && o.get("eta").is_none(),
            "{o:?}"
        );
        assert!(o.get("expires").is_none());
    }
    assert_eq!(t[2].2["queue"], "own");
    assert_eq!(t[3].2["queue"], "etl");
}
