//! Encoding a [`TaskMessage`]: its JSON body and its AMQP properties and headers.

use super::{CONTENT_TYPE_JSON, ProtocolError, TaskMessage, amqp_value};
use chrono::{DateTime, FixedOffset, SecondsFormat};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::Value;

/// Celery truncates `argsrepr`/`kwargsrepr` to this many characters.
pub(super) const REPR_MAX_CHARS: usize = 1024;

impl TaskMessage {
    /// Encodes the body (`[args, kwargs, embed]`) as JSON.
    pub fn encode_body(&self) -> Result<Vec<u8>, ProtocolError> {
        serde_json::to_vec(&(&self.args, &self.kwargs, &self.embed))
            .map_err(ProtocolError::Serialize)
    }

    /// The `argsrepr` and `kwargsrepr` headers: the message's own, else
    /// the arguments' JSON text, cut as Celery cuts them.
    pub fn reprs(&self) -> (String, String) {
        let argsrepr = self.argsrepr.clone().unwrap_or_else(|| repr(&self.args));
        let kwargsrepr = self
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| repr(&self.kwargs));
        (argsrepr, kwargsrepr)
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
    ///
    /// Fails on a task id, `reply_to` or header key longer than the 255
    /// bytes an AMQP short string holds.
    pub fn properties(&self) -> Result<BasicProperties, ProtocolError> {
        let too_long = |name: &'static str| {
            move |e: amqp_value::KeyTooLong| ProtocolError::BadHeader {
                name,
                reason: format!(
                    "it, or a key inside it, is {} bytes; AMQP carries at most 255",
                    e.0
                ),
            }
        };
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
        let json = |v: &Value, name| {
            (!v.is_null())
                .then(|| amqp_value::from_json(v).map_err(too_long(name)))
                .transpose()
        };
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
        let (argsrepr, kwargsrepr) = self.reprs();
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
        put(
            "stamped_headers",
            json(&self.stamped_headers, "stamped_headers")?,
        );
        put("stamps", json(&self.stamps, "stamps")?);
        for (k, v) in &self.extra_headers {
            let value = amqp_value::from_json(v).map_err(too_long("extra header"))?;
            h.insert(
                amqp_value::short(k).map_err(too_long("extra header"))?,
                value,
            );
        }
        let correlation_id = amqp_value::short(&self.id).map_err(too_long("id"))?;
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
            .with_content_encoding(ShortString::from("utf-8"))
            .with_correlation_id(correlation_id)
            .with_delivery_mode(2)
            .with_priority(self.priority.unwrap_or(0))
            .with_headers(h);
        if let Some(r) = &self.reply_to {
            props = props.with_reply_to(amqp_value::short(r).map_err(too_long("reply_to"))?);
        }
        Ok(props)
    }
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
