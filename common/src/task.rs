//! Typed task definitions shared by producers and workers.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// One task, defined once and used by both the producer (to call it) and the
/// worker (to run it), so a call site cannot send arguments the worker would
/// refuse.
///
/// `Args` travels as Celery's positional `args` when it serializes to a JSON
/// array (tuples, tuple structs, `Vec`), as `kwargs` when it serializes to an
/// object (structs with named fields), and as no arguments at all for `()`.
/// A worker accepts either form for a struct with named fields, so Python's
/// `add.delay(2, 3)` and `add.delay(x=2, y=3)` both reach `Add { x, y }`.
pub trait TaskDef: Send + Sync + 'static {
    /// The task's stable name on the wire, for example `"tasks.add"`.
    const NAME: &'static str;
    /// The arguments.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The value the task returns on success.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// Arguments that do not fit a task's declared argument type.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// Positional and keyword arguments were both given for a typed task.
    #[error("task takes either positional or keyword arguments, not both")]
    Mixed,
    /// The JSON did not match the declared type.
    #[error("arguments do not match the task's signature: {0}")]
    Mismatch(#[source] serde_json::Error),
}

/// Splits a typed argument value into Celery's `(args, kwargs)`; a scalar
/// becomes the single positional argument.
pub fn split_args<A: Serialize>(args: &A) -> Result<(Vec<Value>, Map<String, Value>), ArgsError> {
    match serde_json::to_value(args).map_err(ArgsError::Mismatch)? {
        Value::Array(a) => Ok((a, Map::new())),
        Value::Object(o) => Ok((Vec::new(), o)),
        Value::Null => Ok((Vec::new(), Map::new())),
        other => Ok((vec![other], Map::new())),
    }
}

/// Builds a typed argument value from Celery's `(args, kwargs)`, after
/// unwrapping kombu's JSON type markers (a `datetime` marker becomes its ISO
/// 8601 string, and so on).
pub fn join_args<A: DeserializeOwned>(
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<A, ArgsError> {
    let value = match (args.is_empty(), kwargs.is_empty()) {
        (false, false) => return Err(ArgsError::Mixed),
        (true, false) => Value::Object(kwargs.clone()),
        (false, true) if args.len() == 1 => {
            // A one-element list may be a 1-tuple or the single value itself.
            let list = Value::Array(args.to_vec());
            let list = crate::protocol::kombu::unwrap_markers(list);
            return serde_json::from_value(list.clone()).or_else(|first| {
                let Value::Array(mut items) = list else {
                    return Err(ArgsError::Mismatch(first));
                };
                serde_json::from_value(items.remove(0)).map_err(|_| ArgsError::Mismatch(first))
            });
        }
        (false, true) => Value::Array(args.to_vec()),
        (true, true) => {
            return serde_json::from_value(Value::Null)
                .or_else(|_| serde_json::from_value(Value::Array(Vec::new())))
                .or_else(|_| serde_json::from_value(Value::Object(Map::new())))
                .map_err(ArgsError::Mismatch);
        }
    };
    serde_json::from_value(crate::protocol::kombu::unwrap_markers(value))
        .map_err(ArgsError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Named {
        x: i64,
        y: String,
    }

    #[test]
    fn tuple_args_are_positional() {
        let (a, k) = split_args(&(1, "a")).expect("split");
        assert_eq!(a, vec![json!(1), json!("a")]);
        assert!(k.is_empty());
        let back: (i64, String) = join_args(&a, &k).expect("join");
        assert_eq!(back, (1, "a".to_owned()));
    }

    #[test]
    fn named_struct_is_kwargs_and_accepts_positional() {
        let (a, k) = split_args(&Named {
            x: 1,
            y: "b".into(),
        })
        .expect("split");
        assert!(a.is_empty());
        let back: Named = join_args(&a, &k).expect("join");
        assert_eq!(
            back,
            Named {
                x: 1,
                y: "b".into()
            }
        );
        let positional: Named = join_args(&[json!(1), json!("b")], &Map::new()).expect("seq");
        assert_eq!(positional.x, 1);
    }

    #[test]
    fn unit_and_single_values() {
        let (a, k) = split_args(&()).expect("split");
        assert!(a.is_empty() && k.is_empty());
        join_args::<()>(&a, &k).expect("unit");
        let one: f64 = join_args(&[json!(2.5)], &Map::new()).expect("single");
        assert_eq!(one, 2.5);
        let tuple1: (f64,) = join_args(&[json!(2.5)], &Map::new()).expect("1-tuple");
        assert_eq!(tuple1.0, 2.5);
    }

    #[test]
    fn mismatches_are_errors() {
        let err = join_args::<(i64, i64)>(&[json!("x")], &Map::new()).expect_err("mismatch");
        assert!(matches!(err, ArgsError::Mismatch(_)));
        let mut kw = Map::new();
        kw.insert("y".into(), json!(1));
        assert!(matches!(
            join_args::<Named>(&[json!(1)], &kw),
            Err(ArgsError::Mixed)
        ));
    }

    #[test]
    fn kombu_markers_become_plain_values() {
        let dt = json!({"__type__": "datetime", "__value__": "2026-01-02T03:04:05+00:00"});
        let v: chrono::DateTime<chrono::Utc> = join_args(&[dt], &Map::new()).expect("datetime");
        assert_eq!(v.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }
}
