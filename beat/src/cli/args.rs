//! Flags shared by several commands: a trigger (`schedule add`, `schedule
//! modify`, `preview`) and an entry's options (`schedule add`, `schedule
//! modify`), and what they turn into.

use std::path::PathBuf;

use celeriac::canvas::Canvas;
use clap::Args;
use serde_json::Value;

use crate::cli::error::CliError;
use crate::schedule::entry::{Entry, EntryError, Grace, parse_secs};
use crate::schedule::trigger_input::TriggerInput;
use crate::schedule::{tags, workflow};

/// A workflow sent instead of one task (`schedule add`, `schedule modify`).
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct WorkflowArgs {
    /// Send this workflow on each run instead of a task: JSON, in Celery's
    /// canvas dict form or the short form ('{"chain": ["a", {"group": ["b", "c"]}, "d"]}').
    #[arg(long, conflicts_with = "workflow_file")]
    pub(crate) workflow: Option<String>,
    /// As --workflow, read from a JSON file.
    #[arg(long, value_name = "FILE")]
    pub(crate) workflow_file: Option<PathBuf>,
}

impl WorkflowArgs {
    /// The workflow given, checked; `None` if none is.
    pub(crate) fn canvas(&self) -> Result<Option<Canvas>, CliError> {
        if let Some(text) = &self.workflow {
            return Ok(Some(workflow::parse_json(text)?));
        }
        let Some(path) = &self.workflow_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            EntryError::invalid(
                "workflow_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(Some(workflow::parse_json(&text)?))
    }
}

/// The trigger flags shared by `schedule add`, `schedule modify` and `preview`.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct TriggerArgs {
    /// Crontab string: 5, 6 (seconds first) or 7 (plus year) fields, or @daily etc.
    #[arg(long)]
    cron: Option<String>,
    /// APScheduler-style fields as JSON, e.g. '{"day_of_week": "mon-fri", "hour": 9}'.
    #[arg(long)]
    fields: Option<String>,
    /// Interval, e.g. 30s, 1h30m, 2d.
    #[arg(long)]
    every: Option<String>,
    /// Run once at this RFC 3339 instant.
    #[arg(long)]
    at: Option<String>,
    /// IANA time zone the trigger is evaluated in [default: UTC].
    #[arg(long)]
    tz: Option<String>,
    /// No fire before this (RFC 3339, or a date-time in --tz).
    #[arg(long)]
    start: Option<String>,
    /// No fire after this (RFC 3339, or a date-time in --tz).
    #[arg(long)]
    end: Option<String>,
    /// Random delay of interval runs, up to this duration.
    #[arg(long)]
    jitter: Option<String>,
    /// What a cron or fields trigger does when the clock jumps: cron or repeat [default: cron].
    #[arg(long, value_name = "POLICY")]
    dst: Option<String>,
    /// Skip fire times on the dates of this exclusion calendar (repeatable;
    /// `--exclude-calendar ''` removes them on modify).
    #[arg(long = "exclude-calendar", value_name = "NAME")]
    exclude_calendar: Vec<String>,
}

impl TriggerArgs {
    pub(crate) fn input(&self) -> Result<TriggerInput, CliError> {
        let fields = self
            .fields
            .as_deref()
            .map(|f| {
                serde_json::from_str(f)
                    .map_err(|e| EntryError::invalid("fields", format!("invalid JSON: {e}")))
            })
            .transpose()?;
        Ok(TriggerInput {
            cron: self.cron.clone(),
            fields,
            every: self.every.clone(),
            at: self.at.clone(),
            trigger: None,
            timezone: self.tz.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            jitter: self.jitter.clone(),
            dst: self.dst.clone(),
            calendars: match self.exclude_calendar.as_slice() {
                [] => None,
                [only] if only.is_empty() => Some(Vec::new()),
                names => Some(names.to_vec()),
            },
        })
    }
}

/// Entry options shared by `schedule add` and `schedule modify`.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct EntryArgs {
    /// Positional arguments as a JSON array.
    #[arg(long)]
    args: Option<String>,
    /// Keyword arguments as a JSON object.
    #[arg(long)]
    kwargs: Option<String>,
    /// Queue to send to [default: the configured default queue].
    #[arg(long)]
    queue: Option<String>,
    /// Exchange to publish to [default: the queue's own].
    #[arg(long)]
    exchange: Option<String>,
    /// Routing key [default: the queue's name].
    #[arg(long)]
    routing_key: Option<String>,
    /// Message priority (0-255).
    #[arg(long)]
    priority: Option<u8>,
    /// Revoke a run not started within this long after its scheduled time, e.g. 1h.
    #[arg(long)]
    expires: Option<String>,
    /// Skip runs later than this, e.g. 30s, or "unlimited" [default: beat_misfire_grace_secs].
    #[arg(long)]
    misfire_grace: Option<String>,
    /// Send a backlog of due runs as one run [default: beat_coalesce].
    #[arg(long)]
    coalesce: Option<bool>,
    /// Hold a run while this many runs are unfinished; 0 = no limit [default: beat_max_instances].
    #[arg(long)]
    max_instances: Option<u32>,
    /// Tag the entry (repeatable; on modify it replaces the tags, `--tag ''` removes them).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
}

impl EntryArgs {
    /// Sets what is given on `entry`.
    pub(crate) fn apply(&self, entry: &mut Entry) -> Result<(), CliError> {
        if let Some(a) = &self.args {
            entry.args = match serde_json::from_str(a) {
                Ok(Value::Array(v)) => v,
                _ => {
                    return Err(EntryError::invalid(
                        "args",
                        "expected a JSON array, e.g. '[1, \"a\"]'",
                    )
                    .into());
                }
            };
        }
        if let Some(k) = &self.kwargs {
            entry.kwargs = match serde_json::from_str(k) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(EntryError::invalid(
                        "kwargs",
                        "expected a JSON object, e.g. '{\"x\": 1}'",
                    )
                    .into());
                }
            };
        }
        let o = &mut entry.options;
        for (slot, value) in [
            (&mut o.queue, &self.queue),
            (&mut o.exchange, &self.exchange),
            (&mut o.routing_key, &self.routing_key),
        ] {
            if let Some(v) = value {
                *slot = (!v.is_empty()).then(|| v.clone());
            }
        }
        if self.priority.is_some() {
            o.priority = self.priority;
        }
        if let Some(e) = &self.expires {
            o.expires_secs = if e == "none" {
                None
            } else {
                Some(parse_secs("expires", e)?)
            };
        }
        if let Some(g) = &self.misfire_grace {
            entry.firing.misfire_grace = Some(Grace::parse(g)?);
        }
        if self.coalesce.is_some() {
            entry.firing.coalesce = self.coalesce;
        }
        if self.max_instances.is_some() {
            entry.firing.max_instances = self.max_instances;
        }
        match self.tags.as_slice() {
            [] => {}
            [only] if only.is_empty() => entry.tags.clear(),
            given => entry.tags = tags::normalize(given.to_vec())?,
        }
        Ok(())
    }
}
