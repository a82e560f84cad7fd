//! The chords of a frozen canvas: their sizes, body signatures and the
//! records the backend keeps for them.

use crate::canvas::send::CanvasError;
use crate::canvas::{Canvas, Chord};
use celeriac_common::Signature;
use celeriac_common::backend::chord::NewChord;
use serde_json::{Map, Value};

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
pub(super) fn first_id(canvas: &Canvas) -> String {
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
pub(super) fn body_signature(c: &Chord) -> Signature {
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
pub(in crate::canvas) fn collect_chords(
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

/// Puts `body` (a chord's callback) on the tasks whose results the chord
/// counts, as a signature option the worker carries into their messages.
pub(super) fn set_chord_option(canvas: &mut Canvas, body: &Signature) {
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
