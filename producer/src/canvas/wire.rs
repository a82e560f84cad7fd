//! Canvases in Celery's dict form (a signature with `subtask_type`), so a
//! canvas built in Python can be read here and one built here read by Python:
//!
//! - chain: `{"task": "celery.chain", "args": [], "kwargs": {"tasks": [...]}, "subtask_type": "chain", ...}`
//! - group: `{"task": "celery.group", "args": [], "kwargs": {"tasks": [...]}, "subtask_type": "group", ...}`
//! - chord: `{"task": "celery.chord", "args": [], "kwargs": {"header": [...] or a group,
//!   "body": {...}, "kwargs": {}}, "subtask_type": "chord", ...}`

use super::{Canvas, Chain, Chord, Group, TaskSig};
use celeriac_common::Signature;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A dict that is not a canvas Celery could have written.
#[derive(Debug, thiserror::Error)]
#[error("not a Celery canvas: {0}")]
pub struct NotACanvas(pub(crate) String);

fn node(
    task: &str,
    kind: &str,
    kwargs: Map<String, Value>,
    options: &Map<String, Value>,
) -> Signature {
    let mut sig = Signature::new(task, Vec::new());
    sig.kwargs = kwargs;
    sig.options = options.clone();
    sig.subtask_type = Some(kind.to_owned());
    sig
}

fn list(tasks: &[Canvas]) -> Value {
    Value::Array(tasks.iter().map(|t| to_value(&t.to_signature())).collect())
}

fn to_value(sig: &Signature) -> Value {
    serde_json::to_value(sig).unwrap_or(Value::Null)
}

impl Canvas {
    /// This canvas as a Celery signature dict.
    pub fn to_signature(&self) -> Signature {
        match self {
            Canvas::Task(t) => t.sig.clone(),
            Canvas::Chain(c) => {
                let kwargs = Map::from_iter([("tasks".to_owned(), list(&c.tasks))]);
                node("celery.chain", "chain", kwargs, &c.options)
            }
            Canvas::Group(g) => group_signature(g),
            Canvas::Chord(c) => {
                // Celery writes a header given as a list as a list; a frozen
                // header (with its group id) as a group.
                let header = if c.header.options.is_empty() {
                    list(&c.header.tasks)
                } else {
                    to_value(&group_signature(&c.header))
                };
                let kwargs = Map::from_iter([
                    ("header".to_owned(), header),
                    ("body".to_owned(), to_value(&c.body.to_signature())),
                    ("kwargs".to_owned(), Value::Object(Map::new())),
                ]);
                node("celery.chord", "chord", kwargs, &c.options)
            }
        }
    }

    /// Reads a Celery signature dict (any nesting of chains, groups, chords).
    pub fn from_signature(sig: Signature) -> Result<Canvas, NotACanvas> {
        let Signature {
            task,
            args,
            mut kwargs,
            options,
            subtask_type,
            immutable,
            extra,
        } = sig;
        let tasks =
            |kwargs: &mut Map<String, Value>, key: &str| -> Result<Vec<Canvas>, NotACanvas> {
                match kwargs.remove(key) {
                    Some(Value::Array(items)) => items.into_iter().map(from_value).collect(),
                    Some(v @ Value::Object(_)) => match from_value(v)? {
                        Canvas::Group(g) => Ok(g.tasks),
                        other => Ok(vec![other]),
                    },
                    _ => Err(NotACanvas(format!(
                        "{task}: kwargs.{key} is not a list of signatures"
                    ))),
                }
            };
        match subtask_type.as_deref() {
            None => Ok(Canvas::Task(TaskSig {
                sig: Signature {
                    task,
                    args,
                    kwargs,
                    options,
                    subtask_type: None,
                    immutable,
                    extra,
                },
                error: None,
            })),
            Some("chain") => Ok(Canvas::Chain(Chain {
                tasks: tasks(&mut kwargs, "tasks")?,
                options,
            })),
            Some("group") => Ok(Canvas::Group(Group {
                tasks: tasks(&mut kwargs, "tasks")?,
                options,
            })),
            Some("chord") => {
                let header_options = match kwargs.get("header") {
                    Some(Value::Object(h)) => h
                        .get("options")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    _ => Map::new(),
                };
                let header = tasks(&mut kwargs, "header")?;
                let body = kwargs
                    .remove("body")
                    .filter(|b| !b.is_null())
                    .ok_or_else(|| NotACanvas(format!("{task}: a chord without a body")))?;
                Ok(Canvas::Chord(Chord {
                    header: Group {
                        tasks: header,
                        options: header_options,
                    },
                    body: Box::new(from_value(body)?),
                    options,
                }))
            }
            Some(other) => Err(NotACanvas(format!(
                "subtask_type {other:?} is not supported (chain, group, chord)"
            ))),
        }
    }
}

fn group_signature(g: &Group) -> Signature {
    let kwargs = Map::from_iter([("tasks".to_owned(), list(&g.tasks))]);
    node("celery.group", "group", kwargs, &g.options)
}

fn from_value(v: Value) -> Result<Canvas, NotACanvas> {
    let sig: Signature =
        serde_json::from_value(v).map_err(|e| NotACanvas(format!("signature: {e}")))?;
    Canvas::from_signature(sig)
}

impl Serialize for Canvas {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_signature().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Canvas {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Canvas, D::Error> {
        let sig = Signature::deserialize(d)?;
        Canvas::from_signature(sig).map_err(serde::de::Error::custom)
    }
}
