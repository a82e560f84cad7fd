//! The messages planned for each canvas against those real Celery 5.7
//! published for the same canvas (`producer/tests/fixtures/canvas`, made by
//! `scripts/capture_canvas_fixtures.py`); the dict form both ways; bad input.

use super::plan::{ResultNode, plan};
use super::*;
use celeriac_common::TaskDef;
use serde_json::{Value, json};
use std::collections::HashMap;

fn add(args: Value) -> TaskSig {
    by_name("tasks.add", args)
}
fn mul(args: Value) -> TaskSig {
    by_name("tasks.mul", args)
}
fn tsum() -> TaskSig {
    by_name("tasks.tsum", json!([]))
}
fn by_name(name: &str, args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(name, args)
}

/// Whether `ours` has everything Celery's `theirs` has (extra keys in ours
/// are allowed; a null in theirs may be absent in ours), with Celery's
/// numbered ids matched one-to-one with ours.
fn matches(
    theirs: &Value,
    ours: &Value,
    path: &str,
    ids: &mut HashMap<String, String>,
    back: &mut HashMap<String, String>,
) -> Result<(), String> {
    match (theirs, ours) {
        (Value::String(t), Value::String(o)) if t.starts_with("00000000-0000-4000-8000-") => {
            let bound = ids.entry(t.clone()).or_insert_with(|| o.clone());
            let rev = back.entry(o.clone()).or_insert_with(|| t.clone());
            if bound != o || rev != t {
                return Err(format!("{path}: id {t} is {bound} elsewhere, here {o}"));
            }
            Ok(())
        }
        (Value::Object(t), Value::Object(o)) => {
            for (k, tv) in t {
                match o.get(k) {
                    None if tv.is_null() => {}
                    None => return Err(format!("{path}.{k}: missing (Celery has {tv})")),
                    Some(ov) => matches(tv, ov, &format!("{path}.{k}"), ids, back)?,
                }
            }
            Ok(())
        }
        (Value::Array(t), Value::Array(o)) if t.len() == o.len() => t
            .iter()
            .zip(o)
            .enumerate()
            .try_for_each(|(i, (tv, ov))| matches(tv, ov, &format!("{path}[{i}]"), ids, back)),
        _ if theirs == ours => Ok(()),
        _ => Err(format!("{path}: Celery has {theirs}, celeriac {ours}")),
    }
}

fn fixture(case: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/canvas/{case}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture json")
}

/// The planned messages as the fixtures hold them.
fn planned(canvas: &Canvas) -> Vec<Value> {
    let plan = plan(canvas).expect("plan");
    plan.messages
        .iter()
        .map(|o| {
            let m = &o.msg;
            json!({
                "headers": {"task": m.task, "id": m.id, "group": m.group,
                            "group_index": m.group_index, "root_id": m.root_id,
                            "parent_id": m.parent_id},
                "body": serde_json::from_slice::<Value>(&m.encode_body().expect("body"))
                    .expect("json"),
            })
        })
        .collect()
}

fn same_as_celery(case: &str, canvas: &Canvas) {
    let f = fixture(case);
    let theirs = f["messages"].as_array().expect("messages");
    let ours = planned(canvas);
    assert_eq!(theirs.len(), ours.len(), "{case}: number of messages");
    let (mut ids, mut back) = (HashMap::new(), HashMap::new());
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        for part in ["headers", "body"] {
            if let Err(e) = matches(&t[part], &o[part], part, &mut ids, &mut back) {
                panic!(
                    "{case}: message {i}: {e}\nCelery: {}\nours:   {}",
                    t[part], o[part]
                );
            }
        }
    }
    // The dict form reads back to the same canvas, and Celery's reads.
    let dict = serde_json::to_value(canvas).expect("serialize");
    let back: Canvas = serde_json::from_value(dict).expect("read back");
    assert_eq!(&back, canvas);
    let _: Canvas = serde_json::from_value(f["canvas"].clone()).expect("Celery's dict form");
}

#[test]
fn chain_matches_celery() {
    same_as_celery(
        "chain3",
        &(add(json!([1, 2])) | add(json!([3])) | mul(json!([4]))),
    );
}

#[test]
fn group_matches_celery() {
    same_as_celery("group2", &group([add(json!([1, 2])), add(json!([3, 4]))]));
}

