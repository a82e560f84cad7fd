//! One `[entries.NAME]` table as written, and the [`Entry`] it makes.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::schedule::entry::{
    Entry, EntryError, FiringOverrides, Grace, SendOptions, Source, parse_secs,
};
use crate::schedule::trigger_input::TriggerInput;
use crate::schedule::{tags, workflow};

/// Keys an entry table accepts.
pub(super) const KEYS: [&str; 27] = [
    "task",
    "args",
    "kwargs",
    "workflow",
    "workflow_file",
    "tags",
    "cron",
    "fields",
    "every",
    "at",
    "trigger",
    "timezone",
    "start_date",
    "end_date",
    "jitter",
    "dst",
    "calendars",
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "expires",
    "misfire_grace_time",
    "coalesce",
    "max_instances",
    "enabled",
    "description",
];

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    S(String),
    N(f64),
    D(toml::value::Datetime),
}

impl Text {
    fn into_string(self) -> String {
        match self {
            Text::S(s) => s,
            Text::N(n) => format!("{n}s"),
            Text::D(d) => d.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileEntry {
    task: Option<String>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    kwargs: Map<String, Value>,
    workflow: Option<Value>,
    workflow_file: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    cron: Option<String>,
    fields: Option<Value>,
    every: Option<Text>,
    at: Option<Text>,
    trigger: Option<Value>,
    timezone: Option<String>,
    start_date: Option<Text>,
    end_date: Option<Text>,
    jitter: Option<Text>,
    dst: Option<String>,
    calendars: Option<Vec<String>>,
    queue: Option<String>,
    exchange: Option<String>,
    routing_key: Option<String>,
    priority: Option<u8>,
    expires: Option<Text>,
    misfire_grace_time: Option<Text>,
    coalesce: Option<bool>,
    max_instances: Option<u32>,
    enabled: Option<bool>,
    description: Option<String>,
}

/// The workflow of an entry: `workflow` inline, or `workflow_file` (JSON,
/// relative to the schedule file's folder `dir`).
fn workflow_of(
    raw: &FileEntry,
    dir: &Path,
) -> Result<Option<celeriac::canvas::Canvas>, EntryError> {
    match (&raw.workflow, &raw.workflow_file) {
        (Some(w), None) => workflow::parse(w).map(Some),
        (None, Some(file)) => {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                EntryError::invalid(
                    "workflow_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            workflow::parse_json(&text).map(Some)
        }
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(EntryError::invalid(
            "workflow",
            "give `workflow` or `workflow_file`, not both",
        )),
    }
}

/// The entry `name` that `raw` defines.
pub(super) fn build(name: &str, raw: FileEntry, dir: &Path) -> Result<Entry, EntryError> {
    let flow = workflow_of(&raw, dir)?;
    let input = TriggerInput {
        cron: raw.cron,
        fields: raw.fields,
        every: raw.every.map(Text::into_string),
        at: raw.at.map(Text::into_string),
        trigger: raw.trigger,
        timezone: raw.timezone,
        start: raw.start_date.map(Text::into_string),
        end: raw.end_date.map(Text::into_string),
        jitter: raw.jitter.map(Text::into_string),
        dst: raw.dst,
        calendars: raw.calendars,
    };
    let trigger = input.build()?;
    let mut entry = match (raw.task, flow) {
        (Some(task), None) => Entry::new(name, task, trigger),
        (None, Some(flow)) => Entry::with_workflow(name, flow, trigger),
        (None, None) => {
            return Err(EntryError::invalid(
                "task",
                "missing: give `task`, or `workflow` / `workflow_file` for a workflow",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(EntryError::invalid(
                "task",
                "give `task` or a workflow (`workflow`, `workflow_file`), not both",
            ));
        }
    };
    entry.source = Source::File;
    entry.args = raw.args;
    entry.kwargs = raw.kwargs;
    entry.tags = tags::normalize(raw.tags)?;
    entry.options = SendOptions {
        queue: raw.queue,
        exchange: raw.exchange,
        routing_key: raw.routing_key,
        priority: raw.priority,
        expires_secs: raw
            .expires
            .map(|e| parse_secs("expires", &e.into_string()))
            .transpose()?,
    };
    entry.firing = FiringOverrides {
        misfire_grace: raw
            .misfire_grace_time
            .map(|g| Grace::parse(&g.into_string()))
            .transpose()?,
        coalesce: raw.coalesce,
        max_instances: raw.max_instances,
    };
    entry.enabled = raw.enabled.unwrap_or(true);
    entry.description = raw.description;
    Ok(entry)
}
