//! One task call as a value: [`TaskSig`], typed from a [`TaskDef`] or by name.

use super::Canvas;
use celeriac_common::task::split_args;
use celeriac_common::{Signature, TaskDef};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// A task with its arguments and options, not yet sent: Celery's
/// `add.s(2, 3)`. Build it typed with [`TaskSignatures`] (`Add::s((2, 3))`)
/// or by name with [`TaskSig::by_name`]; combine it into a [`Canvas`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSig {
    pub(crate) sig: Signature,
    /// Arguments that could not be encoded; reported when the canvas is sent.
    pub(crate) error: Option<String>,
}

impl TaskSig {
    /// A signature for the task named `name` (defined elsewhere, for
    /// example in Python), with positional arguments.
    pub fn by_name(name: impl Into<String>, args: Vec<Value>) -> TaskSig {
        TaskSig {
            sig: Signature::new(name, args),
            error: None,
        }
    }

    /// Adds keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> TaskSig {
        self.sig.kwargs.extend(kwargs);
        self
    }

    /// Celery's `si`: the parent's result is *not* prepended to the arguments.
    pub fn immutable(mut self) -> TaskSig {
        self.sig.immutable = true;
        self
    }

    /// The task name.
    pub fn name(&self) -> &str {
        &self.sig.task
    }

    /// The signature in Celery's dict form.
    pub fn signature(&self) -> &Signature {
        &self.sig
    }

    /// Sets a Celery option by name (`queue`, `countdown`, `priority`, ...).
    pub fn option(mut self, name: &str, value: Value) -> TaskSig {
        self.sig.options.insert(name.to_owned(), value);
        self
    }

    /// Sends to this queue.
    pub fn queue(self, queue: impl Into<String>) -> TaskSig {
        self.option("queue", Value::String(queue.into()))
    }

    /// Runs no earlier than `countdown` after it is sent.
    pub fn countdown(self, countdown: Duration) -> TaskSig {
        self.option("countdown", Value::from(countdown.as_secs_f64()))
    }

    /// Runs no earlier than `eta`.
    pub fn eta(self, eta: DateTime<Utc>) -> TaskSig {
        self.option(
            "eta",
            Value::String(eta.to_rfc3339_opts(SecondsFormat::Micros, false)),
        )
    }

    /// Is not run after `at` (recorded REVOKED instead).
    pub fn expires(self, at: DateTime<Utc>) -> TaskSig {
        self.option(
            "expires",
            Value::String(at.to_rfc3339_opts(SecondsFormat::Micros, false)),
        )
    }

    /// Uses this task id instead of a random UUID.
    pub fn task_id(self, id: impl Into<String>) -> TaskSig {
        self.option("task_id", Value::String(id.into()))
    }

    /// Message priority.
    pub fn priority(self, priority: u8) -> TaskSig {
        self.option("priority", Value::from(priority))
    }

    /// Calls `callback` with this task's result when it succeeds.
    pub fn link(self, callback: impl Into<Canvas>) -> TaskSig {
        self.push_option("link", callback.into())
    }

    /// Calls `errback` with this task's id when it fails for good.
    pub fn link_error(self, errback: impl Into<Canvas>) -> TaskSig {
        self.push_option("link_error", errback.into())
    }

    fn push_option(mut self, name: &str, canvas: Canvas) -> TaskSig {
        if let Some(e) = canvas.first_error() {
            self.error.get_or_insert(e);
        }
        push_list_option(&mut self.sig.options, name, canvas.to_signature());
        self
    }
}

/// Appends `sig` to the list option `name` (`link`, `link_error`).
pub(crate) fn push_list_option(options: &mut Map<String, Value>, name: &str, sig: Signature) {
    let value = serde_json::to_value(sig).unwrap_or(Value::Null);
    match options.get_mut(name) {
        Some(Value::Array(list)) => list.push(value),
        Some(single @ Value::Object(_)) => {
            let first = single.take();
            *single = Value::Array(vec![first, value]);
        }
        _ => {
            options.insert(name.to_owned(), Value::Array(vec![value]));
        }
    }
}

/// Typed signatures of a [`TaskDef`]: `Add::s((2, 3))`, `Add::si((2, 3))`,
/// `Add::partial((3,))`. In scope with `use celeriac::canvas::TaskSignatures`.
pub trait TaskSignatures: TaskDef {
    /// A signature with all the arguments. In a chain, the previous step's
    /// result is prepended to them: use [`TaskSignatures::partial`] or
    /// [`TaskSignatures::si`] for the steps after the first.
    fn s(args: Self::Args) -> TaskSig {
        typed(Self::NAME, &args)
    }

    /// An immutable signature (Celery's `si`): it ignores its parent's result.
    fn si(args: Self::Args) -> TaskSig {
        Self::s(args).immutable()
    }

    /// A signature with all but the first argument, which the previous step's
    /// result fills (Celery's partial `add.s(3)` in `add.s(1, 2) | add.s(3)`).
    /// For a task taking `(A, B, C)`, `rest` is `(B, C)`; for `(A,)`, `()`.
    fn partial(rest: <Self::Args as PartialArgs>::Rest) -> TaskSig
    where
        Self::Args: PartialArgs,
    {
        typed(Self::NAME, &rest)
    }
}

impl<T: TaskDef> TaskSignatures for T {}

fn typed<A: Serialize>(name: &str, args: &A) -> TaskSig {
    match split_args(args) {
        Ok((args, kwargs)) => TaskSig::by_name(name, args).kwargs(kwargs),
        Err(e) => TaskSig {
            sig: Signature::new(name, Vec::new()),
            error: Some(e.to_string()),
        },
    }
}

/// Positional arguments whose first element a parent's result can fill:
/// tuples, whose `Rest` is the tuple without its first element.
pub trait PartialArgs {
    /// The arguments after the first.
    type Rest: Serialize;
}

macro_rules! partial_args {
    ($first:ident $(, $rest:ident)*) => {
        impl<$first, $($rest: Serialize),*> PartialArgs for ($first, $($rest,)*) {
            type Rest = ($($rest,)*);
        }
    };
}
partial_args!(A);
partial_args!(A, B);
partial_args!(A, B, C);
partial_args!(A, B, C, D);
partial_args!(A, B, C, D, E);
partial_args!(A, B, C, D, E, F);
partial_args!(A, B, C, D, E, F, G);
partial_args!(A, B, C, D, E, F, G, H);
