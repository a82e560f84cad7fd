//! Python's `repr()` of JSON values, as Celery's events carry arguments and
//! results (`[1, 'a', None]`, `{'x': True}`), so monitors show them as they
//! would a Python worker's.

use serde_json::{Map, Value};
use std::fmt::Write;

/// Longest repr sent; longer ones are cut and end in `...`, as Celery's
/// `saferepr` does.
const MAX_REPR: usize = 1024;

/// `repr(value)` as Python writes it, at most [`MAX_REPR`] bytes long.
pub(crate) fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    cut(out)
}

/// `repr(args)` of positional arguments: a Python list.
pub(crate) fn repr_list(values: &[Value]) -> String {
    let mut out = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(&mut out, v);
    }
    out.push(']');
    cut(out)
}

/// `repr(kwargs)` of keyword arguments: a Python dict.
pub(crate) fn repr_map(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_map(&mut out, map);
    cut(out)
}

/// `repr(s)` of one string.
pub(crate) fn repr_str(s: &str) -> String {
    let mut out = String::new();
    write_str(&mut out, s);
    out
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_REPR {
        let mut end = MAX_REPR - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, v);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_repr(out, v);
    }
    out.push('}');
}

/// Python quotes with `'` unless the text holds one and no `"`.
fn write_str(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs_match_python() {
        assert_eq!(
            repr_list(&[json!(1), json!("a"), json!(null)]),
            "[1, 'a', None]"
        );
        assert_eq!(
            repr(&json!({"x": true, "y": [1.5]})),
            "{'x': True, 'y': [1.5]}"
        );
        let mut kwargs = Map::new();
        kwargs.insert("k".into(), json!(None::<u8>));
        assert_eq!(repr_map(&kwargs), "{'k': None}");
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a'b\"c\n"), "'a\\'b\"c\\n'");
        let long = repr(&json!("x".repeat(5000)));
        assert_eq!(long.len(), MAX_REPR);
        assert!(long.ends_with("..."));
    }
}
