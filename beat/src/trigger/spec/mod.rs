//! The serializable trigger description and its compilation.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Deserializer, Serialize};

use super::dst::DstPolicy;
use super::error::{TriggerError, suggest};
use super::fields;
#[cfg(doc)]
use super::{Trigger, exclusions::Calendars};

mod compile;

/// A trigger as written in TOML schedule files and stored in the database.
///
/// Serialized with a `"type"` tag: `"cron"`, `"fields"`, `"interval"` or
/// `"date"`; unknown keys are rejected ([`TriggerSpec::from_json`] adds a "did
/// you mean" hint). `start_date` and `end_date` bound every recurring trigger,
/// both inclusive: an RFC 3339 instant (`2024-05-01T09:00:00+02:00`, `...Z`)
/// or a naive date-time / date (`2024-05-01 09:00:00`, `2024-05-01T09:00`,
/// `2024-05-01`) read as wall-clock time in the trigger's `timezone` (a
/// nonexistent or ambiguous wall time resolves like a schedule: the earlier
/// instant, or shifted forward across a gap). `timezone` is an IANA name
/// (`Europe/Berlin`), default UTC. `cron` and `fields` triggers also take
/// `dst = "cron"` (default) or `"repeat"` ([`DstPolicy`]); interval and date
/// triggers reject `dst`, because clock changes cannot affect them and a
/// policy set there is a misunderstanding worth reporting. Recurring triggers
/// take `calendars`, names of exclusion calendars ([`Calendars`]): a fire time
/// whose local date one of them lists is skipped; date triggers reject it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerSpec {
    /// A crontab string; see [`crate::trigger`] for the syntax.
    Cron {
        /// `"*/15 9-17 * * mon-fri"`, 5, 6 (seconds first) or 7 (plus year)
        /// fields, or `@daily` etc.
        expr: String,
        /// IANA time zone the expression is evaluated in; default UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// No fire before this (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_date: Option<String>,
        /// No fire after this (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_date: Option<String>,
        /// What happens when the clock jumps: `"cron"` (default) or `"repeat"`;
        /// see [`DstPolicy`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<DstPolicy>,
        /// Exclusion calendars: no fire on a local date any of them lists
        /// (see [`Calendars`]; compile with [`TriggerSpec::compile_in`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calendars: Vec<String>,
    },
    /// APScheduler-style fields (numbers or strings); see [`crate::trigger`] for the rules.
    Fields {
        /// 4-digit year expression.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        year: Option<String>,
        /// Month 1-12 or `jan`..`dec`.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        month: Option<String>,
        /// Day of month 1-31, `last`, `3rd fri`, `last fri`.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        day: Option<String>,
        /// ISO week 1-53.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        week: Option<String>,
        /// 0-6 = Monday-Sunday, or `mon`..`sun`.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        day_of_week: Option<String>,
        /// Hour 0-23.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        hour: Option<String>,
        /// Minute 0-59.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        minute: Option<String>,
        /// Second 0-59.
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        second: Option<String>,
        /// IANA time zone the fields are evaluated in; default UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// No fire before this (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_date: Option<String>,
        /// No fire after this (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_date: Option<String>,
        /// What happens when the clock jumps: `"cron"` (default) or `"repeat"`;
        /// see [`DstPolicy`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dst: Option<DstPolicy>,
        /// Exclusion calendars: no fire on a local date any of them lists
        /// (see [`Calendars`]; compile with [`TriggerSpec::compile_in`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calendars: Vec<String>,
    },
    /// A fixed period of elapsed time; see [`crate::trigger::parse_duration`] and the anchor rules
    /// on [`TriggerSpec::compile_with_anchor`].
    Interval {
        /// Weeks in the period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weeks: Option<u64>,
        /// Days in the period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        days: Option<u64>,
        /// Hours in the period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hours: Option<u64>,
        /// Minutes in the period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minutes: Option<u64>,
        /// Seconds in the period.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// The whole period as a string, e.g. `"1h30m"`; excludes the unit fields.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        every: Option<String>,
        /// First fire and anchor of the period (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_date: Option<String>,
        /// No fire after this (inclusive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_date: Option<String>,
        /// Maximum delay of each run in seconds, applied by the caller
        /// (see [`Trigger::jitter`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jitter_seconds: Option<f64>,
        /// Zone for naive dates, for displaying fire times and for the local
        /// dates of `calendars`; default UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// Exclusion calendars: no fire on a local date any of them lists
        /// (see [`Calendars`]; compile with [`TriggerSpec::compile_in`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calendars: Vec<String>,
    },
    /// Fires once.
    Date {
        /// The instant to fire at (RFC 3339 with offset); preview shows it in this offset.
        run_at: DateTime<FixedOffset>,
    },
}

