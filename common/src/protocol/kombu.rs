//! kombu's JSON type markers: `{"__type__": "datetime", "__value__": "..."}`.
//!
//! Python's kombu serializer wraps values JSON cannot express. celeriac keeps
//! them as they are inside a message (so a Rust worker relaying them to Python
//! changes nothing) and unwraps them only when building typed task arguments.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

const TYPE_KEY: &str = "__type__";
const VALUE_KEY: &str = "__value__";

/// Replaces every kombu marker in `value` by its plain JSON form: `datetime`,
/// `date`, `time`, `uuid` and `decimal` become their string, `bytes` becomes its
/// (utf-8) string, `base64` stays its base64 text. Unknown marker types are
/// left as they are. kombu 5 writes a UUID's value as `{"hex": "..."}`; it
/// becomes the hyphenated string.
pub fn unwrap_markers(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(unwrap_markers).collect()),
        Value::Object(map) => match marker(&map) {
            Some(("uuid", Value::Object(fields))) => fields
                .get("hex")
                .and_then(Value::as_str)
                .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
                .map_or_else(
                    || Value::Object(fields.clone()),
                    |id| Value::String(id.to_string()),
                ),
            Some((_, inner)) => inner.clone(),
            None => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, unwrap_markers(v)))
                    .collect(),
            ),
        },
        other => other,
    }
}

fn marker(map: &Map<String, Value>) -> Option<(&str, &Value)> {
    if map.len() != 2 {
        return None;
    }
    let kind = map.get(TYPE_KEY)?.as_str()?;
    let inner = map.get(VALUE_KEY)?;
    matches!(
        kind,
        "datetime" | "date" | "time" | "uuid" | "decimal" | "bytes" | "base64"
    )
    .then_some((kind, inner))
}

/// A datetime as kombu marks it, so Python receives a `datetime` object.
pub fn datetime(at: DateTime<Utc>) -> Value {
    json!({ TYPE_KEY: "datetime", VALUE_KEY: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, false) })
}

/// A UUID as kombu marks it, so Python receives a `uuid.UUID`.
pub fn uuid(id: uuid::Uuid) -> Value {
    json!({ TYPE_KEY: "uuid", VALUE_KEY: { "hex": id.simple().to_string() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_markers_unwrap_and_others_stay() {
        let v = json!([
            {"__type__": "decimal", "__value__": "1.50"},
            {"a": {"__type__": "uuid", "__value__": "0b1c"}},
            {"__type__": "martian", "__value__": 1},
            {"__type__": "date", "__value__": "2026-01-01", "extra": 1}
        ]);
        let out = unwrap_markers(v);
        assert_eq!(out[0], json!("1.50"));
        assert_eq!(out[1], json!({"a": "0b1c"}));
        assert_eq!(out[2]["__type__"], json!("martian"));
        assert_eq!(out[3]["extra"], json!(1));
    }

    #[test]
    fn datetime_marker_round_trips() {
        let at = DateTime::parse_from_rfc3339("2026-05-06T07:08:09.123456+00:00")
            .expect("valid")
            .with_timezone(&Utc);
        let m = datetime(at);
        assert_eq!(m["__value__"], json!("2026-05-06T07:08:09.123456+00:00"));
        assert_eq!(unwrap_markers(m), json!("2026-05-06T07:08:09.123456+00:00"));
    }

    #[test]
    fn uuid_marker_is_kombus_hex_form() {
        let id = uuid::Uuid::parse_str("12345678-1234-5678-1234-567812345678").expect("uuid");
        let m = uuid(id);
        assert_eq!(
            m["__value__"],
            json!({"hex": "12345678123456781234567812345678"})
        );
        assert_eq!(
            unwrap_markers(m),
            json!("12345678-1234-5678-1234-567812345678")
        );
    }
}
