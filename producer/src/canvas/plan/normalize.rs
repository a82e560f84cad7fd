//! Checking a canvas's size and depth, and normalising it as Celery's
//! `_chain.prepare_steps` does.

use super::{MAX_CHAIN_STEPS, MAX_DEPTH};
use crate::canvas::send::CanvasError;
use crate::canvas::{Canvas, Chain, Chord, Group};
use serde_json::{Map, Value};

pub(in crate::canvas) fn check(canvas: &Canvas, depth: usize) -> Result<(), CanvasError> {
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
pub(in crate::canvas) fn normalize(canvas: Canvas) -> Result<Canvas, CanvasError> {
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
