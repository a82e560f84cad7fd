//! Conversions between AMQP header values and JSON.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// An AMQP header value as JSON: void is `null`, byte strings that are utf-8
/// become strings, tables become objects.
pub(crate) fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            let scaled = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(scaled).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// An AMQP table as a JSON object.
pub(crate) fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A JSON value as the AMQP header value Celery's own client would send;
/// an error if a key is longer than an AMQP short string.
pub(crate) fn from_json(value: &Value) -> Result<AMQPValue, KeyTooLong> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) => AMQPValue::Double(f),
            (None, None) => AMQPValue::LongString(LongString::from(n.to_string())),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(from_json).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => {
            let mut table = FieldTable::default();
            for (k, v) in map {
                table.insert(short(k)?, from_json(v)?);
            }
            AMQPValue::FieldTable(table)
        }
    })
}

/// `key` as a field table's key, an AMQP short string.
pub(crate) fn short(key: &str) -> Result<ShortString, KeyTooLong> {
    ShortString::try_new(key).map_err(|_| KeyTooLong(key.len()))
}

/// A field table key longer than the 255 bytes AMQP allows (its length).
#[derive(Debug)]
pub(crate) struct KeyTooLong(pub(crate) usize);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_amqp() {
        let v = json!({"a": [1, 2.5, null, true, "x"], "b": {"c": -7}});
        assert_eq!(to_json(&from_json(&v).expect("fits")), v);
    }

    #[test]
    fn a_key_amqp_cannot_carry_is_an_error() {
        let long = "k".repeat(256);
        let v = json!({"a": [{ long.as_str(): 1 }]});
        assert!(matches!(from_json(&v), Err(KeyTooLong(256))));
        assert!(from_json(&json!({ "k".repeat(255): 1 })).is_ok());
    }
}
