//! One delivery's way: decoded, decided at each stage ([`decide`]), held
//! for its eta, a slot and its rate limiter, run, and ended by
//! [`Handling`]: one ack (after its outcome is recorded), requeue,
//! give-back or dead-letter.

use crate::carry_out::{Handling, task_error};
use crate::claims::ClaimGuard;
use crate::context::TaskFailure;
use crate::disposition::{DeliveryFacts, Disposition, End, Stage, WorkerView, decide};
use crate::events;
use crate::execute;
use crate::followup::{self, Unsent};
use crate::inflight::Phase;
use crate::metrics::Tally;
use crate::progress;
use crate::recorder;
use crate::registry::Handler;
use celeriac_common::TaskState;
use celeriac_common::backend::TaskOutcome;
use celeriac_common::backend::workers::Claim;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use futures_util::future::Either;
use lapin::message::Delivery;
use std::time::Instant;
use tokio::sync::SemaphorePermit;
use tracing::Instrument;

/// The work for one delivery: decodes it, and returns a future that holds
/// only what the delivery's path needs while it waits (its rare paths are
/// boxed), because tokio copies a task's whole future when it spawns it
/// and again when it finishes.
pub(crate) fn handle(
    hand: Handling,
    delivery: Delivery,
) -> impl Future<Output = ()> + Send + 'static {
    let received = Utc::now();
    let decoded = TaskMessage::decode(
        &delivery.properties,
        &delivery.data,
        hand.shared.config.max_message_bytes,
    );
    let msg = match decoded {
        Ok(m) => m,
        Err(e) => {
            // Nothing to decide: it cannot be run, so it is dead-lettered.
            let reason = e.to_string();
            Tally::of(hand.shared.metrics.as_ref(), "", &hand.queue).rejected();
            return Either::Left(Box::pin(async move {
                hand.dead_letter(delivery, &reason, None).await;
            }));
        }
    };
    let span = tracing::info_span!(
        "task",
        task.id = %msg.id,
        task.name = %msg.display_name(),
        queue = %hand.queue,
        attempt = msg.retries
    );
    Either::Right(deliver(hand, msg, delivery, received).instrument(span))
}

/// Decides at each stage until the delivery ends or runs. A plain `async`
/// block, not an `async fn`: its captures are its only copy of the message
/// and the delivery (an `async fn` would hold its arguments twice).
fn deliver(
    hand: Handling,
    msg: TaskMessage,
    delivery: Delivery,
    received: chrono::DateTime<Utc>,
) -> impl Future<Output = ()> + Send + 'static {
    tracing::debug!(
        task.id = %msg.id,
        tag = delivery.delivery_tag,
        redelivered = delivery.redelivered,
        "received"
    );
    let mut facts = DeliveryFacts::of(&delivery, received);
    async move {
        let shared = &hand.shared;
        let tracked = shared
            .inflight
            .track(&msg, &hand.queue, delivery.redelivered);
        shared.events.received(&msg, &hand.queue);
        let tally = Tally::of(shared.metrics.as_ref(), &msg.task, &hand.queue);
        tally.received();
        let mut stage = Stage::Received;
        let mut permit = None;
        // Told once: this copy waits for another copy of its id.
        let mut waiting = false;
        // The claim on its row, if it took one: ended once it is settled.
        let mut claimed = None;
        // Its rate limiter is waited for once, not again after a wait for
        // another copy.
        let mut paced = false;
        loop {
            let view = WorkerView {
                revocations: &shared.revocations,
                registry: &shared.registry,
                max_deliveries: shared.config.max_deliveries,
                queue: &hand.queue,
                records: shared.backend.is_some(),
            };
            match decide(&msg, stage, &facts, &view) {
                Disposition::Run if stage == Stage::Admitted => break,
                Disposition::Run if stage == Stage::Received => stage = Stage::Due,
                Disposition::Run => match admit(&hand, &msg, !paced).await {
                    Some(p) => (permit, stage, paced) = (Some(p), Stage::Admitted, true),
                    None => return Box::pin(hand.give_back(delivery)).await,
                },
                Disposition::Hold(wait) => {
                    // Waiting for another copy to finish: without a slot.
                    (permit, facts.claim) = (None, None);
                    tracked.set(Phase::Scheduled);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {
                            tracked.set(Phase::Reserved);
                            stage = Stage::Due;
                        }
                        _ = hand.window.retired() => {
                            return Box::pin(hand.give_back(delivery)).await;
                        }
                    }
                }
                Disposition::CheckDone => {
                    facts.already_done = Some(Box::pin(already_done(&hand, &msg.id)).await);
                }
                Disposition::Claim => {
                    let found;
                    (found, claimed) = Box::pin(claim(&hand, &msg)).await;
                    if let Claim::Held(holder) = &found
                        && !waiting
                    {
                        waiting = true;
                        tracing::info!(
                            holder = %holder,
                            "another copy of this task id is running; waiting for it to finish"
                        );
                    }
                    facts.claim = Some(found);
                }
                Disposition::End(end) => {
                    drop(permit);
                    // Revoked after its claim: the row is not given back
                    // (no other copy should run; the REVOKED row ends it).
                    if let Some(claimed) = claimed.take() {
                        claimed.forget();
                    }
                    return Box::pin(hand.carry_out(end, &msg, delivery)).await;
                }
            }
        }
        let Some(handler) = shared.registry.get(&msg.task) else {
            // Decided at `Stage::Received`; the registry does not change.
            return Box::pin(hand.carry_out(End::UnknownTask, &msg, delivery)).await;
        };
        shared.task_started();
        // Counted when it starts, as Celery's `task_accepted`: once per
        // attempt (a retry is a new message), and a running task shows in
        // the heartbeat's `processed` with `active`.
        shared.inflight.processed(&msg.task);
        tracked.set(Phase::Active(events::now()));
        shared.events.started(&msg.id);
        tally.started(received, msg.eta);
        match run(&hand, &msg, handler, facts.earlier, permit, &tally).await {
            Some((outcome, unsent)) => {
                hand.finish(&msg, delivery, Some(outcome), &unsent, claimed)
                    .await;
            }
            None => {
                if let Some(claimed) = claimed {
                    Box::pin(claimed.give_back()).await;
                }
                Box::pin(hand.requeue(delivery)).await;
            }
        }
        shared.task_ended();
    }
}

