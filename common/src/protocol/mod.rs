//! Celery message protocol version 2 with JSON bodies, on AMQP.
//!
//! A task message is AMQP properties (`correlation_id` = task id,
//! `content_type` `application/json`, `content_encoding` `utf-8`, persistent
//! delivery, optional priority and `reply_to`), headers (`lang`, `task`, `id`,
//! `root_id`, `parent_id`, `group`, `eta`, `expires`, `retries`, `timelimit`,
//! ...; Celery sends every key, `null` where unset, celeriac leaves out
//! those at their default: see [`TaskMessage::properties`]) and a body
//! `[args, kwargs, {"callbacks", "errbacks", "chain", "chord"}]`.

pub(crate) mod amqp_value;
pub mod kombu;
mod signature;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use signature::{Embed, Signature};

/// MIME type of celeriac's (and Celery's default) serializer.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Default limit on a message body's size: 10 MiB.
pub const MAX_BODY_BYTES_DEFAULT: usize = 10 * 1024 * 1024;
/// Celery truncates `argsrepr`/`kwargsrepr` to this many characters.
const REPR_MAX_CHARS: usize = 1024;

/// Why a message could not be decoded. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The message has no `task` header (protocol 1, or not a Celery message).
    #[error("missing header {0:?} (not a Celery protocol 2 message)")]
    MissingHeader(&'static str),
    /// A header is present but has the wrong type or format.
    #[error("header {name:?} is invalid: {reason}")]
    BadHeader {
        /// The header's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The body is encoded with a serializer celeriac does not accept.
    #[error("unsupported content type {0:?} (only application/json is accepted)")]
    UnsupportedContentType(String),
    /// The body's text encoding is not utf-8.
    #[error("unsupported content encoding {0:?} (only utf-8 is accepted)")]
    UnsupportedEncoding(String),
    /// The body is larger than the configured limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The body is JSON but not `[args, kwargs, embed]`.
    #[error("body has the wrong shape: {0}")]
    BadShape(String),
    /// Arguments could not be serialized.
    #[error("arguments could not be serialized: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// The longest task id celeriac accepts, in characters: a result row is
/// keyed by it (MySQL indexes at most 191 utf8mb4 characters). Celery's ids
/// are UUIDs (36).
pub const MAX_TASK_ID_CHARS: usize = 191;

/// Refuses a task id no result row could be keyed by: empty, longer than
/// [`MAX_TASK_ID_CHARS`], or holding control characters.
pub fn check_task_id(id: &str) -> Result<(), ProtocolError> {
    let reason = if id.is_empty() {
        "it is empty".to_owned()
    } else if id.chars().count() > MAX_TASK_ID_CHARS {
        format!("it is longer than {MAX_TASK_ID_CHARS} characters")
    } else if id.chars().any(char::is_control) {
        "it holds control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(ProtocolError::BadHeader { name: "id", reason })
}

/// One task message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Task id (`id` header and `correlation_id`).
    pub id: String,
    /// Task name (`task` header).
    pub task: String,
    /// Language of the sender (`"py"` from Celery, `"rust"` from celeriac).
    pub lang: String,
    /// Id of the first task of the workflow; defaults to `id`.
    pub root_id: Option<String>,
    /// Id of the task that sent this one.
    pub parent_id: Option<String>,
    /// Group id, for group members.
    pub group: Option<String>,
    /// Position in the group.
    pub group_index: Option<i64>,
    /// Name to show in logs instead of `task`.
    pub shadow: Option<String>,
    /// Do not run before this instant.
    pub eta: Option<DateTime<FixedOffset>>,
    /// Do not run after this instant (revoke instead).
    pub expires: Option<DateTime<FixedOffset>>,
    /// How many times this task was retried.
    pub retries: u32,
    /// `(hard, soft)` time limits in seconds.
    pub timelimit: (Option<f64>, Option<f64>),
    /// Printable arguments, for logs and monitors.
    pub argsrepr: Option<String>,
    /// Printable keyword arguments.
    pub kwargsrepr: Option<String>,
    /// Who sent it: `gen<pid>@<host>`.
    pub origin: Option<String>,
    /// Whether the caller wants no result stored.
    pub ignore_result: bool,
    /// Celery's `replaced_task_nesting`.
    pub replaced_task_nesting: i64,
    /// Celery's stamping headers, kept as sent.
    pub stamped_headers: Value,
    /// Celery's stamps, kept as sent.
    pub stamps: Value,
    /// Headers that are not part of the protocol (the caller's own).
    pub extra_headers: BTreeMap<String, Value>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain and chord.
    pub embed: Embed,
    /// AMQP `reply_to`.
    pub reply_to: Option<String>,
    /// AMQP priority (0-255; RabbitMQ honours it up to the queue's `x-max-priority`).
    pub priority: Option<u8>,
}

impl TaskMessage {
    /// A new message for `task` with a fresh random id.
    pub fn new(task: impl Into<String>, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        TaskMessage {
            root_id: Some(id.clone()),
            id,
            task: task.into(),
            lang: "rust".to_owned(),
            parent_id: None,
            group: None,
            group_index: None,
            shadow: None,
            eta: None,
            expires: None,
            retries: 0,
            timelimit: (None, None),
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: false,
            replaced_task_nesting: 0,
            stamped_headers: Value::Null,
            stamps: Value::Null,
            extra_headers: BTreeMap::new(),
            args,
            kwargs,
            embed: Embed::default(),
            reply_to: None,
            priority: None,
        }
    }

    /// Sets the id (and the root id, when it was the old id).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if self.root_id.as_deref() == Some(self.id.as_str()) {
            self.root_id = Some(id.clone());
        }
        self.id = id;
        self
    }

    /// The name to show in logs: `shadow` if set, else `task`.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().unwrap_or(&self.task)
    }

    /// Whether `expires` has passed at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// Encodes the body (`[args, kwargs, embed]`) as JSON.
    pub fn encode_body(&self) -> Result<Vec<u8>, ProtocolError> {
        serde_json::to_vec(&(&self.args, &self.kwargs, &self.embed))
            .map_err(ProtocolError::Serialize)
    }

    /// The AMQP properties and headers of a task message.
    ///
    /// Celery 5 sends every header, `null` where unset. celeriac leaves out a
    /// header whose value is what Celery's worker (and celeriac's) assumes
    /// when the key is absent: `null`, `retries` 0, `timelimit` `[null,
    /// null]`, `ignore_result` false, `replaced_task_nesting` 0. Celery reads
    /// every one of these with a default, as it must for other clients that
    /// omit them; the broker and every consumer then parse a table of about
    /// 7 entries instead of 19 (a fifth of a worker's CPU per task went to
    /// parsing the full table).
    pub fn properties(&self) -> BasicProperties {
        let mut h = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes()));
        let mut put = |k: &str, v: Option<AMQPValue>| {
            if let Some(v) = v {
                h.insert(k.into(), v);
            }
        };
        let opt = |v: &Option<String>| v.as_deref().map(s);
        let time = |v: &Option<DateTime<FixedOffset>>| {
            v.map(|t| s(&t.to_rfc3339_opts(SecondsFormat::Micros, false)))
        };
        let json = |v: &Value| (!v.is_null()).then(|| amqp_value::from_json(v));
        let limit = |v: Option<f64>| v.map_or(AMQPValue::Void, AMQPValue::Double);
        put("lang", Some(s(&self.lang)));
        put("task", Some(s(&self.task)));
        put("id", Some(s(&self.id)));
        put("shadow", opt(&self.shadow));
        put("eta", time(&self.eta));
        put("expires", time(&self.expires));
        put("group", opt(&self.group));
        put("group_index", self.group_index.map(AMQPValue::LongLongInt));
        put(
            "retries",
            (self.retries != 0).then_some(AMQPValue::LongLongInt(i64::from(self.retries))),
        );
        put(
            "timelimit",
            (self.timelimit != (None, None)).then(|| {
                AMQPValue::FieldArray(vec![limit(self.timelimit.0), limit(self.timelimit.1)].into())
            }),
        );
        put("root_id", opt(&self.root_id));
        put("parent_id", opt(&self.parent_id));
        let argsrepr = self.argsrepr.clone().unwrap_or_else(|| repr(&self.args));
        let kwargsrepr = self
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| repr(&self.kwargs));
        put("argsrepr", Some(s(&argsrepr)));
        put("kwargsrepr", Some(s(&kwargsrepr)));
        put("origin", opt(&self.origin));
        put(
            "ignore_result",
            self.ignore_result.then_some(AMQPValue::Boolean(true)),
        );
        put(
            "replaced_task_nesting",
            (self.replaced_task_nesting != 0)
                .then_some(AMQPValue::LongLongInt(self.replaced_task_nesting)),
        );
        put("stamped_headers", json(&self.stamped_headers));
        put("stamps", json(&self.stamps));
        for (k, v) in &self.extra_headers {
            h.insert(k.as_str().into(), amqp_value::from_json(v));
        }
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
            .with_content_encoding(ShortString::from("utf-8"))
            .with_correlation_id(ShortString::from(self.id.as_str()))
            .with_delivery_mode(2)
            .with_priority(self.priority.unwrap_or(0))
            .with_headers(h);
        if let Some(r) = &self.reply_to {
            props = props.with_reply_to(ShortString::from(r.as_str()));
        }
        props
    }

    /// Decodes a delivery's properties and body. `max_body` bounds the body's size.
    pub fn decode(
        props: &BasicProperties,
        body: &[u8],
        max_body: usize,
    ) -> Result<TaskMessage, ProtocolError> {
        if body.len() > max_body {
            return Err(ProtocolError::TooLarge {
                size: body.len(),
                limit: max_body,
            });
        }
        if let Some(ct) = props.content_type() {
            let ct = ct.as_str();
            if ct != CONTENT_TYPE_JSON && ct != "application/x-json" {
                return Err(ProtocolError::UnsupportedContentType(ct.to_owned()));
            }
        }
        if let Some(enc) = props.content_encoding() {
            let enc = enc.as_str();
            if !enc.eq_ignore_ascii_case("utf-8") && !enc.eq_ignore_ascii_case("utf8") {
                return Err(ProtocolError::UnsupportedEncoding(enc.to_owned()));
            }
        }
        let empty = FieldTable::default();
        let headers = Headers(props.headers().as_ref().unwrap_or(&empty));
        let task = headers
            .string("task")?
            .ok_or(ProtocolError::MissingHeader("task"))?;
        let id = match headers.string("id")? {
            Some(id) => id,
            None => props
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .ok_or(ProtocolError::MissingHeader("id"))?,
        };
        check_task_id(&id)?;
        let (args, kwargs, embed) = decode_body(body)?;
        let mut extra_headers = BTreeMap::new();
        for (k, v) in headers.0.inner() {
            if !KNOWN_HEADERS.contains(&k.as_str()) && !is_broker_header(k.as_str()) {
                extra_headers.insert(k.as_str().to_owned(), amqp_value::to_json(v));
            }
        }
        Ok(TaskMessage {
            lang: headers.string("lang")?.unwrap_or_else(|| "py".to_owned()),
            root_id: headers.string("root_id")?,
            parent_id: headers.string("parent_id")?,
            group: headers.string("group")?,
            group_index: headers.int("group_index")?,
            shadow: headers.string("shadow")?,
            eta: headers.time("eta")?,
            expires: headers.time("expires")?,
            retries: headers
                .int("retries")?
                .map(|r| {
                    u32::try_from(r).map_err(|_| ProtocolError::BadHeader {
                        name: "retries",
                        reason: format!("{r} is not a retry count"),
                    })
                })
                .transpose()?
                .unwrap_or(0),
            timelimit: headers.timelimit()?,
            argsrepr: headers.string("argsrepr")?,
            kwargsrepr: headers.string("kwargsrepr")?,
            origin: headers.string("origin")?,
            ignore_result: headers.bool("ignore_result")?.unwrap_or(false),
            replaced_task_nesting: headers.int("replaced_task_nesting")?.unwrap_or(0),
            stamped_headers: headers.json("stamped_headers"),
            stamps: headers.json("stamps"),
            extra_headers,
            id,
            task,
            args,
            kwargs,
            embed,
            reply_to: props
                .reply_to()
                .as_ref()
                .map(|r| r.as_str().to_owned())
                .filter(|r| !r.is_empty()),
            priority: *props.priority(),
        })
    }
}

