//! From a canvas to the messages Celery would publish for it, without a
//! broker: check, normalise (as Celery's `_chain.prepare_steps` does),
//! freeze (an id for every node, client-side), then emit.

mod chords;
mod emit;
mod freeze;
mod message;
mod normalize;

pub(super) use chords::collect_chords;
pub(super) use emit::{EmitCtx, emit};
pub(super) use freeze::{FreezeCtx, freeze};
pub(super) use normalize::{check, normalize};

use super::Canvas;
use super::send::CanvasError;
use celeriac_common::backend::chord::NewChord;
use celeriac_common::protocol::TaskMessage;

/// The most steps one chain may have. A chain travels in its first
/// message (the steps to come, in `body[2]["chain"]`), and each step's
/// message carries the rest: a chain of n steps sends about n²/2
/// signatures in all. 1,000 steps make a first message of ~200 KB.
pub const MAX_CHAIN_STEPS: usize = 1_000;

/// The deepest nesting of chains, groups and chords accepted.
pub const MAX_DEPTH: usize = 32;

/// A message to publish, and its queue when the signature names one.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) msg: TaskMessage,
    pub(crate) queue: Option<String>,
}

/// Where a workflow's outcome will be: the ids, frozen client-side.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ResultNode {
    /// One task; `parent` is the step before it in a chain.
    Task {
        id: String,
        parent: Option<Box<ResultNode>>,
    },
    /// A group's members, in order (a chord's header, too).
    Group {
        id: String,
        members: Vec<ResultNode>,
        parent: Option<Box<ResultNode>>,
    },
}

impl ResultNode {
    fn id(&self) -> &str {
        match self {
            ResultNode::Task { id, .. } | ResultNode::Group { id, .. } => id,
        }
    }

    /// `self` with `p` as the parent of its first ancestor that has none
    /// (a chain's first step, a chord's header).
    fn with_parent(self, p: ResultNode) -> ResultNode {
        let up = |parent: Option<Box<ResultNode>>| {
            Some(Box::new(match parent {
                Some(q) => q.with_parent(p),
                None => p,
            }))
        };
        match self {
            ResultNode::Task { id, parent } => ResultNode::Task {
                id,
                parent: up(parent),
            },
            ResultNode::Group {
                id,
                members,
                parent,
            } => ResultNode::Group {
                id,
                members,
                parent: up(parent),
            },
        }
    }
}

/// What sending a canvas does: record `chords`, then publish `messages`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) chords: Vec<NewChord>,
    pub(crate) messages: Vec<Outgoing>,
    pub(crate) result: ResultNode,
}

/// Plans `canvas`.
pub(crate) fn plan(canvas: &Canvas) -> Result<Plan, CanvasError> {
    check(canvas, 0)?;
    let mut canvas = normalize(canvas.clone())?;
    freeze(
        &mut canvas,
        &FreezeCtx {
            root: None,
            group: None,
        },
    );
    let mut chords = Vec::new();
    collect_chords(&canvas, None, &mut chords)?;
    let mut messages = Vec::new();
    let result = emit(&canvas, &EmitCtx::default(), &mut messages)?;
    Ok(Plan {
        chords,
        messages,
        result,
    })
}