/// Waits for the task's rate limiter (if `pace`) and a slot; `None` if the
/// session is retired meanwhile (the delivery then goes back to its queue).
async fn admit<'a>(
    hand: &'a Handling,
    msg: &TaskMessage,
    pace: bool,
) -> Option<SemaphorePermit<'a>> {
    if let Some(limiter) = hand.shared.registry.limiter(&msg.task).filter(|_| pace) {
        tokio::select! {
            _ = limiter.wait() => {}
            _ = hand.window.retired() => return None,
        }
    }
    tokio::select! {
        p = hand.shared.permits.acquire() => p.ok(),
        _ = hand.window.retired() => None,
    }
}

/// Runs the task holding `permit`, and says what to record, with the
/// callbacks and next chain step that can never be sent; `None` if its
/// retry, callbacks, next chain step or errbacks could not be published
/// for now (the message then goes back to its queue, and runs again).
async fn run(
    hand: &Handling,
    msg: &TaskMessage,
    handler: &Handler,
    earlier: u32,
    permit: Option<SemaphorePermit<'_>>,
    tally: &Tally,
) -> Option<(TaskOutcome, Vec<Unsent>)> {
    let shared = &hand.shared;
    let started_at = Utc::now();
    // An ignored result leaves no row at all (a STARTED one would stay).
    if shared.config.track_started && !msg.ignore_result {
        Box::pin(mark_started(hand, msg, started_at)).await;
    }
    let options = shared.registry.options(&msg.task);
    let (hard, soft) = execute::limits(msg, &options);
    let recorded = shared.backend.is_some() && !msg.ignore_result;
    let (progress, watcher) = progress::channel(recorded);
    let ctx = execute::task_context(shared, msg, &hand.queue, earlier, soft, progress);
    let clock = Instant::now();
    let running = execute::run(shared, handler, ctx, msg, hard);
    let write = |value| Box::pin(write_progress(hand, msg, started_at, value));
    let result = progress::drive(running, watcher, write).await;
    drop(permit);
    let done_at = Some(Utc::now());
    let runtime = clock.elapsed();
    tally.ran(runtime);
    let ms = runtime.as_secs_f64() * 1e3;
    let mut unsent = Vec::new();
    let (state, value, failure) = match result {
        Ok(value) => {
            let backend = shared.backend.as_ref();
            let sent = followup::on_success(&hand.publisher, backend, msg, &value, &hand.queue);
            let Some(not_sendable) = sent.await else {
                Box::pin(before_return(hand, earlier)).await;
                return None;
            };
            unsent = not_sendable;
            tracing::info!(duration_ms = ms, "succeeded");
            tally.succeeded();
            shared.events.succeeded(&msg.id, &value, ms / 1e3);
            (TaskState::Success, Some(value), None)
        }
        Err(f) if f.kind == "Cancelled" && shared.revocations.is_revoked(&msg.id) => {
            tracing::info!(duration_ms = ms, "terminated by revoke");
            shared.events.revoked(&msg.id, true, false);
            tally.revoked();
            let failure = TaskFailure::new("TaskRevoked", "terminated while running");
            (TaskState::Revoked, None, Some(failure))
        }
        Err(f) => {
            tracing::warn!(duration_ms = ms, kind = %f.kind, "failed: {}", f.message);
            let concluded =
                execute::conclude_failure(&hand.publisher, msg, &hand.queue, &options, f);
            let Some((state, failure)) = Box::pin(concluded).await else {
                Box::pin(before_return(hand, earlier)).await;
                return None;
            };
            let retried = state == TaskState::Retry;
            if retried {
                tally.retried();
            } else {
                tally.failed(&failure.kind);
            }
            shared
                .events
                .failed(&msg.id, &failure.kind, &failure.message, retried);
            (state, None, Some(failure))
        }
    };
    let mut outcome = hand.outcome(msg, state);
    outcome.result = value;
    outcome.error = failure.map(task_error);
    (outcome.started_at, outcome.done_at) = (Some(started_at), done_at);
    Some((outcome, unsent))
}

