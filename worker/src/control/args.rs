//! Reading a request's arguments leniently, as Celery's worker does, and
//! the reply shapes (`{"ok": ...}`, `{"error": ...}`).

use serde_json::{Map, Value, json};
use std::time::Duration;

pub(super) fn ok(message: impl Into<String>) -> Value {
    json!({"ok": message.into()})
}

pub(super) fn error(message: impl Into<String>) -> Value {
    json!({"error": message.into()})
}

pub(super) fn arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    args.get(name).filter(|v| !v.is_null())
}

pub(super) fn missing(method: &str, name: &str) -> Value {
    error(format!(
        "TypeError(\"{method}() missing 1 required positional argument: '{name}'\")"
    ))
}

/// A string or a list of strings.
pub(super) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Seconds from a JSON number or numeric string; `None` for null or absent.
pub(super) fn seconds(v: Option<&Value>) -> Result<Option<Duration>, String> {
    let Some(v) = v else { return Ok(None) };
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => Ok(celeriac_common::seconds::capped(s)),
        Some(0.0) => Ok(None),
        _ => Err(format!("ValueError('invalid time limit: {v}')")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_read_leniently() {
        assert_eq!(strings(Some(&json!("a"))), vec!["a"]);
        assert_eq!(strings(Some(&json!(["a", "b", 3]))), vec!["a", "b"]);
        assert_eq!(
            seconds(Some(&json!(1.5))),
            Ok(Some(Duration::from_millis(1500)))
        );
        assert_eq!(seconds(Some(&json!("2"))), Ok(Some(Duration::from_secs(2))));
        assert_eq!(seconds(None), Ok(None));
        assert!(seconds(Some(&json!(-1))).is_err());
        // Longer than any clock can add: the cap, not a panic.
        let cap = celeriac_common::seconds::capped(f64::INFINITY);
        assert_eq!(seconds(Some(&json!(1e20))), Ok(cap));
        assert_eq!(seconds(Some(&json!("1e300"))), Ok(cap));
    }
}
