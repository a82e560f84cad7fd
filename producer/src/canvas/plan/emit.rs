//! Emitting: the messages to publish for a frozen canvas, and the result
//! tree the caller gets back.

use super::chords::{body_signature, first_id, set_chord_option};
use super::message::message;
use super::{Outgoing, ResultNode};
use crate::canvas::send::CanvasError;
use crate::canvas::{Canvas, Chain};
use celeriac_common::Signature;

#[derive(Default, Clone)]
pub(in crate::canvas) struct EmitCtx {
    pub(in crate::canvas) root: Option<String>,
    pub(in crate::canvas) chord: Option<Signature>,
    pub(in crate::canvas) chain: Vec<Signature>,
}

/// The messages a frozen, normalised canvas sends now, and its result.
pub(in crate::canvas) fn emit(
    canvas: &Canvas,
    ctx: &EmitCtx,
    out: &mut Vec<Outgoing>,
) -> Result<ResultNode, CanvasError> {
    match canvas {
        Canvas::Task(t) => {
            let (mut msg, queue) = message(&t.sig)?;
            if let Some(root) = &ctx.root {
                msg.root_id = Some(root.clone());
            }
            if ctx.chord.is_some() {
                msg.embed.chord = ctx.chord.clone();
            }
            if !ctx.chain.is_empty() {
                msg.embed.chain = Some(ctx.chain.clone());
            }
            let id = msg.id.clone();
            out.push(Outgoing { msg, queue });
            Ok(ResultNode::Task { id, parent: None })
        }
        Canvas::Chain(c) => emit_chain(c, ctx, out),
        Canvas::Group(g) => {
            let member_ctx = EmitCtx {
                chain: Vec::new(),
                ..ctx.clone()
            };
            let members = g
                .tasks
                .iter()
                .map(|m| emit(m, &member_ctx, out))
                .collect::<Result<_, _>>()?;
            Ok(ResultNode::Group {
                id: first_id(canvas),
                members,
                parent: None,
            })
        }
        Canvas::Chord(c) => {
            let mut c = c.clone();
            if let Some(outer) = &ctx.chord {
                set_chord_option(&mut c.body, outer);
            }
            let header_ctx = EmitCtx {
                root: ctx.root.clone(),
                chord: Some(body_signature(&c)),
                chain: Vec::new(),
            };
            let header = emit(&Canvas::Group(c.header.clone()), &header_ctx, out)?;
            Ok(result_of(&c.body).with_parent(header))
        }
    }
}

fn emit_chain(
    c: &Chain,
    ctx: &EmitCtx,
    out: &mut Vec<Outgoing>,
) -> Result<ResultNode, CanvasError> {
    let mut steps = c.tasks.clone();
    if let (true, Some(outer), Some(last)) = (steps.len() > 1, &ctx.chord, steps.last_mut()) {
        set_chord_option(last, outer);
    }
    let Some((first, rest)) = steps.split_first() else {
        return Err(CanvasError::Empty("chain"));
    };
    // Reversed: the next step is the last element; an enclosing chain's
    // rest runs after this one's.
    let mut chain = ctx.chain.clone();
    chain.extend(rest.iter().rev().map(Canvas::to_signature));
    let first_ctx = EmitCtx {
        root: ctx.root.clone().or_else(|| Some(first_id(first))),
        chord: if rest.is_empty() {
            ctx.chord.clone()
        } else {
            None
        },
        chain,
    };
    let mut node = emit(first, &first_ctx, out)?;
    for step in rest {
        node = result_of(step).with_parent(node);
    }
    Ok(node)
}

/// The result a frozen canvas will have, without sending it.
pub(super) fn result_of(canvas: &Canvas) -> ResultNode {
    match canvas {
        Canvas::Task(t) => ResultNode::Task {
            id: first_id(&Canvas::Task(t.clone())),
            parent: None,
        },
        Canvas::Chain(c) => {
            let mut node: Option<ResultNode> = None;
            for step in &c.tasks {
                let r = result_of(step);
                node = Some(match node {
                    Some(p) => r.with_parent(p),
                    None => r,
                });
            }
            node.unwrap_or(ResultNode::Group {
                id: String::new(),
                members: Vec::new(),
                parent: None,
            })
        }
        Canvas::Group(g) => ResultNode::Group {
            id: first_id(canvas),
            members: g.tasks.iter().map(result_of).collect(),
            parent: None,
        },
        Canvas::Chord(c) => {
            let header = result_of(&Canvas::Group(c.header.clone()));
            result_of(&c.body).with_parent(header)
        }
    }
}
