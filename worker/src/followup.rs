//! What runs after a task, as Celery's embed says: `callbacks` (link) and
//! the next `chain` step on success, `errbacks` (link_error) on failure.
//! Each is a signature that may itself be a workflow (a chain, group or
//! chord); it is planned by the canvas module ([`apply_after`]), so it
//! sends what a client would, its chords recorded first. A callback or
//! chain step that can never be sent (it does not fit, or cannot be
//! encoded) is handed back as [`Unsent`], to be recorded FAILURE with the
//! rest of its chain not run and its chord told
//! ([`chord::unsent`](crate::chord::unsent)); an errback that cannot, or
//! a follow-up the broker refuses for good (a queue declared with other
//! arguments), is logged and left. One the broker or the database did not
//! take for now makes [`on_success`] and [`on_failure`] say so, and the
//! task's message goes back to its queue to run again (after
//! [`pause_before_return`]), as when a retry cannot be published: a chain
//! never stops silently because the broker blinked.

use crate::publish::{PublishError, Publisher};
use celeriac::canvas::{After, Applied, CanvasError, apply_after, planned_tasks};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::chord::ChordError;
use celeriac_common::broker::BrokerError;
use celeriac_common::protocol::{Signature, TaskMessage};
use serde_json::Value;

/// Why a follow-up was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowupError {
    /// The signature is not a workflow that can be sent.
    #[error(transparent)]
    Plan(#[from] CanvasError),
    /// A chord in it could not be recorded.
    #[error("cannot record its chord: {0}")]
    Chord(#[from] ChordError),
    /// It holds a chord, and results are off.
    #[error("it holds a chord, which needs a result backend")]
    NoBackend,
    /// The broker did not confirm a message.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// How long a message whose follow-ups were not taken waits before it goes
/// back to its queue: 1 s after its first delivery, doubling with each
/// earlier one (at most 32 s), so the default five deliveries ride out
/// about half a minute of a broker refusing (a full queue, an alarm, a
/// failover) before the message is dead-lettered as poison.
pub(crate) fn pause_before_return(earlier_deliveries: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1 << earlier_deliveries.min(5))
}

impl FollowupError {
    /// Whether the message itself cannot be sent, now or later (it cannot
    /// be encoded or delayed, or names what AMQP cannot carry), as opposed
    /// to a broker or database that says no, for now or for as long as
    /// someone leaves a queue declared with other arguments.
    pub(crate) fn is_unsendable(&self) -> bool {
        match self {
            FollowupError::Plan(_) | FollowupError::NoBackend => true,
            FollowupError::Publish(PublishError::Encode(_) | PublishError::Delay(_)) => true,
            FollowupError::Publish(PublishError::Declare(e)) => {
                matches!(e, BrokerError::NameTooLong { .. })
            }
            _ => false,
        }
    }

    /// Whether sending again later may succeed.
    fn is_transient(&self) -> bool {
        match self {
            FollowupError::Publish(e) => e.is_transient(),
            FollowupError::Chord(ChordError::Backend(e)) => !e.is_refused(),
            _ => false,
        }
    }
}

/// Publishes what applying a signature sends (through the session's one
/// publish route), its chords recorded first; `default_queue` for messages
/// whose signature names none.
pub(crate) async fn publish(
    publisher: &Publisher,
    backend: Option<&ResultBackend>,
    applied: &Applied,
    default_queue: &str,
    what: &str,
) -> Result<(), FollowupError> {
    if applied.messages.len() > 1 || !applied.chords.is_empty() {
        // All or none: nothing is sent, or recorded, before every message
        // is known to be sendable.
        for (msg, queue) in &applied.messages {
            publisher.check(msg, queue.as_deref().unwrap_or(default_queue))?;
        }
    }
    if !applied.chords.is_empty() {
        let backend = backend.ok_or(FollowupError::NoBackend)?;
        for chord in &applied.chords {
            crate::recorder::bounded(backend, backend.create_chord(chord)).await?;
        }
    }
    for (msg, queue) in &applied.messages {
        publisher
            .send(msg, queue.as_deref().unwrap_or(default_queue))
            .await?;
        tracing::info!(next.id = %msg.id, next.name = %msg.task, "{what} sent");
    }
    Ok(())
}

/// The root id of `msg`'s workflow.
pub(crate) fn root_of(msg: &TaskMessage) -> &str {
    msg.root_id.as_deref().unwrap_or(&msg.id)
}

/// A callback or chain step that can never be sent.
#[derive(Debug)]
pub(crate) struct Unsent {
    /// What could not be sent.
    pub(crate) sig: Signature,
    /// The steps of its chain after it, as Celery stores them (reversed).
    pub(crate) rest: Vec<Signature>,
    /// Why (the planning or encoding error).
    pub(crate) error: String,
}

/// What applying one follow-up came to.
enum Sent {
    /// Sent, or refused for good by the broker (logged).
    Done,
    /// Not taken by the broker or the database for now.
    NotTaken,
    /// It can never be sent.
    Unsent(Unsent),
}

/// Applies `sig` after `parent` with `first_arg` prepended (unless
/// immutable) and `rest` of its chain after it; a failure is logged.
async fn apply(
    publisher: &Publisher,
    backend: Option<&ResultBackend>,
    sig: &Signature,
    (parent, first_arg, rest): ((&str, &str), &Value, Vec<Signature>),
    default_queue: &str,
    what: &str,
) -> Sent {
    let (parent_id, root_id) = parent;
    let after = After {
        result: Some(first_arg),
        parent_id,
        root_id,
    };
    let sent = match apply_after(sig.clone(), after, rest.clone()) {
        Ok(applied) => publish(publisher, backend, &applied, default_queue, what).await,
        Err(e) => Err(e.into()),
    };
    match sent {
        Ok(()) => Sent::Done,
        Err(e) if e.is_transient() => {
            tracing::warn!(
                next.name = %sig.task,
                error = %e,
                "{what} not taken by the broker or the database"
            );
            Sent::NotTaken
        }
        Err(e) => {
            tracing::error!(next.name = %sig.task, error = %e, "{what} could not be sent");
            if e.is_unsendable() {
                Sent::Unsent(Unsent {
                    sig: sig.clone(),
                    rest,
                    error: e.to_string(),
                })
            } else {
                Sent::Done
            }
        }
    }
}

/// Sends the callbacks and the next chain step with the task's result:
/// those that can never be sent, or `None` if one was not taken and may be
/// on a later try. Their sending is boxed: most tasks have none, and this
/// future is part of every delivery's task.
pub(crate) async fn on_success(
    publisher: &Publisher,
    backend: Option<&ResultBackend>,
    parent: &TaskMessage,
    result: &Value,
    default_queue: &str,
) -> Option<Vec<Unsent>> {
    let embed = &parent.embed;
    let none = |v: &Option<Vec<Signature>>| v.as_ref().is_none_or(Vec::is_empty);
    if none(&embed.callbacks) && none(&embed.chain) {
        return Some(Vec::new());
    }
    Box::pin(send_on_success(
        publisher,
        backend,
        parent,
        result,
        default_queue,
    ))
    .await
}

/// What `parent` sends when it succeeds, in order: its callbacks, then the
/// next step of its chain, each with the steps of its chain after it (as
/// Celery stores them: reversed) and what it is.
pub(crate) fn on_success_steps(
    parent: &TaskMessage,
) -> Vec<(&Signature, Vec<Signature>, &'static str)> {
    let mut steps: Vec<(&Signature, Vec<Signature>, &'static str)> = (parent.embed.callbacks)
        .iter()
        .flatten()
        .map(|sig| (sig, Vec::new(), "callback"))
        .collect();
    if let Some((next, rest)) = parent.embed.chain.as_deref().and_then(<[_]>::split_last) {
        steps.push((next, rest.to_vec(), "chain step"));
    }
    steps
}

/// Stops at the first follow-up not taken: the task runs again and sends
/// them all again.
async fn send_on_success(
    publisher: &Publisher,
    backend: Option<&ResultBackend>,
    parent: &TaskMessage,
    result: &Value,
    default_queue: &str,
) -> Option<Vec<Unsent>> {
    let ids = (parent.id.as_str(), root_of(parent));
    let mut unsent = Vec::new();
    for (sig, rest, what) in on_success_steps(parent) {
        match apply(
            publisher,
            backend,
            sig,
            (ids, result, rest),
            default_queue,
            what,
        )
        .await
        {
            Sent::Done => {}
            Sent::NotTaken => return None,
            Sent::Unsent(u) => {
                if !unsent_errbacks(publisher, parent, &u, default_queue).await {
                    return None;
                }
                unsent.push(u);
            }
        }
    }
    Some(unsent)
}

/// Calls the errbacks (`link_error`) of each task of `unsent` that has an
/// id, with that id, as [`on_failure`] calls a failed task's; `false` if
/// one was not taken and may be on a later try.
async fn unsent_errbacks(
    publisher: &Publisher,
    parent: &TaskMessage,
    unsent: &Unsent,
    default_queue: &str,
) -> bool {
    for task in planned_tasks(&unsent.sig) {
        let Some(id) = task.options.get("task_id").and_then(Value::as_str) else {
            continue;
        };
        let errbacks = match task.options.get("link_error") {
            None => Ok(Vec::new()),
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map(|s| vec![s]),
            Some(v) => serde_json::from_value::<Vec<Signature>>(v.clone()),
        };
        let errbacks = errbacks.unwrap_or_else(|e| {
            tracing::error!(task_id = id, error = %e, "errbacks that are not signatures, not sent");
            Vec::new()
        });
        let failed = Value::String(id.to_owned());
        for sig in &errbacks {
            let call = ((id, root_of(parent)), &failed, Vec::new());
            let sent = apply(publisher, None, sig, call, default_queue, "errback").await;
            if let Sent::NotTaken = sent {
                return false;
            }
        }
    }
    true
}

/// Sends the errbacks, each called with the failed task's id (Celery's
/// form for errbacks that run in another process); `false` if one was not
/// taken and may be on a later try. Errbacks that hold a chord are not
/// recorded (no backend here): their chords fail.
pub(crate) async fn on_failure(
    publisher: &Publisher,
    parent: &TaskMessage,
    default_queue: &str,
) -> bool {
    let id = Value::String(parent.id.clone());
    for sig in parent.embed.errbacks.iter().flatten() {
        let call = ((parent.id.as_str(), root_of(parent)), &id, Vec::new());
        if let Sent::NotTaken = apply(publisher, None, sig, call, default_queue, "errback").await {
            return false;
        }
    }
    true
}
