//! `celeriac-beat calendar ...`: exclusion calendars in the database.

use std::path::Path;

use chrono::{NaiveDate, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::cli::error::CliError;
use crate::schedule::entry::EntryError;
use crate::schedule::file_source::{self, truncate};
use crate::schedule::holidays::{self, CalendarDay};
use crate::schedule::ics;
use crate::schedule::store::Store;
use crate::trigger::{DateRange, suggest, validate_calendar_name};

#[derive(Debug, Subcommand)]
pub(crate) enum CalendarCommand {
    /// Add dates to a calendar (created by its first date): one date or
    /// range, or every event of an iCalendar file.
    Add {
        /// Calendar name, e.g. us-holidays.
        name: String,
        /// A date (2026-12-25) or an inclusive range (2026-12-24..2026-12-26).
        #[arg(long, required_unless_present = "ics", conflicts_with = "ics")]
        date: Option<String>,
        /// Last date of a range starting at --date (inclusive).
        #[arg(long, requires = "date")]
        to: Option<String>,
        /// What the date is, e.g. "Christmas Day".
        #[arg(long, requires = "date")]
        label: Option<String>,
        /// Import every event of this .ics file (all-day and timed events;
        /// yearly rules expanded).
        #[arg(long)]
        ics: Option<std::path::PathBuf>,
    },
    /// List calendars and their dates (database and schedule file).
    List {
        /// Only this calendar.
        name: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a calendar, or one of its dates.
    Remove {
        /// Calendar name.
        name: String,
        /// Remove only the date (or the range starting on it).
        #[arg(long)]
        date: Option<String>,
        /// Remove it even though entries still name it (they then fire on every date).
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `calendar` subcommand.
pub(crate) async fn run(
    command: CalendarCommand,
    store: &Store,
    schedule: Option<&Path>,
) -> Result<(), CliError> {
    let file = file_source::load_or_empty(schedule).map_err(crate::error::BeatError::from)?;
    let in_file = |name: &str| file.calendar_days.iter().any(|d| d.calendar == name);
    let file_owned = |name: &str| {
        CliError::Usage(format!(
            "calendar \"{name}\" is defined in the schedule file; edit the file to change it"
        ))
    };
    let now = Utc::now();
    match command {
        CalendarCommand::Add {
            name,
            date,
            to,
            label,
            ics: ics_path,
        } => {
            validate_calendar_name(&name).map_err(EntryError::from)?;
            if in_file(&name) {
                return Err(file_owned(&name));
            }
            let days = match (date, ics_path) {
                (Some(date), _) => {
                    let text = match to {
                        Some(to) => format!("{date}..{to}"),
                        None => date,
                    };
                    let range = DateRange::parse(&text).map_err(EntryError::from)?;
                    vec![(range, label.map(|l| truncate(&l)))]
                }
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        CliError::Usage(format!("cannot read {}: {e}", path.display()))
                    })?;
                    let read = ics::read(&text)
                        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
                    for warning in &read.warnings {
                        eprintln!("celeriac-beat: warning: {}: {warning}", path.display());
                    }
                    if read.dates.is_empty() {
                        return Err(CliError::Usage(format!(
                            "{}: no event to import",
                            path.display()
                        )));
                    }
                    read.dates
                        .into_iter()
                        .map(|(r, l)| (r, l.map(|l| truncate(&l))))
                        .collect()
                }
                (None, None) => return Err(CliError::Usage("give --date or --ics".into())),
            };
            let n = store.add_calendar_days(&name, &days, now).await?;
            celeriac_common::outln!("added {n} date{} to {name}", if n == 1 { "" } else { "s" });
            Ok(())
        }
        CalendarCommand::List { name, json } => {
            let days = holidays::merge(&file.calendar_days, store.calendar_days().await?);
            let days: Vec<&CalendarDay> = match &name {
                None => days.iter().collect(),
                Some(n) => {
                    let picked: Vec<&CalendarDay> =
                        days.iter().filter(|d| &d.calendar == n).collect();
                    if picked.is_empty() {
                        return Err(unknown(n, &days));
                    }
                    picked
                }
            };
            print_days(&days, json);
            Ok(())
        }
        CalendarCommand::Remove { name, date, force } => {
            let db_days = store.calendar_days().await?;
            if !db_days.iter().any(|d| d.calendar == name) {
                return Err(if in_file(&name) {
                    file_owned(&name)
                } else {
                    unknown(&name, &db_days)
                });
            }
            let date = date
                .map(|d| {
                    NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d").map_err(|_| {
                        CliError::Usage(format!(
                            "--date: invalid date \"{d}\", expected YYYY-MM-DD"
                        ))
                    })
                })
                .transpose()?;
            if date.is_none() && !force {
                let (_, entries) = store.load().await?;
                let users: Vec<&str> = entries
                    .iter()
                    .chain(&file.entries)
                    .filter(|e| e.trigger.calendars().contains(&name))
                    .map(|e| e.name.as_str())
                    .collect();
                if !users.is_empty() {
                    return Err(CliError::Usage(format!(
                        "calendar \"{name}\" is used by {} (remove it from them first, \
                         or pass --force: they would then fire on every date)",
                        users
                            .iter()
                            .map(|u| format!("\"{u}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            let removed = store.remove_calendar(&name, date).await?;
            match date {
                Some(d) if removed == 0 => Err(CliError::Usage(format!(
                    "calendar \"{name}\" has no date or range starting on {d}"
                ))),
                Some(d) => {
                    celeriac_common::outln!("removed {d} from {name}");
                    Ok(())
                }
                None => {
                    celeriac_common::outln!("removed {name}");
                    Ok(())
                }
            }
        }
    }
}

fn unknown(name: &str, days: &[CalendarDay]) -> CliError {
    let hint = suggest(name, days.iter().map(|d| d.calendar.as_str()))
        .map(|s| format!(", did you mean \"{s}\"?"))
        .unwrap_or_default();
    CliError::Usage(format!("unknown calendar \"{name}\"{hint}"))
}

fn print_days(days: &[&CalendarDay], json: bool) {
    let rows: Vec<Value> = days
        .iter()
        .map(|d| {
            json!({
                "calendar": d.calendar,
                "source": d.source.as_str(),
                "from": d.range.from.to_string(),
                "to": d.range.to.to_string(),
                "label": d.label,
            })
        })
        .collect();
    if json {
        celeriac_common::outln!("{}", Value::Array(rows));
        return;
    }
    let table: Vec<[String; 4]> = days
        .iter()
        .map(|d| {
            [
                d.calendar.clone(),
                d.source.as_str().to_owned(),
                d.range.to_string(),
                d.label.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["CALENDAR", "SOURCE", "DATES", "LABEL"].map(str::to_owned);
    super::print_columns(&header, &table);
}
