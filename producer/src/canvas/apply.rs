//! Applying a signature after a task finished, as a worker does: a chain's
//! next step, a link (callback or errback), a chord's callback. The
//! signature may be any canvas (a task, chain, group or chord, in Celery's
//! dict form); the finished task's result is prepended to the arguments of
//! the tasks sent first (unless they are immutable), and every message sent
//! has the finished task as its parent and its root.

use super::plan::{EmitCtx, FreezeCtx, Outgoing, collect_chords, emit, freeze, normalize};
use super::send::CanvasError;
use super::{Canvas, Chain};
use celeriac_common::Signature;
use celeriac_common::backend::chord::NewChord;
use celeriac_common::protocol::TaskMessage;
use serde_json::{Map, Value};

/// The task after which a signature is applied.
#[derive(Debug, Clone, Copy)]
pub struct After<'a> {
    /// Prepended to the arguments of the tasks sent first (a chain's first
    /// step, each member of a group or chord header), unless immutable:
    /// the finished task's result, its id for an errback, the members'
    /// results for a chord's callback. `None`: nothing prepended.
    pub result: Option<&'a Value>,
    /// The finished task's id (every message's `parent_id`).
    pub parent_id: &'a str,
    /// The workflow's root id.
    pub root_id: &'a str,
}

/// What applying a signature sends: chords to record first (recording is
/// insert-if-absent, so a chord recorded when the workflow was sent is not
/// recorded twice), then the messages, each with the queue it names.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Chords to record before any message is published.
    pub chords: Vec<NewChord>,
    /// The messages, and the queue each signature names (if any).
    pub messages: Vec<(TaskMessage, Option<String>)>,
}

/// Plans `sig` applied after a task (see [`After`]); `rest` is the rest of
/// the chain it was popped from (reversed, as `body[2]["chain"]` holds it):
/// it runs after `sig`. Ids frozen when the workflow was sent are kept;
/// nodes without one get a new id.
pub fn apply_after(
    sig: Signature,
    after: After<'_>,
    rest: Vec<Signature>,
) -> Result<Applied, CanvasError> {
    let not_canvas = |e: super::wire::NotACanvas| CanvasError::Encode(e.to_string());
    let mut canvas = Canvas::from_signature(sig).map_err(not_canvas)?;
    super::plan::check(&canvas, 0)?;
    if let Some(value) = after.result {
        prepend(&mut canvas, value);
    }
    let mut chain = rest;
    if !chain.is_empty() && matches!(canvas, Canvas::Group(_) | Canvas::Chord(_)) {
        // A group or chord followed by more steps: the rest becomes its
        // callback (Celery's `group | t` = `chord(group, t)`).
        let mut steps = vec![canvas];
        for step in chain.drain(..).rev() {
            steps.push(Canvas::from_signature(step).map_err(not_canvas)?);
        }
        canvas = Canvas::Chain(Chain {
            tasks: steps,
            options: Map::new(),
        });
    }
    let mut canvas = normalize(canvas)?;
    let root = Some(after.root_id.to_owned());
    freeze(
        &mut canvas,
        &FreezeCtx {
            root: root.clone(),
            group: None,
        },
    );
    let mut chords = Vec::new();
    collect_chords(&canvas, None, &mut chords)?;
    let mut out = Vec::new();
    let ctx = EmitCtx {
        root: root.clone(),
        chord: None,
        chain,
    };
    emit(&canvas, &ctx, &mut out)?;
    let messages = out
        .into_iter()
        .map(|Outgoing { mut msg, queue }| {
            msg.parent_id = Some(after.parent_id.to_owned());
            msg.root_id = root.clone();
            (msg, queue)
        })
        .collect();
    Ok(Applied { chords, messages })
}

