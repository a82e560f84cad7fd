//! A schedule entry: what to send, when, and what to do with late runs.

use std::time::Duration;

use celeriac::canvas::Canvas;
use celeriac_common::Config;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::trigger::{
    Calendars, ExcludedDates, Trigger, TriggerError, TriggerSpec, parse_duration,
};

/// Longest entry name (the primary key of beat's tables).
pub const NAME_MAX_LEN: usize = 191;

/// Where an entry is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The TOML schedule file (static; edit the file to change it).
    File,
    /// The database (dynamic; changed with `celeriac-beat schedule ...`).
    Database,
}

impl Source {
    /// `"file"` or `"database"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Database => "database",
        }
    }
}

/// How each run's message is sent. Everything is optional: the defaults
/// send to the configured default queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SendOptions {
    /// Queue to send to (declared as Celery declares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Exchange to publish to (default: the queue's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Routing key (default: the queue's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Message priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Seconds after the scheduled fire time after which a worker revokes
    /// the run instead of running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_secs: Option<f64>,
}

/// How late a run may be sent: runs later than this are skipped as missed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grace {
    /// At most this late.
    Within(Duration),
    /// However late (APScheduler's `misfire_grace_time = None`).
    Unlimited,
}

impl Grace {
    /// Parses `"30s"`, `"5m"` or `"unlimited"` (also `"none"`).
    pub fn parse(text: &str) -> Result<Grace, EntryError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "unlimited" | "none" => Ok(Grace::Unlimited),
            _ => parse_duration(text)
                .map(Grace::Within)
                .map_err(|e| EntryError::invalid("misfire_grace_time", e.to_string())),
        }
    }

    /// Seconds, with any negative value meaning unlimited (as stored).
    pub fn from_secs_f64(secs: f64) -> Grace {
        match celeriac_common::seconds::capped(secs) {
            Some(d) if secs.is_finite() => Grace::Within(d),
            _ => Grace::Unlimited,
        }
    }

    /// Seconds, `-1` for unlimited (as stored).
    pub fn as_secs_f64(self) -> f64 {
        match self {
            Grace::Within(d) => d.as_secs_f64(),
            Grace::Unlimited => -1.0,
        }
    }
}

impl std::fmt::Display for Grace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grace::Within(d) => write!(f, "{}s", d.as_secs_f64()),
            Grace::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// The firing options in force for an entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Firing {
    /// Runs later than this are skipped (logged as missed).
    pub misfire_grace: Grace,
    /// A backlog of due runs is sent as one run (the latest).
    pub coalesce: bool,
    /// Hold a run while this many earlier runs are unfinished (0 = no limit).
    pub max_instances: u32,
}

impl Firing {
    /// The job defaults from configuration (`beat_misfire_grace_secs`,
    /// `beat_coalesce`, `beat_max_instances`).
    pub fn from_config(config: &Config) -> Firing {
        Firing {
            misfire_grace: Grace::Within(Duration::from_secs(config.beat_misfire_grace_secs)),
            coalesce: config.beat_coalesce,
            // Above what beat remembers: acts as that (a shared config is
            // not refused by every process for it).
            max_instances: config
                .beat_max_instances
                .min(celeriac_common::config::BEAT_MAX_INSTANCES),
        }
    }
}

impl Default for Firing {
    fn default() -> Self {
        Firing::from_config(&Config::default())
    }
}

/// An entry's own firing options; each unset one takes the configured default.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct FiringOverrides {
    /// `misfire_grace_time`.
    pub misfire_grace: Option<Grace>,
    /// `coalesce`.
    pub coalesce: Option<bool>,
    /// `max_instances`.
    pub max_instances: Option<u32>,
}

impl FiringOverrides {
    /// These overrides over `defaults`.
    pub fn resolve(&self, defaults: &Firing) -> Firing {
        Firing {
            misfire_grace: self.misfire_grace.unwrap_or(defaults.misfire_grace),
            coalesce: self.coalesce.unwrap_or(defaults.coalesce),
            max_instances: self.max_instances.unwrap_or(defaults.max_instances),
        }
    }
}

/// One schedule entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Unique name across the file and the database.
    pub name: String,
    /// Task name, e.g. `tasks.report`; for a workflow entry, the name of
    /// its outer node (`celery.chain`, ...), for listings and events.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// A workflow sent on each run instead of `task` (see
    /// [`crate::schedule::workflow`]); each run gets fresh ids.
    pub workflow: Option<Canvas>,
    /// Labels that `schedule list/pause/resume/remove --tag` select by.
    pub tags: Vec<String>,
    /// When it fires.
    pub trigger: TriggerSpec,
    /// How each run is sent.
    pub options: SendOptions,
    /// Late-run handling, over the configured defaults.
    pub firing: FiringOverrides,
    /// A paused entry does not fire; runs it would have had are not "missed".
    pub enabled: bool,
    /// File or database.
    pub source: Source,
    /// Anchor of an interval trigger without `start_date`: the Unix epoch for
    /// file entries, the creation (or last trigger change) time for database ones.
    pub anchor: DateTime<Utc>,
    /// When a database entry was created; a new value means a new entry
    /// with fresh run state.
    pub created_at: Option<DateTime<Utc>>,
    /// Free text for people reading the schedule (`description` in the
    /// schedule file), shown by `schedule list`; beat does nothing with it.
    pub description: Option<String>,
}

impl Entry {
    /// An enabled entry with no arguments and default options.
    pub fn new(name: impl Into<String>, task: impl Into<String>, trigger: TriggerSpec) -> Entry {
        Entry {
            name: name.into(),
            task: task.into(),
            args: Vec::new(),
            kwargs: Map::new(),
            workflow: None,
            tags: Vec::new(),
            trigger,
            options: SendOptions::default(),
            firing: FiringOverrides::default(),
            enabled: true,
            source: Source::Database,
            anchor: DateTime::UNIX_EPOCH,
            created_at: None,
            description: None,
        }
    }