/// Waits before a message whose retry or follow-ups the broker did not take
/// goes back to its queue (see [`followup::pause_before_return`]); cut
/// short when the session is retired.
async fn before_return(hand: &Handling, earlier: u32) {
    let pause = followup::pause_before_return(earlier);
    tracing::warn!(
        pause_s = pause.as_secs(),
        "returning the message to its queue, to send what it sends again"
    );
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = hand.window.retired() => {}
    }
}

/// Records PROGRESS with `value` (a failure to is logged; the task goes on).
async fn write_progress(
    hand: &Handling,
    msg: &TaskMessage,
    started_at: chrono::DateTime<Utc>,
    value: serde_json::Value,
) {
    if let Some(backend) = &hand.shared.backend {
        let mut row = hand.outcome(msg, TaskState::Progress);
        row.started_at = Some(started_at);
        row.result = Some(value);
        if let Err(e) = recorder::bounded(backend, backend.store_progress(row)).await {
            tracing::warn!(error = %e, "cannot record progress; the task goes on");
        }
    }
}

/// Whether the result backend holds a final outcome for `id`.
async fn already_done(hand: &Handling, id: &str) -> bool {
    let Some(backend) = &hand.shared.backend else {
        return false;
    };
    match recorder::bounded(backend, backend.get(id)).await {
        Ok(found) => found.is_some_and(|r| r.state.is_ready()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up an earlier outcome; running it");
            false
        }
    }
}

/// Takes the row of `msg` for this worker before it runs (see
/// [`Disposition::Claim`]), with the guard that ends the claim once the
/// outcome is stored. When the database cannot say, it counts as held
/// (asked again a moment later; a claim that committed unseen is given
/// back): never run without the row.
async fn claim(hand: &Handling, msg: &TaskMessage) -> (Claim, Option<ClaimGuard>) {
    let shared = &hand.shared;
    let Some(backend) = &shared.backend else {
        return (Claim::Taken, None);
    };
    let Some(guard) = shared.claims.reserve(&msg.id, backend, &shared.worker_id) else {
        // Another copy runs in this process.
        return (Claim::Held(shared.worker_id.clone()), None);
    };
    let mut started = hand.outcome(msg, TaskState::Started);
    started.started_at = Some(Utc::now());
    match recorder::bounded(backend, backend.claim_run(started)).await {
        Ok(Claim::Taken) => (Claim::Taken, Some(guard)),
        Ok(found) => {
            guard.forget();
            (found, None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim the task's row; asking again");
            drop(guard);
            (Claim::Held(String::new()), None)
        }
    }
}

/// Records STARTED (a failure to is logged; the task runs anyway); with
/// the rpc backend, sends it to the caller as Celery's worker does.
async fn mark_started(hand: &Handling, msg: &TaskMessage, at: chrono::DateTime<Utc>) {
    let mut started = hand.outcome(msg, TaskState::Started);
    started.started_at = Some(at);
    if let Some(reply) = hand.rpc_reply(msg, &started) {
        hand.send_reply(reply).await;
    }
    if let Some(backend) = &hand.shared.backend
        && let Err(e) = recorder::bounded(backend, backend.store_progress(started)).await
    {
        tracing::warn!(error = %e, "cannot record STARTED; running anyway");
    }
}
