//! Per-call options of `apply_async`, as Celery names them.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Options for one task call. Everything is optional; the defaults send the
/// task now, to the default queue.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub(crate) countdown: Option<Duration>,
    pub(crate) eta: Option<DateTime<Utc>>,
    pub(crate) expires: Option<DateTime<Utc>>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) queue: Option<String>,
    pub(crate) exchange: Option<String>,
    pub(crate) routing_key: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) task_id: Option<String>,
    pub(crate) headers: BTreeMap<String, Value>,
    pub(crate) time_limit: Option<f64>,
    pub(crate) soft_time_limit: Option<f64>,
    pub(crate) ignore_result: bool,
    pub(crate) link: Vec<celeriac_common::Signature>,
    pub(crate) link_error: Vec<celeriac_common::Signature>,
}

/// Options that contradict each other.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// Both `countdown` and `eta` were given.
    #[error("give countdown or eta, not both")]
    CountdownAndEta,
    /// Both an absolute and a relative expiry were given.
    #[error("give expires or expires_in, not both")]
    TwoExpiries,
    /// A custom header uses a name the protocol reserves.
    #[error("header {0:?} is reserved by the Celery protocol")]
    ReservedHeader(String),
    /// A time limit is negative or not a number.
    #[error("time limit {0} must be a positive number of seconds")]
    BadTimeLimit(f64),
    /// A time a message cannot carry: before year 1 or after 9999 (a
    /// `countdown` or `expires_in` that far away included).
    #[error("{0} is out of range: messages carry times of years 1 to 9999")]
    TimeOutOfRange(&'static str),
    /// A custom header name (or a key inside its value) longer than the
    /// 255 bytes AMQP allows.
    #[error("header {0:?}: names and keys are at most 255 bytes")]
    HeaderNameTooLong(String),
    /// A task id no result row can be keyed by.
    #[error("invalid task id {id:?}: {reason}")]
    BadTaskId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a task id given by the caller (see
/// [`celeriac_common::protocol::check_task_id`]).
pub(crate) fn check_task_id(id: &str) -> Result<(), OptionsError> {
    celeriac_common::protocol::check_task_id(id).map_err(|e| OptionsError::BadTaskId {
        id: id.to_owned(),
        reason: match e {
            celeriac_common::protocol::ProtocolError::BadHeader { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

impl ApplyOptions {
    /// Options with every default.
    pub fn new() -> Self {
        Self::default()
    }
    /// Run no earlier than `countdown` from now.
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.countdown = Some(countdown);
        self
    }
    /// Run no earlier than `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.eta = Some(eta);
        self
    }
    /// Do not run after `at`: a worker records REVOKED instead.
    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(at);
        self
    }
    /// Do not run later than `after` from now.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.expires_in = Some(after);
        self
    }
    /// Send to this queue (declared as Celery declares it) instead of the default.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Publish to this exchange (default: the queue's own direct exchange).
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }
    /// Publish with this routing key (default: the queue's name).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }
    /// Message priority; RabbitMQ honours it up to the queue's `x-max-priority`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Use this task id instead of a random UUID.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }
    /// Adds a custom header, delivered to the task with the message.
    pub fn header(mut self, name: impl Into<String>, value: Value) -> Self {
        self.headers.insert(name.into(), value);
        self
    }
    /// Hard time limit in seconds (Celery's `time_limit`).
    pub fn time_limit(mut self, secs: f64) -> Self {
        self.time_limit = Some(secs);
        self
    }
    /// Soft time limit in seconds (Celery's `soft_time_limit`).
    pub fn soft_time_limit(mut self, secs: f64) -> Self {
        self.soft_time_limit = Some(secs);
        self
    }
    /// Ask workers not to store the result.
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = ignore;
        self
    }

    /// Calls `callback` with this task's result (prepended to its args) when it succeeds.
    pub fn link(mut self, callback: celeriac_common::Signature) -> Self {
        self.link.push(callback);
        self
    }

    /// Calls `errback` with this task's id when it fails for good.
    pub fn link_error(mut self, errback: celeriac_common::Signature) -> Self {
        self.link_error.push(errback);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), OptionsError> {
        if self.countdown.is_some() && self.eta.is_some() {
            return Err(OptionsError::CountdownAndEta);
        }
        if self.expires.is_some() && self.expires_in.is_some() {
            return Err(OptionsError::TwoExpiries);
        }
        for limit in [self.time_limit, self.soft_time_limit]
            .into_iter()
            .flatten()
        {
            if !(limit.is_finite() && limit > 0.0) {
                return Err(OptionsError::BadTimeLimit(limit));
            }
        }
        if let Some(id) = &self.task_id {
            check_task_id(id)?;
        }
        if let Some(name) = self
            .headers
            .keys()
            .find(|k| celeriac_common::protocol::is_reserved_header(k))
        {
            return Err(OptionsError::ReservedHeader(name.clone()));
        }
        for (name, value) in &self.headers {
            if name.len() > 255 || !short_keys(value) {
                return Err(OptionsError::HeaderNameTooLong(name.clone()));
            }
        }
        for (what, t) in [("eta", self.eta), ("expires", self.expires)] {
            if t.is_some_and(|t| !celeriac_common::protocol::fits_the_wire(&t)) {
                return Err(OptionsError::TimeOutOfRange(what));
            }
        }
        Ok(())
    }

    /// `eta` and `expires` of a message sent at `now`: given, or `now`
    /// plus `countdown` / `expires_in`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn times(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), OptionsError> {
        let after = |what: &'static str, d: Option<Duration>| {
            d.map(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .filter(celeriac_common::protocol::fits_the_wire)
                    .ok_or(OptionsError::TimeOutOfRange(what))
            })
            .transpose()
        };
        Ok((
            self.eta
                .map_or_else(|| after("countdown", self.countdown), |t| Ok(Some(t)))?,
            self.expires
                .map_or_else(|| after("expires_in", self.expires_in), |t| Ok(Some(t)))?,
        ))
    }
}

/// Whether every object key inside a header value fits an AMQP short string.
fn short_keys(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Object(m) => m.iter().all(|(k, v)| k.len() <= 255 && short_keys(v)),
        serde_json::Value::Array(items) => items.iter().all(short_keys),
        _ => true,
    }
}
