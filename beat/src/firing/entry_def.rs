//! What the scheduler keeps of an entry: enough to send its runs and to
//! notice changes, in a fraction of the memory of an [`Entry`]. The task
//! name is shared with every other entry of the same task
//! ([`TaskNames`]); arguments, workflow, message options and firing
//! overrides take one pointer together when they are all left at their
//! defaults (the common case);
//! the trigger is kept compiled beside it, and of its description only a
//! 64-bit fingerprint stays (the description itself only when the trigger
//! names exclusion calendars, which may need it to be compiled again).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;

use celeriac::canvas::Canvas;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::schedule::entry::{Entry, Firing, FiringOverrides, SendOptions, Source};
use crate::schedule::workflow::ends_in_group;
use crate::trigger::TriggerSpec;

/// A compact entry, without its name (the scheduler's key) or trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryDef {
    /// Task name.
    pub task: Arc<str>,
    /// File or database.
    pub source: Source,
    /// Paused or not.
    pub enabled: bool,
    /// Creation time of a database entry.
    pub created_at: Option<DateTime<Utc>>,
    /// Everything usually left at its default, boxed together and only
    /// when something is set.
    extra: Option<Box<Extra>>,
    /// Fingerprint of the trigger description (as JSON) and anchor: equal
    /// when the fire times are (a different description with a 2^-64 chance
    /// of the same value).
    schedule: u64,
}

/// What most entries leave at its default.
#[derive(Clone, Debug, Default, PartialEq)]
struct Extra {
    /// The workflow sent instead of `task`, if any.
    workflow: Option<Arc<Canvas>>,
    /// Arguments, if there are any.
    payload: Option<Payload>,
    /// Message options, if any differ from the defaults.
    options: Option<SendOptions>,
    /// The entry's own firing options, if it has any.
    firing: Option<FiringOverrides>,
    /// The trigger description and anchor, kept only when the trigger names
    /// exclusion calendars.
    spec: Option<(TriggerSpec, DateTime<Utc>)>,
}

/// An entry's positional and keyword arguments.
type Payload = (Vec<Value>, Map<String, Value>);

/// Task names shared between entries: 100,000 entries of ten tasks hold
/// ten strings. Names stay for the life of the scheduler (a few bytes each).
#[derive(Debug, Default)]
pub struct TaskNames(HashSet<Arc<str>>);

impl TaskNames {
    /// The shared copy of `task`.
    pub fn get(&mut self, task: &str) -> Arc<str> {
        if let Some(t) = self.0.get(task) {
            return t.clone();
        }
        let t: Arc<str> = Arc::from(task);
        self.0.insert(t.clone());
        t
    }
}

impl EntryDef {
    /// The compact form of `entry`, with a task name of its own.
    pub fn new(entry: &Entry) -> EntryDef {
        EntryDef::with_task(entry, Arc::from(entry.task.as_str()))
    }

    /// The compact form of `entry`, its task name shared through `names`.
    pub fn shared(entry: &Entry, names: &mut TaskNames) -> EntryDef {
        EntryDef::with_task(entry, names.get(&entry.task))
    }

    fn with_task(entry: &Entry, task: Arc<str>) -> EntryDef {
        let extra = Extra {
            workflow: entry.workflow.clone().map(Arc::new),
            payload: (!entry.args.is_empty() || !entry.kwargs.is_empty())
                .then(|| (entry.args.clone(), entry.kwargs.clone())),
            options: (entry.options != SendOptions::default()).then(|| entry.options.clone()),
            firing: (entry.firing != FiringOverrides::default()).then_some(entry.firing),
            spec: (!entry.trigger.calendars().is_empty())
                .then(|| (entry.trigger.clone(), entry.anchor)),
        };
        EntryDef {
            task,
            source: entry.source,
            enabled: entry.enabled,
            created_at: entry.created_at,
            extra: (extra != Extra::default()).then(|| Box::new(extra)),
            schedule: fingerprint(&entry.trigger, entry.anchor),
        }
    }

    /// The workflow sent instead of `task`, if any.
    pub fn workflow(&self) -> Option<&Arc<Canvas>> {
        self.extra.as_ref()?.workflow.as_ref()
    }

    /// The trigger description and interval anchor it was made with, if
    /// the trigger names exclusion calendars (else it is not kept).
    pub fn trigger_spec(&self) -> Option<(TriggerSpec, DateTime<Utc>)> {
        self.extra.as_ref()?.spec.clone()
    }

