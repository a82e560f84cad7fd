//! From a canvas to the messages Celery would publish for it, without a
//! broker: check, normalise (as Celery's `_chain.prepare_steps` does),
//! freeze (an id for every node, client-side), then emit.

use super::send::CanvasError;
use super::{Canvas, Chain, Chord, Group};
use celeriac_common::Signature;
use celeriac_common::backend::chord::NewChord;
use celeriac_common::protocol::{TaskMessage, parse_time};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

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

pub(super) fn check(canvas: &Canvas, depth: usize) -> Result<(), CanvasError> {
    if depth > MAX_DEPTH {
        return Err(CanvasError::TooDeep { limit: MAX_DEPTH });
    }
    match canvas {
        Canvas::Task(t) => match &t.error {
            Some(e) => Err(CanvasError::Args {
                task: t.sig.task.clone(),
                reason: e.clone(),
            }),
            None => Ok(()),
        },
        Canvas::Chain(c) if c.tasks.is_empty() => Err(CanvasError::Empty("chain")),
        Canvas::Group(g) if g.tasks.is_empty() => Err(CanvasError::Empty("group")),
        Canvas::Chord(c) if c.header.tasks.is_empty() => Err(CanvasError::Empty("chord header")),
        Canvas::Chain(Chain { tasks, .. }) | Canvas::Group(Group { tasks, .. }) => {
            tasks.iter().try_for_each(|t| check(t, depth + 1))
        }
        Canvas::Chord(c) => {
            c.header
                .tasks
                .iter()
                .try_for_each(|t| check(t, depth + 1))?;
            check(&c.body, depth + 1)
        }
    }
}

