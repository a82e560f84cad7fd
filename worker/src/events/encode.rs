//! An event written straight to its JSON text, field by field, when it is
//! sent: no `serde_json::Value` tree, no map, no key strings of its own;
//! the fields every event of this worker shares (`hostname`, `utcoffset`,
//! `pid`) are written once, when the worker starts, and copied in.

use serde::Serialize;

/// One event's JSON object being written (`{"type": ...` so far).
pub(super) struct Obj(Vec<u8>);

impl Obj {
    /// An object whose first field is `"type": kind`; `room` is a guess of
    /// the bytes the other fields take.
    pub(super) fn new(kind: &str, room: usize) -> Obj {
        let mut buf = Vec::with_capacity(room + 160);
        buf.extend_from_slice(b"{\"type\":");
        put(&mut buf, kind);
        Obj(buf)
    }

    /// Adds `"key": value` (`key` must need no escaping).
    pub(super) fn field<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Obj {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        put(&mut self.0, value);
        self
    }

    /// Closes the object after `shared` (fields already written as
    /// `,"key":value...`).
    pub(super) fn finish(mut self, shared: &[u8]) -> Vec<u8> {
        self.0.extend_from_slice(shared);
        self.0.push(b'}');
        self.0
    }
}

/// Writes `value` as JSON; `null` if it cannot be written (nothing the
/// worker sends: strings, numbers, booleans, JSON values).
fn put<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    let at = buf.len();
    if serde_json::to_writer(&mut *buf, value).is_err() {
        buf.truncate(at);
        buf.extend_from_slice(b"null");
    }
}

/// The fields every event of one worker carries unchanged, written once:
/// `,"hostname":...,"utcoffset":...,"pid":...`.
pub(super) fn shared_fields(hostname: &str, utcoffset: i64, pid: u32) -> Vec<u8> {
    let obj = Obj(Vec::new())
        .field("hostname", hostname)
        .field("utcoffset", &utcoffset)
        .field("pid", &pid);
    obj.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn writes_a_json_object_with_escapes_and_shared_fields() {
        let shared = shared_fields("w@\"h\"", -2, 7);
        let text = Obj::new("task-started", 0)
            .field("uuid", "a\nb")
            .field("eta", &None::<&str>)
            .field("runtime", &0.5)
            .field("nan", &f64::NAN)
            .field("result", &json!({"k": [1]}))
            .finish(&shared);
        let v: Value = serde_json::from_slice(&text).expect("valid JSON");
        assert_eq!(
            v,
            json!({"type": "task-started", "uuid": "a\nb", "eta": null, "runtime": 0.5,
                   "nan": null, "result": {"k": [1]}, "hostname": "w@\"h\"",
                   "utcoffset": -2, "pid": 7})
        );
    }
}