    /// Whether both fire at the same times.
    pub fn same_schedule(&self, other: &EntryDef) -> bool {
        self.schedule == other.schedule
    }

    /// Positional arguments.
    pub fn args(&self) -> &[Value] {
        self.extra
            .as_ref()
            .and_then(|e| e.payload.as_ref())
            .map_or(&[], |p| p.0.as_slice())
    }

    /// Keyword arguments.
    pub fn kwargs(&self) -> Map<String, Value> {
        self.extra
            .as_ref()
            .and_then(|e| e.payload.as_ref())
            .map(|p| p.1.clone())
            .unwrap_or_default()
    }

    /// The entry's own firing options.
    pub fn firing(&self) -> FiringOverrides {
        self.extra
            .as_ref()
            .and_then(|e| e.firing)
            .unwrap_or_default()
    }

    /// The firing options with `defaults` applied. A workflow that ends in
    /// a group has no one final task to count its unfinished runs by, so it
    /// has no instance limit (its entry is refused if it sets one).
    pub fn firing_over(&self, defaults: &Firing) -> Firing {
        let mut firing = self.firing().resolve(defaults);
        if self.workflow().is_some_and(|w| ends_in_group(w)) {
            firing.max_instances = 0;
        }
        firing
    }

    /// The message options.
    pub fn options(&self) -> SendOptions {
        self.extra
            .as_ref()
            .and_then(|e| e.options.clone())
            .unwrap_or_default()
    }

    /// `expires` in seconds, if set.
    pub fn expires_secs(&self) -> Option<f64> {
        self.extra
            .as_ref()
            .and_then(|e| e.options.as_ref())
            .and_then(|o| o.expires_secs)
    }
}

/// A 64-bit hash of the trigger's JSON text and the anchor (no allocation).
fn fingerprint(trigger: &TriggerSpec, anchor: DateTime<Utc>) -> u64 {
    struct HashWriter(DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(DefaultHasher::new());
    // Writing to a hasher cannot fail; a trigger that does not serialize
    // hashes what was written so far, and differs by its anchor or kind.
    let _ = serde_json::to_writer(&mut w, trigger);
    w.0.write_i64(anchor.timestamp());
    w.0.write_u32(anchor.timestamp_subsec_nanos());
    w.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::TriggerSpec;

    fn spec(expr: &str, calendars: &[&str]) -> TriggerSpec {
        TriggerSpec::Cron {
            expr: expr.into(),
            timezone: None,
            start_date: None,
            end_date: None,
            dst: None,
            calendars: calendars.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn compares_schedules_and_everything() {
        let a = Entry::new("a", "t", spec("* * * * *", &[]));
        let mut b = a.clone();
        b.args = vec![Value::from(1)];
        assert!(EntryDef::new(&a).same_schedule(&EntryDef::new(&b)));
        assert_ne!(EntryDef::new(&a), EntryDef::new(&b));
        assert_eq!(EntryDef::new(&b).args(), [Value::from(1)]);
        let c = Entry::new("a", "t", spec("*/2 * * * *", &[]));
        assert!(!EntryDef::new(&a).same_schedule(&EntryDef::new(&c)));
        let mut moved = a.clone();
        moved.anchor += chrono::TimeDelta::seconds(1);
        assert!(!EntryDef::new(&a).same_schedule(&EntryDef::new(&moved)));
        assert!(EntryDef::new(&a).extra.is_none());
        assert!(EntryDef::new(&b).extra.is_some());
        assert!(EntryDef::new(&a).trigger_spec().is_none());
        let daily = Entry::new("d", "t", spec("@daily", &["holidays"]));
        let (back, anchor) = EntryDef::new(&daily).trigger_spec().expect("kept");
        assert_eq!((back, anchor), (daily.trigger, daily.anchor));
    }

    #[test]
    fn task_names_are_shared() {
        let mut names = TaskNames::default();
        let a = EntryDef::shared(
            &Entry::new("a", "tasks.x", spec("* * * * *", &[])),
            &mut names,
        );
        let b = EntryDef::shared(
            &Entry::new("b", "tasks.x", spec("* * * * *", &[])),
            &mut names,
        );
        assert!(Arc::ptr_eq(&a.task, &b.task));
        assert_eq!(&*a.task, "tasks.x");
    }
}
