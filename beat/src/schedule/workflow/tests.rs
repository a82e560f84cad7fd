use super::*;
use serde_json::json;

fn err(v: Value) -> String {
    parse(&v).map(|_| ()).expect_err("should fail").to_string()
}

#[test]
fn the_short_form_reads_chains_groups_and_chords() {
    let flow = parse(&json!({"chain": [
        {"task": "etl.extract", "args": ["orders"]},
        {"group": ["etl.eu", {"task": "etl.us", "kwargs": {"x": 1}}]},
        "etl.load",
    ]}))
    .expect("parses");
    assert_eq!(describe(&flow), "etl.extract → (etl.eu, etl.us) → etl.load");
    assert_eq!(root_task(&flow), "celery.chain");
    assert!(!ends_in_group(&flow));
    let chord = parse(&json!({"chord": ["a", "b"], "body": "sum"})).expect("parses");
    assert_eq!(describe(&chord), "(a, b) → sum");
    let fan = parse(&json!({"group": ["a", "b", "c", "d", "e", "f"]})).expect("parses");
    assert_eq!(describe(&fan), "(a, b, c, d, +2 more)");
    assert!(ends_in_group(&fan));
}

#[test]
fn celery_dict_form_reads_back_what_the_canvas_writes() {
    let short = parse(&json!({"chain": ["a", {"chord": ["b", "c"], "body": "d"}]})).expect("ok");
    let celery = serde_json::to_value(&short).expect("serialises");
    assert_eq!(celery["subtask_type"], "chain");
    let back = parse(&celery).expect("Celery's form parses");
    assert_eq!(back, short);
    assert_eq!(describe(&back), "a → (b, c) → d");
    let json = serde_json::to_string(&celery).expect("text");
    assert_eq!(parse_json(&json).expect("from text"), short);
}

#[test]
fn bad_workflows_name_the_place() {
    assert_eq!(
        err(json!({"chord": [], "body": "d"})),
        "workflow: chord: is empty"
    );
    assert_eq!(
        err(json!({"chain": ["a", {"group": ["b", {"task": "c", "arg": [1]}]}]})),
        "workflow: chain[1].group[1]: unknown key \"arg\", did you mean \"args\"?"
    );
    assert_eq!(
        err(json!({"chord": ["a"]})),
        "workflow: chord: a chord needs a `body` (its callback)"
    );
    assert_eq!(
        err(json!({"chain": ["a"], "group": ["b"]})),
        "workflow: give one of `chain`, `group` or `chord`"
    );
    assert!(err(json!({"chain": [1]})).contains("chain[0]: expected a task name or a table"));
    assert!(err(json!({"chain": ["a", ""]})).contains("a task without a name"));
    assert!(err(json!({"tasks": ["a"]})).contains("unknown key \"tasks\""));
    // Celery's form: an empty chord header, an unknown subtask type.
    let empty = json!({"task": "celery.chord", "subtask_type": "chord",
        "kwargs": {"header": [], "body": {"task": "d"}}});
    assert_eq!(
        err(empty),
        "workflow: the workflow has an empty chord header"
    );
    let odd = json!({"task": "x", "subtask_type": "xmap"});
    assert!(err(odd).contains("subtask_type \"xmap\" is not supported"));
    assert!(parse_json("{not json").is_err());
    // Options are checked as sending checks them.
    let bad_priority = json!({"task": "a", "options": {"priority": "high"}});
    assert!(err(bad_priority).contains("option priority"));
}