#[test]
fn chord_matches_celery() {
    same_as_celery(
        "chord2",
        &chord([add(json!([1, 2])), add(json!([3, 4]))], tsum()),
    );
}

#[test]
fn diamond_matches_celery() {
    let flow = add(json!([1, 2])) | group([add(json!([3])), add(json!([4]))]) | tsum();
    same_as_celery("diamond", &flow);
}

#[test]
fn group_then_tasks_matches_celery() {
    let flow = group([add(json!([1, 2])), add(json!([3, 4]))]) | tsum() | mul(json!([10]));
    same_as_celery("group_then_task", &flow);
}

#[test]
fn group_of_chains_matches_celery() {
    let flow = crate::group![add(json!([1, 2])) | mul(json!([3])), add(json!([5, 6]))];
    same_as_celery("group_of_chains", &flow);
}

#[test]
fn chain_as_chord_body_matches_celery() {
    let flow = chord(
        [add(json!([1, 2])), add(json!([3, 4]))],
        tsum() | mul(json!([2])),
    );
    same_as_celery("chain_as_chord_body", &flow);
}

#[test]
fn immutable_and_errback_match_celery() {
    let flow = (add(json!([1, 2])) | add(json!([5, 6])).immutable() | mul(json!([2])))
        .link_error(by_name("tasks.on_error", json!([])));
    same_as_celery("immutable_and_errback", &flow);
}

/// Celery keeps the steps after a chord in the chain (the worker hands
/// them to the body when it applies the chord); celeriac puts them in the
/// chord's body when the workflow is built, so the callback recorded with
/// the chord is the whole rest of the workflow. The first message is the
/// same but for where that rest is.
#[test]
fn chord_in_chain_carries_the_rest_in_its_body() {
    let flow =
        add(json!([1, 2])) | chord([add(json!([3])), add(json!([4]))], tsum()) | mul(json!([2]));
    let plan = plan(&flow).expect("plan");
    assert_eq!(plan.messages.len(), 1);
    let rest = plan.messages[0].msg.embed.chain.clone().expect("chain");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].subtask_type.as_deref(), Some("chord"));
    let body = &rest[0].kwargs["body"];
    assert_eq!(body["subtask_type"], "chain");
    let steps: Vec<_> = body["kwargs"]["tasks"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["task"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["tasks.tsum", "tasks.mul"]);
    // The chord is recorded at send time, with its size and callback id.
    assert_eq!(plan.chords.len(), 1);
    assert_eq!(plan.chords[0].size, 2);
    assert_eq!(
        Some(plan.chords[0].callback_id.as_str()),
        body["kwargs"]["tasks"][0]["options"]["task_id"].as_str()
    );
}

/// Members of a chord in a chord's header carry the outer callback on, in
/// their own callback's signature.
#[test]
fn nested_chord_bodies_carry_the_outer_callback() {
    let inner = chord([add(json!([1, 1])), add(json!([2, 2]))], tsum());
    let flow = chord([inner, Canvas::from(add(json!([3, 3])))], tsum());
    let plan = plan(&flow).expect("plan");
    assert_eq!(plan.chords.len(), 2);
    let (outer, inner) = (&plan.chords[0], &plan.chords[1]);
    assert_eq!(outer.size, 2, "a nested chord counts as its body");
    assert_eq!(
        inner.callback["options"]["chord"]["options"]["task_id"].as_str(),
        Some(outer.callback_id.as_str())
    );
    assert_eq!(
        inner.callback["options"]["group_id"].as_str(),
        Some(outer.group_id.as_str())
    );
    assert_eq!(inner.callback["options"]["group_index"], 0);
    let last = &plan.messages[2].msg;
    assert_eq!(last.group.as_deref(), Some(outer.group_id.as_str()));
    assert_eq!(last.group_index, Some(1));
}

struct Add;
impl TaskDef for Add {
    const NAME: &'static str = "tasks.add";
    type Args = (i64, i64);
    type Output = i64;
}
struct Sum;
impl TaskDef for Sum {
    const NAME: &'static str = "tasks.tsum";
    type Args = (Vec<i64>,);
    type Output = i64;
}

