//! One run of a workflow entry: the entry's workflow with fresh ids, marked
//! as a beat run.
//!
//! - **Ids.** Every task and group gets `uuid5(run id, its place in the
//!   workflow)`, and the workflow's final task (a chain's last step, a
//!   chord's callback) gets the run id itself (see
//!   [`crate::firing::dispatch::task_id`]). So each run's ids are new, while
//!   a run sent again (a beat that died between publishing and recording
//!   it) has the same ids as before: workers recognise the copies, and a
//!   chord is recorded once. `max_instances`, `schedule run-now` and
//!   `schedule list` follow the final task. Ids written in the workflow are
//!   replaced.
//! - **The tasks sent first** (a chain's first step, each member of a group
//!   or chord header) carry the headers `beat_entry` and
//!   `beat_scheduled_at`, `eta` = the scheduled time and the entry's
//!   `expires`, as a single-task run does. Later steps are sent by workers
//!   when their turn comes, without them: an `expires` bounds the start of
//!   a run, not the whole workflow.
//! - **Queue and priority** of the entry apply to every task that names none.

use celeriac::canvas::{Canvas, Chain, Group};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::clock::format_instant;
use crate::firing::dispatch::RunMessage;

/// The workflow `canvas` as run `run` sends it.
pub fn instantiate(canvas: &Canvas, run: &RunMessage) -> Canvas {
    let mut out = canvas.clone();
    assign(&mut out, run, "0", true);
    set_final_id(&mut out, &run.task_id.to_string());
    out
}

fn id(run: &RunMessage, path: &str) -> Value {
    Value::String(Uuid::new_v5(&run.task_id, path.as_bytes()).to_string())
}

fn assign(canvas: &mut Canvas, run: &RunMessage, path: &str, first: bool) {
    match canvas {
        Canvas::Task(_) => {
            let options = canvas.options_mut();
            options.insert("task_id".into(), id(run, path));
            task_options(options, run, first);
        }
        Canvas::Chain(Chain { tasks, options }) => {
            options.remove("task_id");
            for (i, step) in tasks.iter_mut().enumerate() {
                assign(step, run, &format!("{path}.{i}"), first && i == 0);
            }
        }
        Canvas::Group(Group { tasks, options }) => {
            options.insert("task_id".into(), id(run, &format!("{path}/group")));
            for (i, member) in tasks.iter_mut().enumerate() {
                assign(member, run, &format!("{path}.{i}"), first);
            }
        }
        Canvas::Chord(c) => {
            c.options.remove("task_id");
            let header = &mut c.header;
            header
                .options
                .insert("task_id".into(), id(run, &format!("{path}/group")));
            for (i, member) in header.tasks.iter_mut().enumerate() {
                assign(member, run, &format!("{path}.{i}"), first);
            }
            assign(&mut c.body, run, &format!("{path}/body"), false);
        }
    }
}

fn task_options(options: &mut Map<String, Value>, run: &RunMessage, first: bool) {
    let unset = |o: &Map<String, Value>, k: &str| o.get(k).is_none_or(Value::is_null);
    if unset(options, "queue")
        && unset(options, "routing_key")
        && let Some(q) = &run.queue
    {
        options.insert("queue".into(), json!(q));
    }
    if unset(options, "priority")
        && let Some(p) = run.priority
    {
        options.insert("priority".into(), json!(p));
    }
    if !first {
        return;
    }
    let mut headers = match options.remove("headers") {
        Some(Value::Object(h)) => h,
        _ => Map::new(),
    };
    headers.insert("beat_entry".into(), json!(run.entry));
    headers.insert(
        "beat_scheduled_at".into(),
        json!(format_instant(run.fire_at)),
    );
    options.insert("headers".into(), Value::Object(headers));
    if unset(options, "eta") && unset(options, "countdown") {
        options.insert("eta".into(), json!(format_instant(run.fire_at)));
    }
    if unset(options, "expires")
        && let Some(at) = run.expires
    {
        options.insert("expires".into(), json!(format_instant(at)));
    }
}

fn set_final_id(canvas: &mut Canvas, final_id: &str) {
    match canvas {
        Canvas::Task(_) | Canvas::Group(_) => {
            canvas
                .options_mut()
                .insert("task_id".into(), json!(final_id));
        }
        Canvas::Chain(c) => {
            if let Some(last) = c.tasks.last_mut() {
                set_final_id(last, final_id);
            }
        }
        Canvas::Chord(c) => set_final_id(&mut c.body, final_id),
    }
}

#[cfg(test)]
mod tests;