    /// An enabled entry that sends `workflow` on each run.
    pub fn with_workflow(name: impl Into<String>, workflow: Canvas, trigger: TriggerSpec) -> Entry {
        let task = crate::schedule::workflow::root_task(&workflow);
        let mut entry = Entry::new(name, task, trigger);
        entry.workflow = Some(workflow);
        entry
    }

    /// The firing options in force over `defaults`. A workflow ending in a
    /// group has no one final task to wait for: `max_instances` does not
    /// apply to it (an explicit one is refused by [`Entry::validate`]).
    pub fn firing_over(&self, defaults: &Firing) -> Firing {
        let mut firing = self.firing.resolve(defaults);
        if self
            .workflow
            .as_ref()
            .is_some_and(crate::schedule::workflow::ends_in_group)
        {
            firing.max_instances = 0;
        }
        firing
    }

    /// The compiled trigger (interval triggers anchored at [`Entry::anchor`]),
    /// for an entry that names no exclusion calendar (one that does fails:
    /// use [`Entry::compile_in`]).
    pub fn compile(&self) -> Result<Trigger, TriggerError> {
        self.compile_in(&Calendars::new())
    }

    /// The compiled trigger (interval triggers anchored at [`Entry::anchor`]),
    /// its exclusion calendars looked up in `calendars`: an unknown name is an error.
    pub fn compile_in(&self, calendars: &Calendars) -> Result<Trigger, TriggerError> {
        self.trigger.compile_in(Some(self.anchor), calendars)
    }

    /// As [`Entry::compile_in`], but an exclusion calendar missing from
    /// `calendars` counts as empty (it excludes no date); returns the missing
    /// names too, for the caller to report. A running beat compiles this way,
    /// so that a calendar removed while still named never stops an entry.
    pub fn compile_lenient(
        &self,
        calendars: &Calendars,
    ) -> Result<(Trigger, Vec<String>), TriggerError> {
        let missing: Vec<String> = calendars
            .missing(self.trigger.calendars())
            .into_iter()
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            return Ok((self.compile_in(calendars)?, missing));
        }
        let mut known = calendars.clone();
        for name in &missing {
            known.insert(name.clone(), ExcludedDates::default());
        }
        Ok((self.compile_in(&known)?, missing))
    }

    /// Checks every field (the names of exclusion calendars are not looked
    /// up: see [`Entry::compile_in`]).
    pub fn validate(&self) -> Result<(), EntryError> {
        validate_name(&self.name)?;
        if self.task.trim().is_empty() {
            return Err(EntryError::invalid("task", "must not be empty"));
        }
        if self.task.len() > 255 {
            return Err(EntryError::invalid("task", "longer than 255 bytes"));
        }
        if let Some(secs) = self.options.expires_secs
            && !(secs.is_finite() && secs > 0.0)
        {
            return Err(EntryError::invalid(
                "expires",
                "must be a positive duration",
            ));
        }
        if let Some(m) = self.firing.max_instances
            && m > celeriac_common::config::BEAT_MAX_INSTANCES
        {
            return Err(EntryError::invalid(
                "max_instances",
                format!(
                    "at most {} (0 for no limit), got {m}",
                    celeriac_common::config::BEAT_MAX_INSTANCES
                ),
            ));
        }
        // AMQP names; a queue's also goes in a delayed message's routing key.
        use celeriac_common::broker::{MAX_NAME_BYTES, MAX_QUEUE_BYTES};
        for (field, value, max) in [
            ("queue", &self.options.queue, MAX_QUEUE_BYTES),
            ("exchange", &self.options.exchange, MAX_NAME_BYTES),
            ("routing_key", &self.options.routing_key, MAX_NAME_BYTES),
        ] {
            if value.as_deref().is_some_and(|v| v.len() > max) {
                return Err(EntryError::invalid(
                    field,
                    format!("longer than {max} bytes"),
                ));
            }
        }
        crate::schedule::tags::normalize(self.tags.clone())?;
        crate::schedule::workflow::check_entry(self)?;
        self.trigger.validate()?;
        Ok(())
    }

    /// Whether `other` fires at the same times (same trigger and anchor).
    pub fn same_schedule(&self, other: &Entry) -> bool {
        self.trigger == other.trigger && self.anchor == other.anchor
    }
}

/// Checks an entry name: 1 to 191 bytes, no control characters.
pub fn validate_name(name: &str) -> Result<(), EntryError> {
    if name.trim().is_empty() {
        return Err(EntryError::invalid("name", "must not be empty"));
    }
    if name.len() > NAME_MAX_LEN {
        return Err(EntryError::invalid(
            "name",
            format!("longer than {NAME_MAX_LEN} bytes"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(EntryError::invalid("name", "contains a control character"));
    }
    Ok(())
}

/// Why an entry is invalid. The message starts with the field it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    /// The trigger does not parse or compile.
    #[error(transparent)]
    Trigger(#[from] TriggerError),
    /// Another field is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, e.g. `args`.
        field: &'static str,
        /// What is wrong, in lowercase.
        message: String,
    },
}

impl EntryError {
    /// Shorthand for [`EntryError::Invalid`].
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        EntryError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// A duration option (`expires`) from text: `"90s"`, `"1h30m"`.
pub fn parse_secs(field: &'static str, text: &str) -> Result<f64, EntryError> {
    parse_duration(text)
        .map(|d| d.as_secs_f64())
        .map_err(|e| EntryError::invalid(field, e.to_string()))
}

#[cfg(test)]
mod tests;
