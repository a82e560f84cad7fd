//! Workflow entries: an entry whose runs send a whole workflow (a chain,
//! group or chord, nested freely) instead of one task.
//!
//! A workflow is written in Celery's canvas dict form (what
//! `json.dumps(sig)` gives in Python, and what [`Canvas`] serialises to), or
//! in a shorter form made for the schedule file, where each node is one of:
//!
//! - `"tasks.a"`: a task without arguments;
//! - `{ task = "tasks.a", args = [...], kwargs = {...}, options = {...}, immutable = true }`;
//! - `{ chain = [node, ...] }`: steps in order, each result fed to the next;
//! - `{ group = [node, ...] }`: members in parallel;
//! - `{ chord = [node, ...], body = node }`: a group, then `body` with its results.
//!
//! Chains, groups and chords take `options` too. A node with a
//! `subtask_type` is read in Celery's form, and so is everything inside it.

use celeriac::canvas::{Canvas, Chain, Chord, Group, TaskSig};
use serde_json::{Map, Value};

use crate::schedule::entry::{Entry, EntryError};
use crate::trigger::suggest;

/// Keys of a task node (Celery's signature dict).
const TASK_KEYS: [&str; 7] = [
    "task",
    "args",
    "kwargs",
    "options",
    "immutable",
    "subtask_type",
    "chord_size",
];

/// Members a listing shows of one group before "+N more".
const SHOWN_MEMBERS: usize = 4;

fn invalid(path: &str, message: impl std::fmt::Display) -> EntryError {
    if path.is_empty() {
        EntryError::invalid("workflow", message.to_string())
    } else {
        EntryError::invalid("workflow", format!("{path}: {message}"))
    }
}

/// Reads a workflow (either form) and checks it as sending it would.
pub fn parse(value: &Value) -> Result<Canvas, EntryError> {
    let canvas = node(value, "")?;
    check_names(&canvas)?;
    canvas.validate().map_err(|e| invalid("", e))?;
    Ok(canvas)
}

/// Reads a workflow from JSON text (a `--workflow` flag or a workflow file).
pub fn parse_json(text: &str) -> Result<Canvas, EntryError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| EntryError::invalid("workflow", format!("invalid JSON: {e}")))?;
    parse(&value)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn node(value: &Value, path: &str) -> Result<Canvas, EntryError> {
    let table = match value {
        Value::String(name) => return Ok(Canvas::Task(TaskSig::by_name(name, Vec::new()))),
        Value::Object(t) => t,
        other => {
            return Err(invalid(
                path,
                format!("expected a task name or a table, found {other}"),
            ));
        }
    };
    let kind = ["chain", "group", "chord"]
        .into_iter()
        .filter(|k| table.contains_key(*k))
        .collect::<Vec<_>>();
    let celery_form = table.get("subtask_type").is_some_and(|t| !t.is_null());
    if celery_form || kind.is_empty() {
        check_keys(table, &TASK_KEYS, path)?;
        if !table.contains_key("task") {
            return Err(invalid(
                path,
                "expected `task`, `chain`, `group` or `chord` (or Celery's dict form)",
            ));
        }
        return serde_json::from_value::<Canvas>(value.clone()).map_err(|e| invalid(path, e));
    }
    let [kind] = kind.as_slice() else {
        return Err(invalid(path, "give one of `chain`, `group` or `chord`"));
    };
    let allowed: &[&str] = if *kind == "chord" {
        &["chord", "body", "options"]
    } else {
        &[kind, "options"]
    };
    check_keys(table, allowed, path)?;
    let here = join(path, kind);
    let tasks = list(&table[*kind], &here)?;
    let options = match table.get("options") {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(invalid(&join(path, "options"), "expected a table")),
    };
    Ok(match *kind {
        "chain" => Canvas::Chain(Chain { tasks, options }),
        "group" => Canvas::Group(Group { tasks, options }),
        _ => {
            let body = table
                .get("body")
                .ok_or_else(|| invalid(&here, "a chord needs a `body` (its callback)"))?;
            Canvas::Chord(Chord {
                header: Group {
                    tasks,
                    options: Map::new(),
                },
                body: Box::new(node(body, &join(path, "body"))?),
                options,
            })
        }
    })
}

