//! The protocol's header names and typed access to a message's headers.

use super::{ProtocolError, amqp_value};
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

pub(super) const KNOWN_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// Headers RabbitMQ adds when it dead-letters a message (delayed delivery
/// passes messages through several queues); they are not the caller's.
pub(super) fn is_broker_header(name: &str) -> bool {
    name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
        || name.starts_with("x-celeriac-")
        || name == "x-delivery-count"
}

/// Whether `name` is one of the protocol's own headers.
pub fn is_reserved_header(name: &str) -> bool {
    KNOWN_HEADERS.contains(&name)
}
/// Typed access to the headers of one message.
pub(super) struct Headers<'a>(pub(super) &'a FieldTable);

impl Headers<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&AMQPValue> {
        self.0
            .inner()
            .get(name)
            .filter(|v| !matches!(v, AMQPValue::Void))
    }

    pub(super) fn json(&self, name: &str) -> Value {
        self.get(name).map_or(Value::Null, amqp_value::to_json)
    }

    pub(super) fn string(&self, name: &'static str) -> Result<Option<String>, ProtocolError> {
        match self.get(name) {
            None => Ok(None),
            Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes())
                .map(|s| Some(s.to_owned()))
                .map_err(|_| bad(name, "not valid utf-8")),
            Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_owned())),
            Some(AMQPValue::ByteArray(b)) => std::str::from_utf8(b.as_slice())
                .map(|s| Some(s.to_owned()))
                .map_err(|_| bad(name, "not valid utf-8")),
            Some(other) => Err(bad(
                name,
                format!("expected a string, found {:?}", other.get_type()),
            )),
        }
    }

    pub(super) fn int(&self, name: &'static str) -> Result<Option<i64>, ProtocolError> {
        match self.get(name).map(amqp_value::to_json) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(name, format!("expected an integer, found {n}"))),
            Some(other) => Err(bad(
                name,
                format!("expected an integer, found {}", kind(&other)),
            )),
        }
    }

    pub(super) fn bool(&self, name: &'static str) -> Result<Option<bool>, ProtocolError> {
        match self.get(name) {
            None => Ok(None),
            Some(AMQPValue::Boolean(b)) => Ok(Some(*b)),
            Some(other) => match amqp_value::to_json(other) {
                Value::Number(n) => Ok(Some(n.as_i64() != Some(0))),
                _ => Err(bad(name, "expected a boolean")),
            },
        }
    }

    pub(super) fn time(
        &self,
        name: &'static str,
    ) -> Result<Option<DateTime<FixedOffset>>, ProtocolError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        parse_time(&text)
            .map(Some)
            .ok_or_else(|| bad(name, format!("{text:?} is not an ISO 8601 datetime")))
    }

    pub(super) fn timelimit(&self) -> Result<(Option<f64>, Option<f64>), ProtocolError> {
        let Some(v) = self.get("timelimit").map(amqp_value::to_json) else {
            return Ok((None, None));
        };
        let limit = |v: Option<&Value>| -> Result<Option<f64>, ProtocolError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64().filter(|f| *f >= 0.0)),
                Some(other) => Err(bad(
                    "timelimit",
                    format!("expected seconds, found {}", kind(other)),
                )),
            }
        };
        match &v {
            Value::Array(items) if items.len() <= 2 => {
                Ok((limit(items.first())?, limit(items.get(1))?))
            }
            _ => Err(bad("timelimit", "expected [hard, soft]")),
        }
    }
}

pub(super) fn bad(name: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::BadHeader {
        name,
        reason: reason.into(),
    }
}

/// Parses an ISO 8601 instant as Celery sends it; a time without an offset is UTC.
pub fn parse_time(text: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(text).ok().or_else(|| {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        Some(naive.and_utc().fixed_offset())
    })
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
