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
mod decode;
mod encode;
mod headers;
pub mod kombu;
mod signature;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use headers::{is_reserved_header, parse_time};
pub use signature::{Embed, Signature};

/// MIME type of celeriac's (and Celery's default) serializer.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Default limit on a message body's size: 10 MiB.
pub const MAX_BODY_BYTES_DEFAULT: usize = 10 * 1024 * 1024;

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

/// The longest task id a message can be sent with, in bytes: it is the
/// message's `correlation_id` too, an AMQP short string.
pub const MAX_SENT_TASK_ID_BYTES: usize = 255;

/// Refuses a task id no result row could be keyed by, or no reply or retry
/// could carry: empty, longer than [`MAX_TASK_ID_CHARS`] or than
/// [`MAX_SENT_TASK_ID_BYTES`] (the AMQP short string of `correlation_id`),
/// or holding control characters.
pub fn check_task_id(id: &str) -> Result<(), ProtocolError> {
    let reason = if id.is_empty() {
        "it is empty".to_owned()
    } else if id.chars().count() > MAX_TASK_ID_CHARS {
        format!("it is longer than {MAX_TASK_ID_CHARS} characters")
    } else if id.len() > MAX_SENT_TASK_ID_BYTES {
        // Replies and retries carry it as `correlation_id`, an AMQP short string.
        format!("it is longer than {MAX_SENT_TASK_ID_BYTES} bytes")
    } else if id.chars().any(char::is_control) {
        "it holds control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(ProtocolError::BadHeader { name: "id", reason })
}

/// Whether `t` can travel in a message's `eta` or `expires` header: Celery
/// writes and reads ISO 8601 with a four-digit year, so years 1 to 9999
/// (chrono writes `+10000-...` past that, which no worker reads).
pub fn fits_the_wire(t: &chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (1..=9999).contains(&t.year())
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
}

#[cfg(test)]
mod tests;