#[test]
fn typed_signatures_and_results() {
    let flow = Add::s((1, 2)) | group([Add::partial((3,)), Add::partial((4,))]) | Sum::partial(());
    let plan = plan(&flow).expect("plan");
    let ResultNode::Task { parent, .. } = &plan.result else {
        panic!("a chord's result is its callback's");
    };
    let Some(header) = parent.as_deref() else {
        panic!("the callback's parent is the header")
    };
    let ResultNode::Group {
        members, parent, ..
    } = header
    else {
        panic!("the header is a group")
    };
    assert_eq!(members.len(), 2);
    let Some(ResultNode::Task { id, .. }) = parent.as_deref() else {
        panic!("the header's parent is the first step")
    };
    assert_eq!(id, &plan.messages[0].msg.id);
    assert!(Add::si((1, 2)).signature().immutable);
}

#[test]
fn fan_out_of_ten_thousand() {
    let flow = chord((0..10_000).map(|i| Add::s((i, i))), Sum::partial(()));
    let plan = plan(&flow).expect("plan");
    assert_eq!(plan.messages.len(), 10_000);
    assert_eq!(plan.chords[0].size, 10_000);
    assert_eq!(plan.messages[9_999].msg.group_index, Some(9_999));
}

#[test]
fn bad_input_is_refused_before_sending() {
    let empty = chord(Vec::<TaskSig>::new(), Sum::partial(()));
    assert!(matches!(
        plan(&empty),
        Err(CanvasError::Empty("chord header"))
    ));
    assert!(matches!(
        plan(&group(Vec::<TaskSig>::new())),
        Err(CanvasError::Empty("group"))
    ));
    let long = chain((0..100_000).map(|i| Add::s((i, i))));
    assert!(matches!(
        plan(&long),
        Err(CanvasError::ChainTooLong { steps: 100_000, .. })
    ));
    let ok = chain((0..MAX_CHAIN_STEPS as i64).map(|i| Add::s((i, i))));
    assert!(plan(&ok).is_ok());
    let mut deep = Canvas::from(Add::s((1, 1)));
    for _ in 0..100 {
        deep = group([deep]);
    }
    assert!(matches!(plan(&deep), Err(CanvasError::TooDeep { .. })));
    let bad = add(json!([1])).option("countdown", json!("soon"));
    assert!(matches!(
        plan(&bad.into()),
        Err(CanvasError::BadOption { .. })
    ));
    // Times past what a message carries (years 1 to 9999): refused, not a
    // panic (a countdown of 1e13 s overflowed chrono) nor a message no
    // worker reads.
    for (option, value) in [
        ("countdown", json!(1.8e19)),
        ("countdown", json!(1e13)),
        ("expires", json!(1e13)),
        ("expires", json!("+10000-01-01T00:00:00Z")),
        ("eta", json!("0000-12-31T00:00:00Z")),
        // A name AMQP cannot carry in a delayed message's routing key.
        ("queue", json!("q".repeat(240))),
        ("routing_key", json!("q".repeat(240))),
    ] {
        let bad = add(json!([1])).option(option, value.clone());
        assert!(
            matches!(plan(&bad.into()), Err(CanvasError::BadOption { .. })),
            "{option} = {value}"
        );
    }
    let far = Add::s((1, 1)).countdown(std::time::Duration::MAX);
    assert!(matches!(
        plan(&far.into()),
        Err(CanvasError::BadOption { .. })
    ));
    struct Keyed;
    impl TaskDef for Keyed {
        const NAME: &'static str = "tasks.keyed";
        type Args = std::collections::HashMap<(i32, i32), i32>;
        type Output = ();
    }
    let unencodable = Keyed::s(HashMap::from([((1, 2), 3)]));
    assert!(matches!(
        plan(&unencodable.into()),
        Err(CanvasError::Args { .. })
    ));
}

#[test]
fn the_headers_option_adds_message_headers_but_never_the_protocol_s_own() {
    let sig = add(json!([1, 2])).option("headers", json!({"tenant": "acme", "task": "evil"}));
    let planned = plan(&Canvas::from(sig)).expect("plans");
    let msg = &planned.messages[0].msg;
    assert_eq!(msg.extra_headers.get("tenant"), Some(&json!("acme")));
    assert!(!msg.extra_headers.contains_key("task"));
    assert_eq!(msg.task, "tasks.add");
    let bad = Canvas::from(add(json!([1])).option("headers", json!("x")));
    let err = bad
        .validate()
        .expect_err("headers must be a table")
        .to_string();
    assert!(err.contains("option headers"), "{err}");
    assert!(chord([] as [TaskSig; 0], tsum()).validate().is_err());
}
