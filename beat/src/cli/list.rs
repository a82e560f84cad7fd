//! `celeriac-beat schedule list [--tag T] [--json]`: file and database
//! entries with their run state.

use celeriac_common::Config;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::cli::error::CliError;
use crate::clock::format_instant;
use crate::firing::dispatch::task_id;
use crate::firing::run_state::{self, RunState};
use crate::schedule::entry::{Entry, Firing, Grace};
use crate::schedule::store::Store;
use crate::schedule::tags::no_entry_with;
use crate::schedule::trigger_input::describe;
use crate::schedule::workflow;
use crate::trigger::{Calendars, Schedule};

/// What to list and how.
pub(crate) struct ListArgs<'a> {
    pub(crate) json: bool,
    pub(crate) tag: Option<&'a str>,
    /// Whether the schedule file was given (for the message of an unknown tag).
    pub(crate) file_known: bool,
}

pub(crate) async fn list(
    store: &Store,
    file_entries: Vec<Entry>,
    calendars: &Calendars,
    config: &Config,
    args: ListArgs<'_>,
) -> Result<(), CliError> {
    let (_, db_entries) = store.load().await?;
    let mut states = run_state::load_all(store.db()).await?;
    let names: std::collections::HashSet<String> =
        file_entries.iter().map(|e| e.name.clone()).collect();
    let mut entries: Vec<Entry> = file_entries;
    entries.extend(db_entries.into_iter().filter(|e| !names.contains(&e.name)));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(tag) = args.tag {
        let mut known: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.tags.iter().map(String::as_str))
            .collect();
        known.sort_unstable();
        known.dedup();
        if !known.contains(&tag) {
            return Err(CliError::Usage(no_entry_with(tag, &known, args.file_known)));
        }
        entries.retain(|e| e.tags.iter().any(|t| t == tag));
    }
    let defaults = Firing::from_config(config);
    let now = Utc::now();
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            row(
                e,
                states.remove(&e.name).unwrap_or_default(),
                &defaults,
                calendars,
                now,
            )
        })
        .collect();
    if args.json {
        celeriac_common::outln!("{}", Value::Array(rows));
        return Ok(());
    }
    let text = |v: &Value, k: &str| match &v[k] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                text(r, "name"),
                text(r, "source"),
                if r["enabled"] == json!(true) {
                    "yes".into()
                } else {
                    "paused".into()
                },
                text(r, "trigger_text"),
                match r["workflow_text"].as_str() {
                    Some(w) => format!("workflow: {w}"),
                    None => text(r, "task"),
                },
                tags_text(r),
                text(r, "next_run_at"),
                text(r, "last_run_at"),
                text(r, "total_runs"),
                // One line, whatever the file's string holds.
                text(r, "description")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "SOURCE",
        "ENABLED",
        "TRIGGER",
        "TASK",
        "TAGS",
        "NEXT RUN",
        "LAST RUN",
        "RUNS",
        "DESCRIPTION",
    ]
    .map(str::to_owned);
    super::print_columns(&header, &table);
    Ok(())
}

fn row(
    e: &Entry,
    s: RunState,
    defaults: &Firing,
    calendars: &Calendars,
    now: DateTime<Utc>,
) -> Value {
    let firing = e.firing_over(defaults);
    let compiled = e.compile_lenient(calendars).map(|(t, _)| t);
    let next = match (e.enabled, s.sending_at, compiled) {
        (false, _, _) | (_, _, Err(_)) => None,
        (true, Some(t), _) => Some(t),
        (true, None, Ok(trigger)) => {
            let from = s.cursor_at.or(e.created_at).unwrap_or(now);
            trigger.next_after(from)
        }
    };
    let last_task_id = s
        .last_task_id
        .or_else(|| s.last_run_at.map(|t| task_id(&e.name, t)));
    let at = |t: Option<DateTime<Utc>>| t.map(format_instant);
    let mut options = Map::new();
    if let Ok(Value::Object(o)) = serde_json::to_value(&e.options) {
        options = o;
    }
    let misfire_grace_time = match firing.misfire_grace {
        Grace::Unlimited => Value::Null,
        g => json!(g.as_secs_f64()),
    };
    json!({
        "name": e.name,
        "source": e.source.as_str(),
        "task": e.task,
        "workflow": e.workflow,
        "workflow_text": e.workflow.as_ref().map(workflow::describe),
        "tags": e.tags,
        "args": e.args,
        "kwargs": e.kwargs,
        "trigger": e.trigger,
        "trigger_text": describe(&e.trigger),
        "options": options,
        "misfire_grace_time": misfire_grace_time,
        "coalesce": firing.coalesce,
        "max_instances": firing.max_instances,
        "enabled": e.enabled,
        "next_run_at": at(next),
        "last_run_at": at(s.last_run_at),
        "last_sent_at": at(s.last_sent_at),
        "last_task_id": last_task_id.map(|i| i.to_string()),
        "total_runs": s.total_runs,
        "sending_at": at(s.sending_at),
        "run_now_at": at(s.run_now_at),
        "created_at": at(e.created_at),
        "done": e.enabled && next.is_none(),
        "description": e.description,
    })
}

fn tags_text(row: &Value) -> String {
    match row["tags"].as_array() {
        Some(tags) if !tags.is_empty() => tags
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}
