//! Acting on what was decided for a delivery: its single ack (after its
//! outcome is recorded), requeue, give-back or dead-letter.

use crate::chord::{self, Later};
use crate::claims::ClaimGuard;
use crate::context::TaskFailure;
use crate::disposition::{End, Stage};
use crate::followup::Unsent;
use crate::metrics::Tally;
use crate::publish::Publisher;
use crate::recorder::{self, AckWindow, Finished};
use crate::shared::Shared;
use celeriac::canvas::planned_tasks;
use celeriac_common::TaskState;
use celeriac_common::backend::{BackendError, ResultBackend, TaskError, TaskOutcome};
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use futures_util::future::Either;
use lapin::message::Delivery;
use std::sync::Arc;
use tokio::sync::mpsc::error::TrySendError;

mod broker;
mod rpc;

pub(crate) use broker::give_back;

/// What handling a delivery needs besides the delivery itself.
pub(crate) struct Handling {
    pub(crate) shared: Arc<Shared>,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) queue: String,
    pub(crate) window: Arc<AckWindow>,
}

impl Handling {
    /// Carries out how a delivery ends without running.
    pub(crate) async fn carry_out(&self, end: End, msg: &TaskMessage, delivery: Delivery) {
        let record = |state, kind, message: String| {
            let mut o = self.outcome(msg, state);
            o.error = Some(task_error(TaskFailure::new(kind, message)));
            Some(o)
        };
        let tally = || Tally::of(self.shared.metrics.as_ref(), &msg.task, &self.queue);
        let outcome = match end {
            End::Revoked(stage) => {
                tally().revoked();
                tracing::info!("{}", revoked_log(stage));
                self.shared.events.revoked(&msg.id, false, false);
                let before = "revoked before it ran".to_owned();
                record(TaskState::Revoked, "TaskRevoked", before)
            }
            End::Expired => {
                tally().revoked();
                tracing::info!("expired before it ran: REVOKED");
                self.shared.events.revoked(&msg.id, false, true);
                let at = msg.expires.map(|e| e.to_rfc3339()).unwrap_or_default();
                let message = format!("task expired at {at}");
                record(TaskState::Revoked, "TaskExpired", message)
            }
            End::UnknownTask => {
                tally().failed("NotRegistered");
                tracing::warn!("task not registered: {}", msg.task);
                self.shared
                    .events
                    .failed(&msg.id, "NotRegistered", &msg.task, false);
                let message = format!("task not registered: {}", msg.task);
                record(TaskState::Failure, "NotRegistered", message)
            }
            End::AlreadyDone => {
                tracing::info!("already finished or revoked; not running it");
                return Box::pin(self.already_done(msg, delivery)).await;
            }
            End::Redelay { wait, routing_key } => {
                return Box::pin(self.redelay(msg, delivery, wait, &routing_key)).await;
            }
            End::CountRedelivery { earlier } => {
                return Box::pin(self.count_redelivery(msg, delivery, earlier)).await;
            }
            End::Poison { earlier } => {
                tally().rejected();
                let reason =
                    format!("delivered {earlier} times without finishing (poison message)");
                self.shared.events.rejected(&msg.id, false);
                let mut o = record(TaskState::Failure, "PoisonMessage", reason.clone());
                let mut later = None;
                if let Some(o) = &mut o {
                    o.done_at = Some(Utc::now());
                    later = self.later(msg, o.state, (o.error.as_ref(), None), &[]);
                }
                return Box::pin(self.dead_letter_then(delivery, &reason, o, later)).await;
            }
            End::DeadLetter(reason) => {
                tally().rejected();
                return Box::pin(self.dead_letter(delivery, &reason, None)).await;
            }
        };
        self.finish(msg, delivery, outcome, &[], None).await
    }

    /// The outcome of `msg` in `state`, with what every outcome carries.
    pub(crate) fn outcome(&self, msg: &TaskMessage, state: TaskState) -> TaskOutcome {
        let config = &self.shared.config;
        let mut o = TaskOutcome::new(msg.id.clone(), msg.task.clone(), state);
        o.worker = Some(config.hostname.clone());
        o.worker_id = Some(self.shared.worker_id.clone());
        o.retries = msg.retries;
        o.queue = Some(self.queue.clone());
        o.parent_id = msg.parent_id.clone();
        o.root_id = msg.root_id.clone();
        o.group_id = msg.group.clone();
        o.group_index = msg.group_index.and_then(|i| u32::try_from(i).ok());
        if config.store_args {
            o.args = Some(serde_json::Value::Array(msg.args.clone()));
            o.kwargs = Some(serde_json::Value::Object(msg.kwargs.clone()));
        }
        o
    }

