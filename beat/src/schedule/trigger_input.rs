//! Trigger shorthands shared by the schedule file and the command line:
//! exactly one of `cron`, `fields`, `every` or `at` (or, in files, a full
//! `trigger` table), plus `timezone`, `start_date`, `end_date`, `jitter`,
//! `dst` and `calendars`.

use serde_json::{Map, Value, json};

use crate::schedule::entry::EntryError;
use crate::trigger::{TriggerError, TriggerSpec, parse_duration};

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
                    "timezone, start, end, jitter, dst and calendars do not apply to a one-shot (at) trigger",
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

/// A one-line description of a trigger for listings, e.g.
/// `cron "0 3 * * *" Europe/Berlin` or `every 10s`.
pub fn describe(spec: &TriggerSpec) -> String {
    let json = serde_json::to_value(spec).unwrap_or(Value::Null);
    let Value::Object(mut map) = json else {
        return String::new();
    };
    let kind = map
        .remove("type")
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut text = match (kind.as_str(), spec) {
        ("cron", TriggerSpec::Cron { expr, .. }) => {
            map.remove("expr");
            format!("cron \"{expr}\"")
        }
        ("date", TriggerSpec::Date { run_at }) => return format!("at {}", run_at.to_rfc3339()),
        ("interval", _) => {
            let every = map
                .remove("every")
                .and_then(|e| e.as_str().map(str::to_owned));
            let units: Vec<String> = ["weeks", "days", "hours", "minutes", "seconds"]
                .iter()
                .filter_map(|u| map.remove(*u).map(|v| format!("{v}{}", &u[..1])))
                .collect();
            format!("every {}", every.unwrap_or_else(|| units.join("")))
        }
        _ => {
            let tz = map.remove("timezone");
            let start = map.remove("start_date");
            let end = map.remove("end_date");
            let dst = map.remove("dst");
            let calendars = map.remove("calendars");
            let fields = Value::Object(map.clone()).to_string();
            map.clear();
            for (k, v) in [
                ("timezone", tz),
                ("start_date", start),
                ("end_date", end),
                ("dst", dst),
                ("calendars", calendars),
            ] {
                if let Some(v) = v {
                    map.insert(k.to_owned(), v);
                }
            }
            format!("fields {fields}")
        }
    };
    let order = [
        "timezone",
        "start_date",
        "end_date",
        "jitter_seconds",
        "dst",
        "calendars",
    ];
    let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(order.len());
    let mut pairs: Vec<(String, Value)> = map.into_iter().collect();
    pairs.sort_by_key(|(k, _)| rank(k));
    for (key, value) in pairs {
        let value = match &value {
            Value::Array(names) => names
                .iter()
                .map(|n| n.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            Value::String(s) => s.clone(),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.fract() == 0.0)
                .map_or_else(|| n.to_string(), |f| format!("{f:.0}")),
            other => other.to_string(),
        };
        match key.as_str() {
            "timezone" => text.push_str(&format!(" {value}")),
            "start_date" => text.push_str(&format!(" from {value}")),
            "end_date" => text.push_str(&format!(" until {value}")),
            "jitter_seconds" => text.push_str(&format!(" jitter {value}s")),
            "dst" => text.push_str(&format!(" dst={value}")),
            "calendars" => text.push_str(&format!(" except {value}")),
            _ => text.push_str(&format!(" {key}={value}")),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> TriggerInput {
        TriggerInput::default()
    }

    #[test]
    fn builds_each_kind() {
        let cron = TriggerInput {
            cron: Some("0 3 * * *".into()),
            timezone: Some("Europe/Berlin".into()),
            ..input()
        };
        assert_eq!(
            describe(&cron.build().expect("cron")),
            "cron \"0 3 * * *\" Europe/Berlin"
        );
        let every = TriggerInput {
            every: Some("10s".into()),
            jitter: Some("2s".into()),
            ..input()
        };
        assert_eq!(
            describe(&every.build().expect("every")),
            "every 10s jitter 2s"
        );
        let fields = TriggerInput {
            fields: Some(json!({"hour": 2})),
            ..input()
        };
        assert_eq!(
            describe(&fields.build().expect("fields")),
            "fields {\"hour\":\"2\"}"
        );
        let at = TriggerInput {
            at: Some("2030-01-01T00:00:00+01:00".into()),
            ..input()
        };
        assert_eq!(
            describe(&at.build().expect("at")),
            "at 2030-01-01T00:00:00+01:00"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = |i: TriggerInput| i.build().map(|_| ()).expect_err("should fail").to_string();
        assert_eq!(
            err(TriggerInput {
                cron: Some("* * * * * * * *".into()),
                ..input()
            }),
            "expression has 8 fields, expected 5, 6 or 7"
        );
        assert!(
            err(TriggerInput {
                cron: Some("* * * * *".into()),
                timezone: Some("Europe/Berln".into()),
                ..input()
            })
            .starts_with("timezone: unknown time zone \"Europe/Berln\"")
        );
        assert!(
            err(TriggerInput {
                cron: Some("* * * * *".into()),
                every: Some("1s".into()),
                ..input()
            })
            .contains("only one of")
        );
        assert!(
            err(TriggerInput {
                at: Some("tomorrow".into()),
                ..input()
            })
            .starts_with("run_at: invalid date-time")
        );
        assert!(
            err(TriggerInput {
                cron: Some("* * * * *".into()),
                jitter: Some("1s".into()),
                ..input()
            })
            .starts_with("jitter:")
        );
    }

    #[test]
    fn overlay_keeps_what_is_not_given() {
        let base = TriggerInput {
            cron: Some("0 3 * * *".into()),
            timezone: Some("Europe/Berlin".into()),
            ..input()
        }
        .build()
        .expect("base");
        let tz_only = TriggerInput {
            timezone: Some("Asia/Tokyo".into()),
            ..input()
        };
        assert_eq!(
            describe(&tz_only.overlay(Some(&base)).expect("tz")),
            "cron \"0 3 * * *\" Asia/Tokyo"
        );
        let new_kind = TriggerInput {
            cron: Some("0 4 * * *".into()),
            ..input()
        };
        assert_eq!(
            describe(&new_kind.overlay(Some(&base)).expect("kind")),
            "cron \"0 4 * * *\" Europe/Berlin"
        );
    }

    #[test]
    fn overlay_keeps_dst_and_calendars_where_they_apply() {
        let base = TriggerInput {
            cron: Some("30 2 * * *".into()),
            timezone: Some("America/New_York".into()),
            dst: Some("repeat".into()),
            calendars: Some(vec!["us".into(), "us".into()]),
            ..input()
        }
        .build()
        .expect("base");
        assert_eq!(
            describe(&base),
            "cron \"30 2 * * *\" America/New_York dst=repeat except us"
        );
        // A new expression keeps the policy and the calendars...
        let new_expr = TriggerInput {
            cron: Some("45 2 * * *".into()),
            ..input()
        };
        assert_eq!(
            describe(&new_expr.overlay(Some(&base)).expect("expr")),
            "cron \"45 2 * * *\" America/New_York dst=repeat except us"
        );
        let fields = TriggerInput {
            fields: Some(json!({"hour": 3})),
            ..input()
        };
        assert_eq!(
            describe(&fields.overlay(Some(&base)).expect("fields")),
            "fields {\"hour\":\"3\"} America/New_York dst=repeat except us"
        );
        // ...an interval keeps the calendars only (dst does not apply)...
        let every = TriggerInput {
            every: Some("1h".into()),
            ..input()
        };
        assert_eq!(
            describe(&every.overlay(Some(&base)).expect("every")),
            "every 1h America/New_York except us"
        );
        // ...and the policy or calendars alone can change, or go.
        let back_to_cron = TriggerInput {
            dst: Some("cron".into()),
            calendars: Some(Vec::new()),
            ..input()
        };
        assert_eq!(
            describe(&back_to_cron.overlay(Some(&base)).expect("dst")),
            "cron \"30 2 * * *\" America/New_York dst=cron"
        );
        let err = TriggerInput {
            dst: Some("repaet".into()),
            ..input()
        }
        .overlay(Some(&base))
        .map(|_| ())
        .expect_err("bad policy")
        .to_string();
        assert_eq!(
            err,
            "dst: unknown policy \"repaet\", did you mean \"repeat\"?"
        );
        let on_interval = TriggerInput {
            every: Some("1h".into()),
            dst: Some("repeat".into()),
            ..input()
        }
        .build()
        .map(|_| ())
        .expect_err("dst on an interval")
        .to_string();
        assert!(on_interval.starts_with("dst: applies to cron and fields triggers only"));
    }
}