/// Every task id a signature would send (a chain's steps, a group's
/// members, a chord's header and body), with the signature of each: what a
/// worker marks as not run when the chain holding it stops.
pub fn planned_tasks(sig: &Signature) -> Vec<Signature> {
    fn walk(canvas: &Canvas, out: &mut Vec<Signature>) {
        match canvas {
            Canvas::Task(t) => out.push(t.sig.clone()),
            Canvas::Chain(Chain { tasks, .. }) | Canvas::Group(super::Group { tasks, .. }) => {
                tasks.iter().for_each(|t| walk(t, out));
            }
            Canvas::Chord(c) => {
                c.header.tasks.iter().for_each(|t| walk(t, out));
                walk(&c.body, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(canvas) = Canvas::from_signature(sig.clone()) {
        walk(&canvas, &mut out);
    }
    out
}

/// Prepends `value` to the arguments of the tasks that run first.
fn prepend(canvas: &mut Canvas, value: &Value) {
    match canvas {
        Canvas::Task(t) => {
            if !t.sig.immutable {
                t.sig.args.insert(0, value.clone());
            }
        }
        Canvas::Chain(c) => {
            if let Some(first) = c.tasks.first_mut() {
                prepend(first, value);
            }
        }
        Canvas::Group(g) => g.tasks.iter_mut().for_each(|t| prepend(t, value)),
        Canvas::Chord(c) => c.header.tasks.iter_mut().for_each(|t| prepend(t, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(name: &str, id: &str) -> Signature {
        let mut s = Signature::new(name, vec![json!(1)]);
        s.options.insert("task_id".into(), json!(id));
        s
    }

    fn after<'a>(result: &'a Value) -> After<'a> {
        After {
            result: Some(result),
            parent_id: "p",
            root_id: "r",
        }
    }

    #[test]
    fn a_task_gets_the_result_its_parent_and_the_rest_of_the_chain() {
        let result = json!(7);
        let rest = vec![task("c", "id-c")];
        let applied = apply_after(task("b", "id-b"), after(&result), rest).expect("plan");
        assert!(applied.chords.is_empty());
        let [(msg, None)] = applied.messages.as_slice() else {
            panic!("one message: {:?}", applied.messages)
        };
        assert_eq!(
            (msg.id.as_str(), msg.args.clone()),
            ("id-b", vec![json!(7), json!(1)])
        );
        assert_eq!(msg.parent_id.as_deref(), Some("p"));
        assert_eq!(msg.root_id.as_deref(), Some("r"));
        let chain = msg.embed.chain.as_ref().expect("rest");
        assert_eq!(chain[0].options["task_id"], "id-c");
    }

    #[test]
    fn a_chord_option_goes_into_the_message() {
        let mut sig = task("b", "id-b");
        let body = task("cb", "id-cb");
        sig.options
            .insert("chord".into(), serde_json::to_value(&body).expect("json"));
        sig.options.insert("group_id".into(), json!("g"));
        sig.options.insert("group_index".into(), json!(2));
        let applied = apply_after(sig, after(&json!(0)), Vec::new()).expect("plan");
        let msg = &applied.messages[0].0;
        assert_eq!(
            msg.embed.chord.as_ref().map(|c| c.task.as_str()),
            Some("cb")
        );
        assert_eq!(
            (msg.group.as_deref(), msg.group_index),
            (Some("g"), Some(2))
        );
    }

    #[test]
    fn a_group_with_more_steps_becomes_a_recorded_chord() {
        let members = Canvas::Group(super::super::Group {
            tasks: vec![
                Canvas::from_signature(task("m", "m0")).expect("task"),
                Canvas::from_signature(task("m", "m1")).expect("task"),
            ],
            options: Map::from_iter([("task_id".to_owned(), json!("g"))]),
        });
        let result = json!("x");
        let applied = apply_after(
            members.to_signature(),
            after(&result),
            vec![task("sum", "id-sum")],
        )
        .expect("plan");
        assert_eq!(applied.chords.len(), 1);
        let chord = &applied.chords[0];
        assert_eq!((chord.group_id.as_str(), chord.size), ("g", 2));
        assert_eq!(chord.callback_id, "id-sum");
        assert_eq!(applied.messages.len(), 2);
        for (i, (msg, _)) in applied.messages.iter().enumerate() {
            assert_eq!(msg.args, vec![json!("x"), json!(1)]);
            assert_eq!(msg.group_index, Some(i as i64));
            assert_eq!(msg.parent_id.as_deref(), Some("p"));
            assert!(msg.embed.chord.is_some());
        }
    }

    #[test]
    fn planned_tasks_walk_every_node() {
        let flow = Canvas::Chain(Chain {
            tasks: vec![
                Canvas::from_signature(task("a", "a")).expect("task"),
                Canvas::from_signature(task("b", "b")).expect("task"),
            ],
            options: Map::new(),
        });
        let ids: Vec<String> = planned_tasks(&flow.to_signature())
            .iter()
            .map(|s| s.options["task_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