/// Accepts `hour = 2` as well as `hour = "2"`.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        S(String),
        N(u64),
    }
    Ok(Option::<Value>::deserialize(d)?.map(|v| match v {
        Value::S(s) => s,
        Value::N(n) => n.to_string(),
    }))
}

const TYPES: [&str; 4] = ["cron", "fields", "interval", "date"];
const BOUNDS: [&str; 3] = ["timezone", "start_date", "end_date"];

fn known_keys(kind: &str) -> Vec<&'static str> {
    let mut keys = vec!["type"];
    match kind {
        "cron" => keys.extend(["expr", "dst", "calendars"]),
        "fields" => keys.extend(fields::FIELD_NAMES.into_iter().chain(["dst", "calendars"])),
        "interval" => keys.extend([
            "weeks",
            "days",
            "hours",
            "minutes",
            "seconds",
            "every",
            "jitter_seconds",
            "calendars",
        ]),
        _ => return vec!["type", "run_at"],
    }
    keys.extend(BOUNDS);
    keys
}

impl TriggerSpec {
    /// Deserializes from JSON (e.g. a TOML table converted to JSON), with
    /// precise errors: an unknown `type` or key gets a "did you mean" hint.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, TriggerError> {
        let object = value
            .as_object()
            .ok_or_else(|| TriggerError::Malformed("expected an object".into()))?;
        let kind = object
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| TriggerError::Malformed("missing string key \"type\"".into()))?;
        if !TYPES.contains(&kind) {
            return Err(TriggerError::invalid(
                "type",
                match suggest(kind, TYPES) {
                    Some(s) => format!("unknown trigger type \"{kind}\", did you mean \"{s}\"?"),
                    None => format!(
                        "unknown trigger type \"{kind}\", expected cron, fields, interval or date"
                    ),
                },
            ));
        }
        if let Some(dst) = object.get("dst") {
            if !matches!(kind, "cron" | "fields") {
                return Err(TriggerError::invalid(
                    "dst",
                    format!(
                        "applies to cron and fields triggers only ({kind} triggers {})",
                        if kind == "interval" {
                            "count elapsed time, unaffected by clock changes"
                        } else {
                            "fire at one fixed instant"
                        }
                    ),
                ));
            }
            match dst.as_str() {
                Some(name) => name.parse::<DstPolicy>().map(|_| ())?,
                None => {
                    return Err(TriggerError::invalid(
                        "dst",
                        format!("expected \"cron\" or \"repeat\", got {dst}"),
                    ));
                }
            }
        }
        if kind == "date" && object.contains_key("calendars") {
            return Err(TriggerError::invalid(
                "calendars",
                "apply to recurring triggers only (a date trigger fires once, at run_at)",
            ));
        }
        let known = known_keys(kind);
        if let Some(key) = object.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(TriggerError::UnknownKey {
                kind: kind.to_string(),
                key: key.clone(),
                suggestion: suggest(key, known.iter().copied()),
            });
        }
        serde_json::from_value(value.clone()).map_err(|e| TriggerError::Malformed(e.to_string()))
    }
}
