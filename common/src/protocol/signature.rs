//! Celery signatures, as they appear in a message body's `callbacks`,
//! `errbacks`, `chain` and `chord`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A task call described as data: `{task, args, kwargs, options, subtask_type, immutable}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The task name.
    pub task: String,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Call options (`queue`, `countdown`, `link`, ...), kept as sent.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// `null` for a plain task, or `"chain"`, `"group"`, `"chord"`.
    #[serde(default)]
    pub subtask_type: Option<String>,
    /// Whether the parent's result is *not* prepended to `args`.
    #[serde(default)]
    pub immutable: bool,
    /// Any further keys Celery adds (for example `chord_size`), kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Signature {
    /// A plain signature for `task` with positional arguments.
    pub fn new(task: impl Into<String>, args: Vec<Value>) -> Self {
        Signature {
            task: task.into(),
            args,
            kwargs: Map::new(),
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            extra: Map::new(),
        }
    }
}

/// The body's third element: what to do after the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// Tasks called with the result on success (`link`).
    #[serde(default)]
    pub callbacks: Option<Vec<Signature>>,
    /// Tasks called on failure (`link_error`).
    #[serde(default)]
    pub errbacks: Option<Vec<Signature>>,
    /// The rest of a chain, stored reversed: the next task is the last element.
    #[serde(default)]
    pub chain: Option<Vec<Signature>>,
    /// The chord body to call when this task's group completes.
    #[serde(default)]
    pub chord: Option<Signature>,
}