    /// Hands the delivery to the recorder: store the outcome (unless results
    /// are off or ignored), then ack. Like [`Handling::record`], it hands it
    /// over when called.
    /// `unsent`: the task's callbacks and next chain step that can never be
    /// sent, recorded FAILURE after it. `claim`: the claim on its row, ended
    /// once the outcome is stored.
    pub(crate) fn finish<'a>(
        &'a self,
        msg: &TaskMessage,
        delivery: Delivery,
        outcome: Option<TaskOutcome>,
        unsent: &[Unsent],
        claim: Option<ClaimGuard>,
    ) -> impl Future<Output = ()> + Send + use<'a> {
        let shared = &self.shared;
        let later = outcome.as_ref().and_then(|o| {
            let outcome = (o.error.as_ref(), o.result.as_ref());
            self.later(msg, o.state, outcome, unsent)
        });
        let reply = outcome.as_ref().and_then(|o| self.rpc_reply(msg, o));
        let outcome = outcome.filter(|_| shared.backend.is_some() && !msg.ignore_result);
        let done = Finished {
            outcome,
            later,
            tag: delivery.delivery_tag,
            acker: delivery.acker,
            window: self.window.clone(),
            task_id: msg.id.clone(),
            claim,
        };
        match reply {
            None => Either::Left(self.record(done)),
            // The reply goes out before the ack (rare: boxed).
            Some(reply) => Either::Right(Box::pin(async move {
                self.send_reply(reply).await;
                self.record(done).await;
            })),
        }
    }

    /// What `msg` ending in `state` leaves to do once stored: its report
    /// to its chord, the rest of its chain marked not run, and the
    /// follow-ups it could not send recorded (see [`chord`](crate::chord));
    /// `None` for most tasks, and without a result backend.
    fn later(
        &self,
        msg: &TaskMessage,
        state: TaskState,
        outcome: (Option<&TaskError>, Option<&serde_json::Value>),
        unsent: &[Unsent],
    ) -> Option<Box<Later>> {
        if self.shared.backend.is_none()
            || (msg.embed.chord.is_none() && msg.embed.chain.is_none() && unsent.is_empty())
        {
            return None;
        }
        let (mut reports, mut aborted) = chord::consequences(msg, state, outcome);
        for u in unsent {
            let (r, a) = chord::unsent(msg, u);
            reports.extend(r);
            aborted.extend(a);
        }
        if reports.is_empty() && aborted.is_empty() {
            return None;
        }
        Some(Box::new(Later {
            reports,
            aborted,
            publisher: self.publisher.clone(),
            queue: self.queue.clone(),
        }))
    }

    /// Acks a delivery whose id already has a final outcome. A chord
    /// member (or a chain step that failed, or one whose next step could
    /// not be sent) is reported again from its stored outcome: its worker
    /// may have died after storing it and before reporting it.
    async fn already_done(&self, msg: &TaskMessage, delivery: Delivery) {
        let mut later = None;
        if let Some(backend) = &self.shared.backend
            && (msg.embed.chord.is_some()
                || msg.embed.chain.is_some()
                || msg.embed.callbacks.is_some())
        {
            let stored = async {
                let Some(r) = recorder::bounded(backend, backend.get(&msg.id)).await? else {
                    return Ok(None);
                };
                let unsent = if r.state == TaskState::Success {
                    unsent_before(backend, msg).await?
                } else {
                    Vec::new()
                };
                Ok::<_, BackendError>(Some((r, unsent)))
            };
            match stored.await {
                Ok(Some((r, unsent))) if r.state.is_ready() => {
                    let outcome = (r.error.as_ref(), r.result.as_ref());
                    later = self.later(msg, r.state, outcome, &unsent);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot read the stored outcome; returning the message to its queue"
                    );
                    return self.requeue(delivery).await;
                }
            }
        }
        let done = Finished {
            outcome: None,
            later,
            tag: delivery.delivery_tag,
            acker: delivery.acker,
            window: self.window.clone(),
            task_id: msg.id.clone(),
            claim: None,
        };
        self.record(done).await;
    }

    /// Hands a finished delivery to the recorder, which stores its outcome
    /// and then acks it. It is handed over when this is called: the
    /// recorder's queue has room for twice the prefetch window (and 16
    /// more), so the returned future waits for room only rarely (the result
    /// backend down, or the windows of several queues finishing at once).
    /// That wait is boxed, so its kilobyte is not part of every delivery's
    /// task.
    fn record(&self, done: Finished) -> impl Future<Output = ()> + Send + '_ {
        let recorder = &self.shared.recorder;
        let waiting = match recorder.try_send(done) {
            Ok(()) => None,
            Err(TrySendError::Full(done)) => Some(Box::pin(recorder.send(done))),
            Err(TrySendError::Closed(_)) => {
                tracing::warn!("recorder stopped; the message will be redelivered");
                None
            }
        };
        async move {
            if let Some(send) = waiting
                && send.await.is_err()
            {
                tracing::warn!("recorder stopped; the message will be redelivered");
            }
        }
    }
}

/// What is logged for a delivery revoked at `stage`.
fn revoked_log(stage: Stage) -> &'static str {
    match stage {
        Stage::Received => "revoked: not running it",
        Stage::Due => "revoked while it waited: not running it",
        Stage::Admitted => "revoked while waiting: not running it",
    }
}

/// A task's failure as it is recorded.
pub(crate) fn task_error(f: TaskFailure) -> TaskError {
    let traceback = f.traceback();
    TaskError {
        kind: f.kind,
        message: f.message,
        traceback,
    }
}

/// The callbacks and next chain step of `msg` that an earlier delivery
/// found could never be sent (recorded FAILURE, `SendError`), so that a
/// redelivered copy settles what they bring again; those whose tasks have
/// no ids (not frozen) were not recorded and are not looked up.
async fn unsent_before(
    backend: &ResultBackend,
    msg: &TaskMessage,
) -> Result<Vec<Unsent>, BackendError> {
    let mut unsent = Vec::new();
    for (sig, rest, _) in crate::followup::on_success_steps(msg) {
        // A group's or chord's first task stands for it: all its tasks were
        // recorded alike.
        let first = planned_tasks(sig).into_iter().next();
        let id = first.as_ref().and_then(|t| t.options.get("task_id"));
        let Some(id) = id.and_then(serde_json::Value::as_str) else {
            continue;
        };
        let Some(r) = recorder::bounded(backend, backend.get(id)).await? else {
            continue;
        };
        let reason = r.error.as_ref().and_then(chord::unsendable_reason);
        if let (TaskState::Failure, Some(reason)) = (r.state, reason) {
            unsent.push(Unsent {
                sig: sig.clone(),
                rest,
                error: reason.to_owned(),
            });
        }
    }
    Ok(unsent)
}
