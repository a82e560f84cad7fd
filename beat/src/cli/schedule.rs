//! `celeriac-beat schedule ...`: list and change the database schedule.

use std::path::Path;

use celeriac_common::Config;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::cli::args::{EntryArgs, TriggerArgs};
use crate::cli::error::CliError;
use crate::clock::format_instant;
use crate::firing::dispatch::{run_now_task_id, task_id};
use crate::firing::run_state::{self, RunState};
use crate::schedule::entry::{Entry, EntryError, Firing, Grace, validate_name};
use crate::schedule::file_source;
use crate::schedule::store::{Store, StoreError};
use crate::schedule::trigger_input::describe;
use crate::trigger::{Calendars, Schedule};

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum ScheduleCommand {
    /// List file and database entries with their run state.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a database entry.
    Add {
        /// Unique entry name.
        name: String,
        /// Task name, e.g. tasks.report.
        task: String,
        #[command(flatten)]
        trigger: TriggerArgs,
        #[command(flatten)]
        entry: EntryArgs,
        /// Add it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Change a database entry; only what is given changes.
    Modify {
        /// Entry name.
        name: String,
        /// New task name.
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        trigger: TriggerArgs,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Remove a database entry and its run state.
    Remove {
        /// Entry name.
        name: String,
    },
    /// Pause a database entry: it does not fire until resumed.
    Pause {
        /// Entry name.
        name: String,
    },
    /// Resume a paused entry; it fires from now on (runs while paused are not sent).
    Resume {
        /// Entry name.
        name: String,
    },
    /// Send one run of an entry now (file or database), besides its schedule.
    RunNow {
        /// Entry name.
        name: String,
    },
}

/// Runs a `schedule` subcommand.
pub(crate) async fn run(
    command: ScheduleCommand,
    config: &Config,
    schedule: Option<&Path>,
) -> Result<(), CliError> {
    let file = file_source::load_or_empty(schedule).map_err(crate::error::BeatError::from)?;
    let file_calendars = file.calendars();
    let file_entries = file.entries;
    let in_file = |name: &str| file_entries.iter().any(|e| e.name == name);
    let file_owned = |name: &str| -> CliError {
        CliError::Usage(format!(
            "entry \"{name}\" is defined in the schedule file {}; edit the file to change it",
            schedule
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ))
    };
    let store = crate::cli::open_store(config).await?;
    let now = Utc::now();
    let calendars = store.calendars().await?.overlaid(&file_calendars);
    match command {
        ScheduleCommand::List { json } => {
            list(&store, file_entries, &calendars, config, json).await
        }
        ScheduleCommand::Add {
            name,
            task,
            trigger,
            entry,
            paused,
        } => {
            validate_name(&name)?;
            if in_file(&name) {
                return Err(CliError::Usage(format!(
                    "entry \"{name}\" already exists in the schedule file"
                )));
            }
            let mut new = Entry::new(name, task, trigger.input()?.build()?);
            entry.apply(&mut new)?;
            new.enabled = !paused;
            new.anchor = now;
            fires_after(&new, &calendars, now)?;
            store.add(&new, now).await?;
            println!("added {}", new.name);
            Ok(())
        }
        ScheduleCommand::Modify {
            name,
            task,
            trigger,
            entry,
        } => {
            let Some(mut e) = store.get(&name).await? else {
                return Err(if in_file(&name) {
                    file_owned(&name)
                } else {
                    StoreError::Unknown(name).into()
                });
            };
            if let Some(t) = task {
                e.task = t;
            }
            let input = trigger.input()?;
            if !input.is_empty() {
                e.trigger = input.overlay(Some(&e.trigger))?;
            }
            entry.apply(&mut e)?;
            fires_after(&e, &calendars, now)?;
            store.modify(&e, now).await?;
            println!("modified {name}");
            Ok(())
        }
        ScheduleCommand::Remove { name } => {
            if in_file(&name) && store.get(&name).await?.is_none() {
                return Err(file_owned(&name));
            }
            store.remove(&name, now).await?;
            println!("removed {name}");
            Ok(())
        }
        ScheduleCommand::Pause { name } | ScheduleCommand::Resume { name }
            if in_file(&name) && store.get(&name).await?.is_none() =>
        {
            Err(file_owned(&name))
        }
        ScheduleCommand::Pause { name } => {
            store.set_enabled(&name, false, now).await?;
            println!("paused {name}");
            Ok(())
        }
        ScheduleCommand::Resume { name } => {
            store.set_enabled(&name, true, now).await?;
            println!("resumed {name}");
            Ok(())
        }
        ScheduleCommand::RunNow { name } => {
            if !in_file(&name) && store.get(&name).await?.is_none() {
                let mut msg = format!("unknown entry \"{name}\"");
                if schedule.is_none() {
                    msg.push_str(" (for a schedule file entry, pass --schedule FILE)");
                }
                return Err(CliError::Usage(msg));
            }
            store.request_run_now(&name, now).await?;
            println!("{}", run_now_task_id(&name, now));
            Ok(())
        }
    }
}

/// Validates an entry (its calendars must be defined) and checks that its
/// trigger fires at least once more.
fn fires_after(entry: &Entry, calendars: &Calendars, now: DateTime<Utc>) -> Result<(), CliError> {
    entry.validate()?;
    let trigger = entry.compile_in(calendars).map_err(EntryError::from)?;
    if trigger.next_after(now).is_none() {
        return Err(EntryError::invalid(
            "trigger",
            format!("never fires after {}", format_instant(now)),
        )
        .into());
    }
    Ok(())
}

async fn list(
    store: &Store,
    file_entries: Vec<Entry>,
    calendars: &Calendars,
    config: &Config,
    json: bool,
) -> Result<(), CliError> {
    let (_, db_entries) = store.load().await?;
    let mut states = run_state::load_all(store.db()).await?;
    let names: std::collections::HashSet<String> =
        file_entries.iter().map(|e| e.name.clone()).collect();
    let mut entries: Vec<Entry> = file_entries;
    entries.extend(db_entries.into_iter().filter(|e| !names.contains(&e.name)));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
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
    if json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    let text = |v: &Value, k: &str| match &v[k] {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table: Vec<[String; 9]> = rows
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
                text(r, "task"),
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
        "NEXT RUN",
        "LAST RUN",
        "RUNS",
        "DESCRIPTION",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&table) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}

fn row(
    e: &Entry,
    s: RunState,
    defaults: &Firing,
    calendars: &Calendars,
    now: DateTime<Utc>,
) -> Value {
    let firing = e.firing.resolve(defaults);
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