fn list(value: &Value, path: &str) -> Result<Vec<Canvas>, EntryError> {
    let Value::Array(items) = value else {
        return Err(invalid(path, "expected a list"));
    };
    if items.is_empty() {
        return Err(invalid(path, "is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| node(v, &format!("{path}[{i}]")))
        .collect()
}

fn check_keys(table: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), EntryError> {
    match table.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => {
            let hint = suggest(key, allowed.iter().copied())
                .map(|s| format!(", did you mean \"{s}\"?"))
                .unwrap_or_default();
            Err(invalid(path, format!("unknown key \"{key}\"{hint}")))
        }
    }
}

fn check_names(canvas: &Canvas) -> Result<(), EntryError> {
    match canvas {
        Canvas::Task(t) if t.name().trim().is_empty() => Err(invalid("", "a task without a name")),
        Canvas::Task(t) if t.name().len() > 255 => Err(invalid(
            "",
            format!(
                "task name longer than 255 bytes: {}…",
                t.name().chars().take(40).collect::<String>()
            ),
        )),
        Canvas::Task(_) => Ok(()),
        Canvas::Chain(Chain { tasks, .. }) | Canvas::Group(Group { tasks, .. }) => {
            tasks.iter().try_for_each(check_names)
        }
        Canvas::Chord(c) => {
            c.header.tasks.iter().try_for_each(check_names)?;
            check_names(&c.body)
        }
    }
}

/// The workflow on one line: `a → (b, c) → d` (a chord is its header, an
/// arrow and its body; large groups are cut short).
pub fn describe(canvas: &Canvas) -> String {
    match canvas {
        Canvas::Task(t) => t.name().to_owned(),
        Canvas::Chain(c) => c.tasks.iter().map(describe).collect::<Vec<_>>().join(" → "),
        Canvas::Group(g) => describe_group(&g.tasks),
        Canvas::Chord(c) => format!(
            "{} → {}",
            describe_group(&c.header.tasks),
            describe(&c.body)
        ),
    }
}

fn describe_group(members: &[Canvas]) -> String {
    let mut shown: Vec<String> = members.iter().take(SHOWN_MEMBERS).map(describe).collect();
    if members.len() > SHOWN_MEMBERS {
        shown.push(format!("+{} more", members.len() - SHOWN_MEMBERS));
    }
    format!("({})", shown.join(", "))
}

/// Whether the workflow's result is a group's (a group last): it has no
/// one final task whose state says the run is finished.
pub fn ends_in_group(canvas: &Canvas) -> bool {
    match canvas {
        Canvas::Task(_) => false,
        Canvas::Group(_) => true,
        Canvas::Chain(c) => c.tasks.last().is_some_and(ends_in_group),
        Canvas::Chord(c) => ends_in_group(&c.body),
    }
}

/// The task name a workflow entry is listed and reported under: Celery's
/// name of its outer node (`celery.chain`, `celery.group`, `celery.chord`)
/// or the task's own.
pub fn root_task(canvas: &Canvas) -> String {
    canvas.to_signature().task
}

/// What a workflow entry may not have: `args`/`kwargs` (its tasks carry
/// their own), `exchange`/`routing_key` (its tasks are routed by queue), or
/// `max_instances` when it ends in a group.
pub(crate) fn check_entry(entry: &Entry) -> Result<(), EntryError> {
    let Some(canvas) = &entry.workflow else {
        return Ok(());
    };
    if !entry.args.is_empty() || !entry.kwargs.is_empty() {
        return Err(EntryError::invalid(
            "workflow",
            "a workflow entry takes no `args` or `kwargs` (give them to its tasks)",
        ));
    }
    for (field, value) in [
        ("exchange", &entry.options.exchange),
        ("routing_key", &entry.options.routing_key),
    ] {
        if value.is_some() {
            return Err(EntryError::invalid(
                field,
                "not supported on a workflow entry (use `queue`, or a queue on its tasks)",
            ));
        }
    }
    if entry.firing.max_instances.is_some_and(|m| m > 0) && ends_in_group(canvas) {
        return Err(EntryError::invalid(
            "max_instances",
            "this workflow ends in a group, which has no one final task to wait for; \
             give it a callback (a chord) or drop max_instances",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
