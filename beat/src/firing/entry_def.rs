//! What the scheduler keeps of an entry: enough to send its runs and to
//! notice changes, in about half the memory of an [`Entry`] (the trigger
//! description is kept as its JSON text; the compiled trigger sits beside it).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::clock::format_instant;
use crate::schedule::entry::{Entry, FiringOverrides, SendOptions, Source};
use crate::trigger::TriggerSpec;

/// A compact entry, without its name (the scheduler's key) or trigger spec.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryDef {
    /// Task name.
    pub task: Box<str>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Message options, if any differ from the defaults.
    pub options: Option<Box<SendOptions>>,
    /// The entry's own firing options.
    pub firing: FiringOverrides,
    /// File or database.
    pub source: Source,
    /// Paused or not.
    pub enabled: bool,
    /// Creation time of a database entry.
    pub created_at: Option<DateTime<Utc>>,
    /// The trigger (JSON) and anchor: equal exactly when the fire times are.
    schedule: Box<str>,
}

impl EntryDef {
    /// The compact form of `entry`.
    pub fn new(entry: &Entry) -> EntryDef {
        let trigger = serde_json::to_string(&entry.trigger).unwrap_or_default();
        EntryDef {
            task: entry.task.as_str().into(),
            args: entry.args.clone(),
            kwargs: entry.kwargs.clone(),
            options: (entry.options != SendOptions::default())
                .then(|| Box::new(entry.options.clone())),
            firing: entry.firing,
            source: entry.source,
            enabled: entry.enabled,
            created_at: entry.created_at,
            schedule: format!("{trigger}@{}", format_instant(entry.anchor)).into(),
        }
    }

    /// The trigger description and interval anchor it was made with.
    pub fn trigger_spec(&self) -> Option<(TriggerSpec, DateTime<Utc>)> {
        // The anchor has no '@'; the trigger may (`@daily`).
        let (json, anchor) = self.schedule.rsplit_once('@')?;
        let spec = serde_json::from_str(json).ok()?;
        Some((spec, crate::clock::parse_instant(anchor)?))
    }

    /// Whether both fire at the same times.
    pub fn same_schedule(&self, other: &EntryDef) -> bool {
        self.schedule == other.schedule
    }

    /// The message options.
    pub fn options(&self) -> SendOptions {
        self.options.as_deref().cloned().unwrap_or_default()
    }

    /// `expires` in seconds, if set.
    pub fn expires_secs(&self) -> Option<f64> {
        self.options.as_ref().and_then(|o| o.expires_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_schedules_and_everything() {
        let spec = |expr: &str| TriggerSpec::Cron {
            expr: expr.into(),
            timezone: None,
            start_date: None,
            end_date: None,
            dst: None,
            calendars: Vec::new(),
        };
        let a = Entry::new("a", "t", spec("* * * * *"));
        let mut b = a.clone();
        b.args = vec![Value::from(1)];
        assert!(EntryDef::new(&a).same_schedule(&EntryDef::new(&b)));
        assert_ne!(EntryDef::new(&a), EntryDef::new(&b));
        let c = Entry::new("a", "t", spec("*/2 * * * *"));
        assert!(!EntryDef::new(&a).same_schedule(&EntryDef::new(&c)));
        assert!(EntryDef::new(&a).options.is_none());
        let daily = Entry::new("d", "t", spec("@daily"));
        let (back, anchor) = EntryDef::new(&daily).trigger_spec().expect("reads back");
        assert_eq!((back, anchor), (daily.trigger, daily.anchor));
    }
}
