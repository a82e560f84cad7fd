//! Trigger shorthands shared by the schedule file and the command line:
//! exactly one of `cron`, `fields`, `every` or `at` (or, in files, a full
//! `trigger` table), plus `timezone`, `start_date`, `end_date`, `jitter`,
//! `dst` and `calendars`.

use serde_json::{Map, Value, json};

use crate::schedule::entry::EntryError;
use crate::trigger::{TriggerError, TriggerSpec, parse_duration};

mod describe;

pub use describe::describe;

/// A trigger as the user wrote it, before it becomes a [`TriggerSpec`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TriggerInput {
    /// A crontab string (`--cron`, `cron = "..."`).
    pub cron: Option<String>,
    /// APScheduler-style fields, a JSON object (`--fields`, `fields = {...}`).
    pub fields: Option<Value>,
    /// An interval such as `"1h30m"` (`--every`, `every = "..."`).
    pub every: Option<String>,
    /// A one-shot RFC 3339 instant (`--at`, `at = "..."`).
    pub at: Option<String>,
    /// A full trigger description with a `"type"` key (files only).
    pub trigger: Option<Value>,
    /// IANA time zone (`--tz`, `timezone`).
    pub timezone: Option<String>,
    /// No fire before this (`--start`, `start_date`).
    pub start: Option<String>,
    /// No fire after this (`--end`, `end_date`).
    pub end: Option<String>,
    /// Random delay of interval runs, a duration (`--jitter`, `jitter`).
    pub jitter: Option<String>,
    /// DST policy of a cron or fields trigger, `cron` or `repeat` (`--dst`, `dst`).
    pub dst: Option<String>,
    /// Exclusion calendars (`--exclude-calendar`, `calendars`); `Some(vec![])`
    /// clears them on `schedule modify`.
    pub calendars: Option<Vec<String>>,
}

impl TriggerInput {
    /// Whether a trigger kind (cron, fields, every, at, trigger) is given.
    pub fn has_kind(&self) -> bool {
        self.kinds() > 0
    }

    /// Whether anything at all is given.
    pub fn is_empty(&self) -> bool {
        !self.has_kind()
            && self.timezone.is_none()
            && self.start.is_none()
            && self.end.is_none()
            && self.jitter.is_none()
            && self.dst.is_none()
            && self.calendars.is_none()
    }

    fn kinds(&self) -> usize {
        [
            self.cron.is_some(),
            self.fields.is_some(),
            self.every.is_some(),
            self.at.is_some(),
            self.trigger.is_some(),
        ]
        .into_iter()
        .filter(|k| *k)
        .count()
    }

    /// The trigger this describes (checked: it compiles).
    pub fn build(&self) -> Result<TriggerSpec, EntryError> {
        self.overlay(None)
    }

    /// For `schedule modify`: this input over an existing trigger. Without a
    /// kind, only the bounds (and `dst`, `calendars`) given change; with one,
    /// the trigger is replaced and the old bounds, `dst` and `calendars` carry
    /// over unless given (where the new kind takes them).
    pub fn overlay(&self, base: Option<&TriggerSpec>) -> Result<TriggerSpec, EntryError> {
        let base_json = base.and_then(|b| serde_json::to_value(b).ok());
        let mut object = match (self.kinds(), &base_json) {
            (0, Some(Value::Object(b))) => b.clone(),
            (0, _) => {
                return Err(EntryError::invalid(
                    "trigger",
                    "give one of --cron, --fields, --every or --at",
                ));
            }
            (1, _) => self.kind_object()?,
            _ => {
                return Err(EntryError::invalid(
                    "trigger",
                    "give only one of cron, fields, every, at (or trigger)",
                ));
            }
        };
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind == "date" {
            if self.timezone.is_some()
                || self.start.is_some()
                || self.end.is_some()
                || self.jitter.is_some()
                || self.dst.is_some()
                || self.calendars.as_ref().is_some_and(|c| !c.is_empty())
            {
                return Err(EntryError::invalid(
                    "at",
                    "timezone, start, end, jitter, dst and calendars \
                     do not apply to a one-shot (at) trigger",
                ));
            }
        } else {
            if self.kinds() == 1
                && let Some(Value::Object(b)) = &base_json
            {
                let wall_clock = matches!(kind.as_str(), "cron" | "fields");
                for key in ["timezone", "start_date", "end_date", "calendars", "dst"] {
                    if key == "dst" && !wall_clock {
                        continue;
                    }
                    if let (Some(v), false) = (b.get(key), object.contains_key(key)) {
                        object.insert(key.to_owned(), v.clone());
                    }
                }
            }
            set(&mut object, "dst", &self.dst);
            match &self.calendars {
                Some(names) if names.is_empty() => {
                    object.remove("calendars");
                }
                Some(names) => {
                    let mut unique: Vec<&String> = Vec::with_capacity(names.len());
                    for name in names {
                        crate::trigger::validate_calendar_name(name)?;
                        if !unique.contains(&name) {
                            unique.push(name);
                        }
                    }
                    object.insert("calendars".to_owned(), json!(unique));
                }
                None => {}
            }
            set(&mut object, "timezone", &self.timezone);
            set(&mut object, "start_date", &self.start);
            set(&mut object, "end_date", &self.end);
            if let Some(jitter) = &self.jitter {
                if kind != "interval" {
                    return Err(EntryError::invalid(
                        "jitter",
                        "applies to interval (every) triggers only",
                    ));
                }
                let secs = parse_duration(jitter)
                    .map_err(|e| EntryError::invalid("jitter", e.to_string()))?;
                object.insert("jitter_seconds".to_owned(), json!(secs.as_secs_f64()));
            }
        }
        let spec = TriggerSpec::from_json(&Value::Object(object))?;
        spec.validate()?;
        Ok(spec)
    }

    fn kind_object(&self) -> Result<Map<String, Value>, EntryError> {
        let mut object = Map::new();
        if let Some(expr) = &self.cron {
            object.insert("type".into(), json!("cron"));
            object.insert("expr".into(), json!(expr));
        } else if let Some(fields) = &self.fields {
            let Value::Object(fields) = fields else {
                return Err(EntryError::invalid(
                    "fields",
                    "expected an object such as {\"hour\": 2, \"minute\": 30}",
                ));
            };
            object.insert("type".into(), json!("fields"));
            for (k, v) in fields {
                object.insert(k.clone(), v.clone());
            }
        } else if let Some(every) = &self.every {
            object.insert("type".into(), json!("interval"));
            object.insert("every".into(), json!(every));
        } else if let Some(at) = &self.at {
            chrono::DateTime::parse_from_rfc3339(at).map_err(|_| {
                EntryError::from(TriggerError::InvalidDateTime {
                    field: "run_at",
                    value: at.clone(),
                })
            })?;
            object.insert("type".into(), json!("date"));
            object.insert("run_at".into(), json!(at));
        } else if let Some(trigger) = &self.trigger {
            let Value::Object(t) = trigger else {
                return Err(EntryError::invalid(
                    "trigger",
                    "expected a table with a \"type\" key",
                ));
            };
            object = t.clone();
        }
        Ok(object)
    }
}

fn set(object: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        object.insert(key.to_owned(), json!(v));
    }
}

#[cfg(test)]
mod tests;
