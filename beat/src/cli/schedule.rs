//! `celeriac-beat schedule ...`: list and change the database schedule.

use std::path::Path;

use celeriac_common::Config;
use chrono::{DateTime, Utc};
use clap::Subcommand;

use crate::cli::args::{EntryArgs, TriggerArgs, WorkflowArgs};
use crate::cli::error::CliError;
use crate::cli::list::{ListArgs, list};
use crate::cli::tagged::{Selector, TagVerb, by_tag};
use crate::clock::format_instant;
use crate::firing::dispatch::run_now_task_id;
use crate::schedule::entry::{Entry, EntryError, validate_name};
use crate::schedule::file_source;
use crate::schedule::store::StoreError;
use crate::schedule::workflow::root_task;
use crate::trigger::{Calendars, Schedule};

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum ScheduleCommand {
    /// List file and database entries with their run state.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the entries with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Add a database entry: a task, or a workflow (--workflow, --workflow-file).
    Add {
        /// Unique entry name.
        name: String,
        /// Task name, e.g. tasks.report.
        #[arg(
            required_unless_present_any = ["workflow", "workflow_file"],
            conflicts_with_all = ["workflow", "workflow_file"]
        )]
        task: Option<String>,
        #[command(flatten)]
        workflow: WorkflowArgs,
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
        /// New task name (a workflow entry becomes a task entry).
        #[arg(long, conflicts_with_all = ["workflow", "workflow_file"])]
        task: Option<String>,
        /// A new workflow (a task entry becomes a workflow entry).
        #[command(flatten)]
        workflow: WorkflowArgs,
        #[command(flatten)]
        trigger: TriggerArgs,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Remove a database entry (or every one with --tag) and its run state.
    Remove(Selector),
    /// Pause a database entry (or every one with --tag): it does not fire until resumed.
    Pause(Selector),
    /// Resume a paused entry (or every one with --tag); it fires from now on
    /// (runs while paused are not sent).
    Resume(Selector),
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
        ScheduleCommand::List { json, tag } => {
            let args = ListArgs {
                json,
                tag: tag.as_deref(),
                file_known: schedule.is_some(),
            };
            list(&store, file_entries, &calendars, config, args).await
        }
        ScheduleCommand::Remove(Selector { tag: Some(tag), .. }) => {
            by_tag(&store, TagVerb::Remove, &tag, &file_entries, schedule, now).await
        }
        ScheduleCommand::Pause(Selector { tag: Some(tag), .. }) => {
            by_tag(&store, TagVerb::Pause, &tag, &file_entries, schedule, now).await
        }
        ScheduleCommand::Resume(Selector { tag: Some(tag), .. }) => {
            by_tag(&store, TagVerb::Resume, &tag, &file_entries, schedule, now).await
        }
        ScheduleCommand::Add {
            name,
            task,
            workflow,
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
            let trigger = trigger.input()?.build()?;
            let mut new = match (task, workflow.canvas()?) {
                (_, Some(flow)) => Entry::with_workflow(name, flow, trigger),
                (Some(task), None) => Entry::new(name, task, trigger),
                (None, None) => {
                    return Err(CliError::Usage("give a task or --workflow".into()));
                }
            };
            entry.apply(&mut new)?;
            new.enabled = !paused;
            new.anchor = now;
            fires_after(&new, &calendars, now)?;
            store.add(&new, now).await?;
            celeriac_common::outln!("added {}", new.name);
            Ok(())
        }
        ScheduleCommand::Modify {
            name,
            task,
            workflow,
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
                e.workflow = None;
            }
            if let Some(flow) = workflow.canvas()? {
                e.task = root_task(&flow);
                e.workflow = Some(flow);
                e.args.clear();
                e.kwargs.clear();
            }
            let input = trigger.input()?;
            if !input.is_empty() {
                e.trigger = input.overlay(Some(&e.trigger))?;
            }
            entry.apply(&mut e)?;
            fires_after(&e, &calendars, now)?;
            store.modify(&e, now).await?;
            celeriac_common::outln!("modified {name}");
            Ok(())
        }
        ScheduleCommand::Remove(Selector {
            name: Some(name), ..
        }) => {
            if in_file(&name) && store.get(&name).await?.is_none() {
                return Err(file_owned(&name));
            }
            store.remove(&name, now).await?;
            celeriac_common::outln!("removed {name}");
            Ok(())
        }
        ScheduleCommand::Pause(Selector {
            name: Some(name), ..
        })
        | ScheduleCommand::Resume(Selector {
            name: Some(name), ..
        }) if in_file(&name) && store.get(&name).await?.is_none() => Err(file_owned(&name)),
        ScheduleCommand::Pause(Selector {
            name: Some(name), ..
        }) => {
            store.set_enabled(&name, false, now).await?;
            celeriac_common::outln!("paused {name}");
            Ok(())
        }
        ScheduleCommand::Resume(Selector {
            name: Some(name), ..
        }) => {
            store.set_enabled(&name, true, now).await?;
            celeriac_common::outln!("resumed {name}");
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
            celeriac_common::outln!("{}", run_now_task_id(&name, now));
            Ok(())
        }
        ScheduleCommand::Remove(_) | ScheduleCommand::Pause(_) | ScheduleCommand::Resume(_) => {
            Err(CliError::Usage("give an entry name or --tag".into()))
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