const KNOWN_HEADERS: &[&str] = &[
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
fn is_broker_header(name: &str) -> bool {
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

/// JSON text of `v` (args or kwargs), cut to Celery's repr length.
fn repr(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_default();
    if s.len() > REPR_MAX_CHARS {
        let mut cut = REPR_MAX_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

type Body = (Vec<Value>, Map<String, Value>, Embed);

fn decode_body(body: &[u8]) -> Result<Body, ProtocolError> {
    let value: Value = serde_json::from_slice(body).map_err(ProtocolError::BadJson)?;
    let Value::Array(mut parts) = value else {
        return Err(ProtocolError::BadShape(format!(
            "expected [args, kwargs, embed], found {}",
            kind(&value)
        )));
    };
    if parts.len() != 3 {
        return Err(ProtocolError::BadShape(format!(
            "expected 3 elements [args, kwargs, embed], found {}",
            parts.len()
        )));
    }
    let embed = match parts.pop() {
        Some(Value::Null) | None => Embed::default(),
        Some(e @ Value::Object(_)) => serde_json::from_value(e)
            .map_err(|err| ProtocolError::BadShape(format!("embed: {err}")))?,
        Some(other) => {
            return Err(ProtocolError::BadShape(format!(
                "embed must be an object, found {}",
                kind(&other)
            )));
        }
    };
    let kwargs = match parts.pop() {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(other) => {
            return Err(ProtocolError::BadShape(format!(
                "kwargs must be an object, found {}",
                kind(&other)
            )));
        }
    };
    let args = match parts.pop() {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => {
            return Err(ProtocolError::BadShape(format!(
                "args must be a list, found {}",
                kind(&other)
            )));
        }
    };
    Ok((args, kwargs, embed))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Typed access to the headers of one message.
struct Headers<'a>(&'a FieldTable);

impl Headers<'_> {
    fn get(&self, name: &str) -> Option<&AMQPValue> {
        self.0
            .inner()
            .get(name)
            .filter(|v| !matches!(v, AMQPValue::Void))
    }

    fn json(&self, name: &str) -> Value {
        self.get(name).map_or(Value::Null, amqp_value::to_json)
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, ProtocolError> {
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

    fn int(&self, name: &'static str) -> Result<Option<i64>, ProtocolError> {
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

    fn bool(&self, name: &'static str) -> Result<Option<bool>, ProtocolError> {
        match self.get(name) {
            None => Ok(None),
            Some(AMQPValue::Boolean(b)) => Ok(Some(*b)),
            Some(other) => match amqp_value::to_json(other) {
                Value::Number(n) => Ok(Some(n.as_i64() != Some(0))),
                _ => Err(bad(name, "expected a boolean")),
            },
        }
    }

    fn time(&self, name: &'static str) -> Result<Option<DateTime<FixedOffset>>, ProtocolError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        parse_time(&text)
            .map(Some)
            .ok_or_else(|| bad(name, format!("{text:?} is not an ISO 8601 datetime")))
    }

    fn timelimit(&self) -> Result<(Option<f64>, Option<f64>), ProtocolError> {
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

fn bad(name: &'static str, reason: impl Into<String>) -> ProtocolError {
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

#[cfg(test)]
mod tests;
