//! The static schedule: a TOML file, reloaded when it changes (its
//! modification time and size are checked every second) or on SIGHUP.
//!
//! ```toml
//! [entries.nightly-report]
//! task = "tasks.report"
//! cron = "0 3 * * *"
//! timezone = "Europe/Berlin"
//! kwargs = { format = "pdf" }
//! queue = "reports"
//! expires = "1h"
//!
//! [entries.heartbeat]
//! task = "celeriac.noop"
//! every = "10s"
//! misfire_grace_time = "5s"
//! coalesce = true
//! max_instances = 1
//! ```
//!
//! Each `[entries.NAME]` table takes `task` with `args` and `kwargs`, or a
//! workflow instead (`workflow`, inline, or `workflow_file`, a JSON file
//! relative to this one: see [`crate::schedule::workflow`]), `tags`,
//! exactly one trigger (`cron`, `fields`, `every`, `at`, or a full
//! `trigger = { type = ..., ... }`), `timezone`, `start_date`, `end_date`,
//! `jitter`, `dst` (`"cron"` or `"repeat"`), `calendars` (exclusion calendar
//! names), `queue`, `exchange`, `routing_key`, `priority`, `expires`,
//! `misfire_grace_time`, `coalesce`, `max_instances`, `enabled` and
//! `description` (free text, shown by `celeriac-beat schedule list`).
//!
//! Exclusion calendars go in `[calendars.NAME]` tables: `dates`, a list of
//! `"2026-12-25"`, `"2026-12-24..2026-12-26"` (inclusive) or
//! `{ date = "2026-07-03", to = "2026-07-05", label = "..." }`, and/or `ics`,
//! the path of an iCalendar file (or a list of paths), relative to the
//! schedule file:
//!
//! ```toml
//! [calendars.us-holidays]
//! ics = "us-holidays-2026.ics"
//! dates = ["2026-11-27", { date = "2026-12-24", label = "Christmas Eve" }]
//!
//! [entries.payroll]
//! task = "tasks.payroll"
//! cron = "0 9 * * mon-fri"
//! timezone = "America/New_York"
//! calendars = ["us-holidays"]
//! ```
//! Durations are strings (`"90s"`, `"1h30m"`) or numbers of seconds. An
//! interval without `start_date` is anchored at the Unix epoch (`every =
//! "10s"` fires at :00, :10, ...), the same in every beat.
//!
//! A file that does not parse stops `celeriac-beat run` at start with one
//! line naming the entry and field; on reload it is logged and the previous
//! entries stay in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::schedule::entry::{Entry, EntryError};
use crate::schedule::holidays::{CalendarDay, to_calendars};
use crate::trigger::{Calendars, TriggerError, suggest};

mod calendars;
mod raw;
mod reload;

use raw::{FileEntry, KEYS, build};

use calendars::calendar_table;
pub(crate) use calendars::truncate;
pub use reload::watch;

/// A schedule file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read.
    #[error("cannot read schedule file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML or not shaped like a schedule.
    #[error("schedule file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number when known).
        message: String,
    },
    /// One calendar is invalid.
    #[error("schedule file {path}: calendar \"{calendar}\"")]
    Calendar {
        /// The file.
        path: PathBuf,
        /// The calendar's name.
        calendar: String,
        /// What is wrong.
        source: TriggerError,
    },
    /// One entry is invalid.
    #[error("schedule file {path}: entry \"{entry}\"")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's name.
        entry: String,
        /// What is wrong.
        source: EntryError,
    },
}

/// What a schedule file defines: entries and exclusion calendars.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleFile {
    /// The `[entries.NAME]` tables.
    pub entries: Vec<Entry>,
    /// The dates of the `[calendars.NAME]` tables.
    pub calendar_days: Vec<CalendarDay>,
}

impl ScheduleFile {
    /// The file's calendars.
    pub fn calendars(&self) -> Calendars {
        to_calendars(&self.calendar_days)
    }
}

impl From<Vec<Entry>> for ScheduleFile {
    fn from(entries: Vec<Entry>) -> Self {
        ScheduleFile {
            entries,
            calendar_days: Vec::new(),
        }
    }
}

/// Checks that every calendar the file's entries name is defined, in the
/// file or in `db` (the database's calendars).
pub fn check_calendars(file: &ScheduleFile, db: &Calendars, path: &Path) -> Result<(), FileError> {
    let defined = db.overlaid(&file.calendars());
    for entry in &file.entries {
        if let Some(name) = defined.missing(entry.trigger.calendars()).first() {
            return Err(FileError::Entry {
                path: path.to_owned(),
                entry: entry.name.clone(),
                source: defined.unknown(name).into(),
            });
        }
    }
    Ok(())
}

/// Reads and checks the schedule file at `path`. Calendar names entries use
/// are not looked up here (a file entry may name a database calendar).
pub fn load(path: &Path) -> Result<ScheduleFile, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// [`load`]s the schedule file at `path` if one is given; with none, an
/// empty schedule.
pub fn load_or_empty(path: Option<&Path>) -> Result<ScheduleFile, FileError> {
    path.map_or_else(|| Ok(ScheduleFile::default()), load)
}

/// Parses schedule file text (`path` is for messages, and `ics` paths are
/// relative to its folder).
pub fn parse(text: &str, path: &Path) -> Result<ScheduleFile, FileError> {
    let fail = |message: String| FileError::Parse {
        path: path.to_owned(),
        message,
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        fail(match line {
            Some(l) => format!("line {l}: {}", e.message().trim()),
            None => e.message().trim().to_owned(),
        })
    })?;
    if let Some(key) = table.keys().find(|k| *k != "entries" && *k != "calendars") {
        let hint = suggest(key, ["entries", "calendars"])
            .map(|s| format!(", did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(fail(format!(
            "unknown top-level key \"{key}\"{hint} (entries go in [entries.NAME] tables)"
        )));
    }
    let entries: BTreeMap<String, toml::Value> = match table.get("entries") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(t)) => t.clone().into_iter().collect(),
        Some(_) => {
            return Err(fail(
                "\"entries\" must be a table of [entries.NAME] tables".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let entry_err = |source: EntryError| FileError::Entry {
            path: path.to_owned(),
            entry: name.clone(),
            source,
        };
        let toml::Value::Table(t) = &value else {
            return Err(entry_err(EntryError::invalid("entry", "must be a table")));
        };
        if let Some(key) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
            let hint = suggest(key, KEYS)
                .map(|s| format!(", did you mean \"{s}\"?"))
                .unwrap_or_default();
            return Err(entry_err(EntryError::invalid(
                "key",
                format!("unknown key \"{key}\"{hint}"),
            )));
        }
        let raw: FileEntry = value.try_into().map_err(|e: toml::de::Error| {
            entry_err(EntryError::invalid("entry", e.message().trim().to_owned()))
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let entry = build(&name, raw, dir).map_err(entry_err)?;
        entry.validate().map_err(entry_err)?;
        out.push(entry);
    }
    let calendar_days = match table.get("calendars") {
        None => Vec::new(),
        Some(toml::Value::Table(t)) => {
            let mut days = Vec::new();
            for (name, value) in t {
                let days_of =
                    calendar_table(name, value, path).map_err(|source| FileError::Calendar {
                        path: path.to_owned(),
                        calendar: name.clone(),
                        source,
                    })?;
                days.extend(days_of);
            }
            days
        }
        Some(_) => {
            return Err(fail(
                "\"calendars\" must be a table of [calendars.NAME] tables".into(),
            ));
        }
    };
    Ok(ScheduleFile {
        entries: out,
        calendar_days,
    })
}

#[cfg(test)]
mod tests;
