//! Decoding a delivery into a [`TaskMessage`].

use super::headers::{Headers, KNOWN_HEADERS, is_broker_header, kind};
use super::{CONTENT_TYPE_JSON, Embed, ProtocolError, TaskMessage, amqp_value, check_task_id};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

impl TaskMessage {
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