fn errbacks(options: &Map<String, Value>) -> Vec<Value> {
    match options.get("link_error") {
        Some(Value::Array(list)) => list.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

/// Adds errbacks to every task a failure of which should call them.
fn add_errbacks(canvas: &mut Canvas, extra: &[Value]) {
    if extra.is_empty() {
        return;
    }
    match canvas {
        Canvas::Task(t) => {
            let mut list = errbacks(&t.sig.options);
            list.extend(extra.iter().cloned());
            t.sig
                .options
                .insert("link_error".into(), Value::Array(list));
        }
        Canvas::Chain(Chain { tasks, .. }) | Canvas::Group(Group { tasks, .. }) => {
            tasks.iter_mut().for_each(|t| add_errbacks(t, extra));
        }
        Canvas::Chord(c) => add_errbacks(&mut c.body, extra),
    }
}

/// Celery's normalisation: nested groups are flattened, nested chains
/// spliced; in a chain, a group followed by more steps becomes a chord
/// whose body is the rest, and a chord followed by more steps takes them
/// into its body; a chain of one step is that step. `link_error` of a
/// chain, group or chord goes to the tasks it concerns.
pub(super) fn normalize(canvas: Canvas) -> Result<Canvas, CanvasError> {
    Ok(match canvas {
        Canvas::Task(t) => Canvas::Task(t),
        Canvas::Group(g) => Canvas::Group(normalize_group(g)?),
        Canvas::Chord(mut c) => {
            let extra = errbacks(&c.options);
            c.options.remove("link_error");
            let mut body = normalize(*c.body)?;
            // A chord's `task_id` is its callback's (Celery's).
            if let Some(id) = c.options.remove("task_id") {
                set_on_last_step(&mut body, "task_id", id);
            }
            add_errbacks(&mut body, &extra);
            Canvas::Chord(Chord {
                header: normalize_group(c.header)?,
                body: Box::new(body),
                options: c.options,
            })
        }
        Canvas::Chain(c) => normalize_chain(c)?,
    })
}

fn normalize_group(g: Group) -> Result<Group, CanvasError> {
    let extra = errbacks(&g.options);
    let mut options = g.options;
    options.remove("link_error");
    let mut tasks = Vec::with_capacity(g.tasks.len());
    for t in g.tasks {
        match normalize(t)? {
            Canvas::Group(inner) => tasks.extend(inner.tasks),
            mut other => {
                add_errbacks(&mut other, &extra);
                tasks.push(other);
            }
        }
    }
    if tasks.is_empty() {
        return Err(CanvasError::Empty("group"));
    }
    Ok(Group { tasks, options })
}

fn normalize_chain(c: Chain) -> Result<Canvas, CanvasError> {
    let extra = errbacks(&c.options);
    let mut options = c.options;
    options.remove("link_error");
    // Splice nested chains (iteratively: a chain of chains of chains).
    let mut steps = Vec::with_capacity(c.tasks.len());
    let mut pending: Vec<Canvas> = c.tasks.into_iter().rev().collect();
    while let Some(step) = pending.pop() {
        match step {
            Canvas::Chain(mut inner) => {
                let inner_extra = errbacks(&inner.options);
                if let (Some(id), Some(last)) =
                    (inner.options.remove("task_id"), inner.tasks.last_mut())
                {
                    last.options_mut().insert("task_id".into(), id);
                }
                for mut t in inner.tasks.into_iter().rev() {
                    add_errbacks(&mut t, &inner_extra);
                    pending.push(t);
                }
            }
            other => steps.push(other),
        }
    }
    if steps.len() > MAX_CHAIN_STEPS {
        return Err(CanvasError::ChainTooLong {
            steps: steps.len(),
            limit: MAX_CHAIN_STEPS,
        });
    }
    let mut out: Vec<Canvas> = Vec::with_capacity(steps.len());
    let mut iter = steps.into_iter();
    while let Some(step) = iter.next() {
        let rest: Vec<Canvas> = iter.as_slice().to_vec();
        let folds = !rest.is_empty() && matches!(step, Canvas::Group(_) | Canvas::Chord(_));
        if !folds {
            out.push(normalize(step)?);
            continue;
        }
        // The rest of the chain runs after this step: it becomes (part of)
        // a chord's body.
        let rest = Canvas::Chain(Chain {
            tasks: rest,
            options: Map::new(),
        });
        let folded = match step {
            Canvas::Group(g) => Canvas::Chord(Chord {
                header: g,
                body: Box::new(rest),
                options: Map::new(),
            }),
            Canvas::Chord(mut c) => {
                let body = std::mem::replace(&mut *c.body, rest);
                if let Canvas::Chain(rest) = &mut *c.body {
                    rest.tasks.insert(0, body);
                }
                Canvas::Chord(c)
            }
            other => other,
        };
        out.push(normalize(folded)?);
        break;
    }
    let mut chain = if out.len() == 1 {
        out.pop().unwrap_or(Canvas::Chain(Chain::default()))
    } else {
        Canvas::Chain(Chain {
            tasks: out,
            options: Map::new(),
        })
    };
    add_errbacks(&mut chain, &extra);
    // A chain's own options (its `task_id` names the last step) go to its last step.
    if let Some(id) = options.remove("task_id") {
        set_on_last_step(&mut chain, "task_id", id);
    }
    Ok(chain)
}

/// Sets `key` on a chain's last step (on `canvas` itself if it is no chain).
fn set_on_last_step(canvas: &mut Canvas, key: &str, value: Value) {
    match canvas {
        Canvas::Chain(c) if !c.tasks.is_empty() => {
            if let Some(last) = c.tasks.last_mut() {
                last.options_mut().insert(key.to_owned(), value);
            }
        }
        other => {
            other.options_mut().insert(key.to_owned(), value);
        }
    }
}

pub(super) struct FreezeCtx {
    pub(super) root: Option<String>,
    /// The group this node's result belongs to, and its index there.
    pub(super) group: Option<(String, Option<usize>)>,
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
pub(super) fn freeze(canvas: &mut Canvas, ctx: &FreezeCtx) {
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

/// How many results a chord's header waits for (Celery's `_descend`): a
/// group its members, a chain its last step, a chord its body.
pub(crate) fn chord_size(canvas: &Canvas) -> u64 {
    match canvas {
        Canvas::Task(_) => 1,
        Canvas::Group(g) => g.tasks.iter().map(chord_size).sum(),
        Canvas::Chain(c) => c.tasks.last().map_or(0, chord_size),
        Canvas::Chord(c) => chord_size(&c.body),
    }
}

/// The id the first message of a (frozen) canvas is sent with.
fn first_id(canvas: &Canvas) -> String {
    let get = |o: &Map<String, Value>| {
        o.get("task_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match canvas {
        Canvas::Task(t) => get(&t.sig.options),
        Canvas::Chain(c) => c.tasks.first().map(first_id).unwrap_or_default(),
        Canvas::Group(g) => get(&g.options),
        Canvas::Chord(c) => get(&c.header.options),
    }
}

/// The chord body signature as header members carry it: with `chord_size`
/// (which Celery's workers read from it, when present).
fn body_signature(c: &Chord) -> Signature {
    let mut body = c.body.to_signature();
    body.extra.insert(
        "chord_size".into(),
        Value::from(chord_size(&Canvas::Group(c.header.clone()))),
    );
    body
}

/// Every chord of the frozen tree, the outermost first: each is recorded
/// before any message is published, so a worker never meets a member of
/// an unrecorded chord. `outer` is the callback of the chord whose count
/// this node's result goes to, if any (its body carries it on).
pub(super) fn collect_chords(
    canvas: &Canvas,
    outer: Option<&Signature>,
    out: &mut Vec<NewChord>,
) -> Result<(), CanvasError> {
    match canvas {
        Canvas::Task(_) => Ok(()),
        Canvas::Group(g) => g
            .tasks
            .iter()
            .try_for_each(|t| collect_chords(t, outer, out)),
        Canvas::Chain(c) => {
            let n = c.tasks.len();
            c.tasks.iter().enumerate().try_for_each(|(j, t)| {
                collect_chords(t, if j + 1 == n { outer } else { None }, out)
            })
        }
        Canvas::Chord(c) => {
            let mut c = c.clone();
            if let Some(outer) = outer {
                set_chord_option(&mut c.body, outer);
            }
            let body = body_signature(&c);
            let header = Canvas::Group(c.header.clone());
            out.push(NewChord {
                group_id: first_id(&header),
                size: chord_size(&header),
                callback: serde_json::to_value(&body)
                    .map_err(|e| CanvasError::Encode(e.to_string()))?,
                callback_id: first_id(&c.body),
            });
            c.header
                .tasks
                .iter()
                .try_for_each(|t| collect_chords(t, Some(&body), out))?;
            collect_chords(&c.body, outer, out)
        }
    }
}

#[derive(Default, Clone)]
pub(super) struct EmitCtx {
    pub(super) root: Option<String>,
    pub(super) chord: Option<Signature>,
    pub(super) chain: Vec<Signature>,
}

/// Puts `body` (a chord's callback) on the tasks whose results the chord
/// counts, as a signature option the worker carries into their messages.
fn set_chord_option(canvas: &mut Canvas, body: &Signature) {
    match canvas {
        Canvas::Task(t) => {
            let v = serde_json::to_value(body).unwrap_or(Value::Null);
            t.sig.options.insert("chord".into(), v);
        }
        Canvas::Group(g) => g.tasks.iter_mut().for_each(|t| set_chord_option(t, body)),
        Canvas::Chain(c) => {
            if let Some(last) = c.tasks.last_mut() {
                set_chord_option(last, body);
            }
        }
        Canvas::Chord(c) => set_chord_option(&mut c.body, body),
    }
}

/// The messages a frozen, normalised canvas sends now, and its result.
pub(super) fn emit(
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
fn result_of(canvas: &Canvas) -> ResultNode {
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

/// The message for one (frozen) task signature, options applied as
/// Celery's `apply_async` applies them; the queue it names, if any.
pub(crate) fn message(sig: &Signature) -> Result<(TaskMessage, Option<String>), CanvasError> {
    let opt = |k: &str| sig.options.get(k).filter(|v| !v.is_null());
    let bad = |name: &str, v: &Value| CanvasError::BadOption {
        task: sig.task.clone(),
        name: name.to_owned(),
        value: v.to_string(),
    };
    let mut msg = TaskMessage::new(sig.task.clone(), sig.args.clone(), sig.kwargs.clone());
    if let Some(v) = opt("task_id") {
        let id = v.as_str().ok_or_else(|| bad("task_id", v))?;
        celeriac_common::protocol::check_task_id(id).map_err(|_| bad("task_id", v))?;
        msg = msg.with_id(id);
    }
    let text = |k: &str| -> Result<Option<String>, CanvasError> {
        opt(k)
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad(k, v)))
            .transpose()
    };
    msg.group = text("group_id")?;
    msg.group_index = opt("group_index")
        .map(|v| v.as_i64().ok_or_else(|| bad("group_index", v)))
        .transpose()?;
    if let Some(root) = text("root_id")? {
        msg.root_id = Some(root);
    }
    msg.parent_id = text("parent_id")?;
    msg.priority = opt("priority")
        .map(|v| {
            v.as_u64()
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| bad("priority", v))
        })
        .transpose()?;
    let now = Utc::now();
    let instant = |k: &str| -> Result<Option<DateTime<Utc>>, CanvasError> {
        match opt(k) {
            None => Ok(None),
            Some(Value::String(t)) => parse_time(t)
                .map(|t| Some(t.with_timezone(&Utc)))
                .ok_or_else(|| bad(k, &Value::String(t.clone()))),
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .and_then(|s| chrono::Duration::try_milliseconds((s * 1000.0) as i64))
                .map(|d| Some(now + d))
                .ok_or_else(|| bad(k, v)),
        }
    };
    let eta = instant("eta")?;
    let countdown = match opt("countdown") {
        Some(v @ Value::String(_)) => return Err(bad("countdown", v)),
        _ => instant("countdown")?,
    };
    msg.eta = eta.or(countdown).map(|t| t.fixed_offset());
    msg.expires = instant("expires")?.map(|t| t.fixed_offset());
    let limit = |k: &str| -> Result<Option<f64>, CanvasError> {
        opt(k)
            .map(|v| {
                v.as_f64()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| bad(k, v))
            })
            .transpose()
    };
    msg.timelimit = (limit("time_limit")?, limit("soft_time_limit")?);
    msg.ignore_result = opt("ignore_result")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let sigs = |k: &str| -> Result<Option<Vec<Signature>>, CanvasError> {
        match opt(k) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
                .map(|s| Some(vec![s]))
                .map_err(|_| bad(k, v)),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| bad(k, v)),
        }
    };
    msg.embed.callbacks = sigs("link")?;
    msg.embed.errbacks = sigs("link_error")?;
    msg.embed.chord = match opt("chord") {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|_| bad("chord", v))?),
        None => None,
    };
    let queue = match text("queue")? {
        Some(q) => Some(q),
        None => text("routing_key")?,
    };
    Ok((msg, queue))
}
