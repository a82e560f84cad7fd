//! Workflows (Celery's canvas): tasks as values ([`TaskSig`]) combined into
//! chains, groups and chords that nest freely, sent as Celery sends them.
//!
//! ```
//! use celeriac::canvas::{Canvas, TaskSignatures, chord, group};
//! use celeriac::TaskDef;
//!
//! struct Fetch;
//! impl TaskDef for Fetch { const NAME: &'static str = "tasks.fetch"; type Args = (String,); type Output = i64; }
//! struct Scale;
//! impl TaskDef for Scale { const NAME: &'static str = "tasks.scale"; type Args = (i64, i64); type Output = i64; }
//! struct Sum;
//! impl TaskDef for Sum { const NAME: &'static str = "tasks.sum"; type Args = (Vec<i64>,); type Output = i64; }
//!
//! // T1 → (T2, T3) → T4, as one expression.
//! let flow: Canvas = Fetch::s(("a".into(),))
//!     | group([Scale::partial((2,)), Scale::partial((3,))])
//!     | Sum::partial(());
//! // A fan-out of 10,000 with a callback.
//! let fan = chord((0..10_000).map(|i| Scale::s((i, 2))), Sum::partial(()));
//! # let _ = (flow, fan);
//! ```
//!
//! Send one with [`crate::Client::send_workflow`]; see `docs/workflows.md`.

mod apply;
mod plan;
mod result;
mod send;
mod signature;
mod wire;

pub use apply::{After, Applied, apply_after, planned_tasks};
pub use plan::{MAX_CHAIN_STEPS, MAX_DEPTH};
pub use result::{GroupCounts, GroupResult, WorkflowResult};
pub use send::CanvasError;
pub use signature::{PartialArgs, TaskSig, TaskSignatures};

use serde_json::{Map, Value};

/// A workflow: a task, or a chain, group or chord of workflows.
#[derive(Debug, Clone, PartialEq)]
pub enum Canvas {
    /// One task call.
    Task(TaskSig),
    /// Steps run one after the other, each result fed to the next.
    Chain(Chain),
    /// Members run in parallel.
    Group(Group),
    /// A group and a callback called with the members' results.
    Chord(Chord),
}

/// Steps run in order; each step's result is prepended to the next one's
/// arguments (unless it is immutable). Stops at the first failure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chain {
    /// The steps.
    pub tasks: Vec<Canvas>,
    /// Celery options of the chain (`link_error`, `task_id` of the last step, ...).
    pub options: Map<String, Value>,
}

/// Members run in parallel, with one group id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    /// The members.
    pub tasks: Vec<Canvas>,
    /// Celery options (`task_id` is the group id).
    pub options: Map<String, Value>,
}

/// A group (the header) and a body called once with the members' results,
/// in order, when every member has finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Chord {
    /// The header.
    pub header: Group,
    /// The callback.
    pub body: Box<Canvas>,
    /// Celery options (`link_error` goes to the body).
    pub options: Map<String, Value>,
}

/// A chain of `steps` (Celery's `chain(a, b, c)`, or `a | b | c`).
pub fn chain<I: IntoIterator>(steps: I) -> Canvas
where
    I::Item: Into<Canvas>,
{
    Canvas::Chain(Chain {
        tasks: steps.into_iter().map(Into::into).collect(),
        options: Map::new(),
    })
}

/// A group of `members` (Celery's `group(a, b, c)`).
pub fn group<I: IntoIterator>(members: I) -> Canvas
where
    I::Item: Into<Canvas>,
{
    Canvas::Group(Group {
        tasks: members.into_iter().map(Into::into).collect(),
        options: Map::new(),
    })
}

/// A chord: `header` in parallel, then `body` with their results (Celery's
/// `chord(header, body)`).
pub fn chord<I: IntoIterator>(header: I, body: impl Into<Canvas>) -> Canvas
where
    I::Item: Into<Canvas>,
{
    Canvas::Chord(Chord {
        header: Group {
            tasks: header.into_iter().map(Into::into).collect(),
            options: Map::new(),
        },
        body: Box::new(body.into()),
        options: Map::new(),
    })
}

/// A chain of workflows of different kinds: `chain![a, group![b, c], d]`.
#[macro_export]
macro_rules! chain {
    ($($step:expr),* $(,)?) => {
        $crate::canvas::chain([$($crate::canvas::Canvas::from($step)),*])
    };
}

/// A group of workflows of different kinds: `group![a, chain![b, c]]`.
#[macro_export]
macro_rules! group {
    ($($member:expr),* $(,)?) => {
        $crate::canvas::group([$($crate::canvas::Canvas::from($member)),*])
    };
}

impl From<TaskSig> for Canvas {
    fn from(sig: TaskSig) -> Canvas {
        Canvas::Task(sig)
    }
}

impl Canvas {
    /// The options of this node (a task's, a chain's, ...).
    pub fn options_mut(&mut self) -> &mut Map<String, Value> {
        match self {
            Canvas::Task(t) => &mut t.sig.options,
            Canvas::Chain(c) => &mut c.options,
            Canvas::Group(g) => &mut g.options,
            Canvas::Chord(c) => &mut c.options,
        }
    }

    /// Sets the id: a task's id, a chain's last step's, a group's group id,
    /// a chord's body's.
    pub fn task_id(mut self, id: impl Into<String>) -> Canvas {
        self.options_mut()
            .insert("task_id".into(), Value::String(id.into()));
        self
    }

    /// Calls `errback` when a task of this workflow fails: every task of a
    /// chain or group, a chord's body (which fails when a member does).
    pub fn link_error(mut self, errback: impl Into<Canvas>) -> Canvas {
        let errback = errback.into().to_signature();
        signature::push_list_option(self.options_mut(), "link_error", errback);
        self
    }

    /// This workflow, then `next` (Celery's `|`).
    pub fn then(self, next: impl Into<Canvas>) -> Canvas {
        let next = next.into();
        match self {
            Canvas::Chain(mut c) if c.options.is_empty() => {
                c.tasks.push(next);
                Canvas::Chain(c)
            }
            first => chain([first, next]),
        }
    }

    /// Checks what [`crate::Client::send_workflow`] would check before
    /// sending (empty chains, groups and chord headers, nesting depth, chain
    /// length, arguments that could not be encoded, option values), without
    /// a broker: a workflow stored to be sent later can be refused up front.
    pub fn validate(&self) -> Result<(), CanvasError> {
        plan::plan(self).map(|_| ())
    }

    /// The first argument error of a task in this workflow, if any.
    pub(crate) fn first_error(&self) -> Option<String> {
        match self {
            Canvas::Task(t) => t.error.as_ref().map(|e| format!("{}: {e}", t.sig.task)),
            Canvas::Chain(Chain { tasks, .. }) | Canvas::Group(Group { tasks, .. }) => {
                tasks.iter().find_map(Canvas::first_error)
            }
            Canvas::Chord(c) => c
                .header
                .tasks
                .iter()
                .find_map(Canvas::first_error)
                .or_else(|| c.body.first_error()),
        }
    }
}

impl<R: Into<Canvas>> std::ops::BitOr<R> for Canvas {
    type Output = Canvas;
    fn bitor(self, next: R) -> Canvas {
        self.then(next)
    }
}

impl<R: Into<Canvas>> std::ops::BitOr<R> for TaskSig {
    type Output = Canvas;
    fn bitor(self, next: R) -> Canvas {
        Canvas::from(self).then(next)
    }
}

#[cfg(test)]
mod tests;
