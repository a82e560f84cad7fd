//! Freezing: an id for every node of a canvas, given client-side.

use super::emit::result_of;
use crate::canvas::Canvas;
use serde_json::{Map, Value};

pub(in crate::canvas) struct FreezeCtx {
    pub(in crate::canvas) root: Option<String>,
    /// The group this node's result belongs to, and its index there.
    pub(in crate::canvas) group: Option<(String, Option<usize>)>,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn id_of(options: &mut Map<String, Value>) -> String {
    match options.get("task_id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => {
            let id = new_id();
            options.insert("task_id".into(), Value::String(id.clone()));
            id
        }
    }
}

/// Gives every node an id (as Celery's `freeze`): tasks their task id,
/// groups and chords their group id; group members their group id and index.
pub(in crate::canvas) fn freeze(canvas: &mut Canvas, ctx: &FreezeCtx) {
    match canvas {
        Canvas::Task(t) => {
            let options = &mut t.sig.options;
            id_of(options);
            if let Some(root) = &ctx.root {
                options.insert("root_id".into(), Value::String(root.clone()));
            }
            if let Some((gid, index)) = &ctx.group {
                options.insert("group_id".into(), Value::String(gid.clone()));
                if let Some(i) = index {
                    options.insert("group_index".into(), Value::from(*i));
                }
            }
        }
        Canvas::Chain(c) => {
            let n = c.tasks.len();
            for (j, step) in c.tasks.iter_mut().enumerate() {
                let group = if j + 1 == n { ctx.group.clone() } else { None };
                let root = ctx.root.clone();
                freeze(step, &FreezeCtx { root, group });
            }
            // A chain's id is its last step's (Celery's).
            if let Some(last) = c.tasks.last() {
                let id = Value::String(result_of(last).id().to_owned());
                c.options.insert("task_id".into(), id);
            }
        }
        Canvas::Group(g) => {
            let gid = id_of(&mut g.options);
            freeze_members(&mut g.tasks, &gid, ctx);
        }
        Canvas::Chord(c) => {
            let gid = id_of(&mut c.header.options);
            c.options
                .insert("task_id".into(), Value::String(gid.clone()));
            freeze_members(&mut c.header.tasks, &gid, ctx);
            let group = ctx.group.clone().or(Some((gid, None)));
            let root = ctx.root.clone();
            freeze(&mut c.body, &FreezeCtx { root, group });
        }
    }
}

fn freeze_members(members: &mut [Canvas], gid: &str, ctx: &FreezeCtx) {
    for (i, member) in members.iter_mut().enumerate() {
        let member_ctx = FreezeCtx {
            root: ctx.root.clone(),
            group: Some((gid.to_owned(), Some(i))),
        };
        freeze(member, &member_ctx);
    }
}
