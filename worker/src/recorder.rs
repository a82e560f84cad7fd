//! Records outcomes in batches, then acknowledges their messages: a message
//! is acked only after its outcome is stored (`acks_late`). While the
//! database is unreachable, outcomes wait here and are retried; their
//! messages stay unacknowledged, so nothing is lost if the worker dies.
//!
//! Acks are sent with `multiple` where that is exact: each session keeps the
//! set of delivery tags it has received and not yet settled (its
//! [`AckWindow`]); a batch's tags below the lowest unsettled one are acked
//! with one `basic.ack(multiple)`, the rest one by one. So a long task holds
//! up nothing, and under load one frame acks a whole batch (one frame instead
//! of hundreds also saves the broker about a third of its CPU per message).
//!
//! Outcomes are stored as soon as they arrive; their acks wait
//! [`ACK_LINGER`] (one tick of tokio's timer, so 1 to 2 ms) for more to
//! share the frame, and go out at once when a quarter of the prefetch
//! window is waiting, so the broker never runs short of room to send more.
//! A later batch's result write, however long, never holds them longer.
//! Draining a full queue at prefetch 128, that is about 31 tasks per ack
//! frame instead of 6, and about a sixth less worker CPU per task; with a
//! prefetch of 1 to 7 every ack goes out at once.
//!
//! A batch whose reports leave a chord to settle (a callback to send) acks
//! its other deliveries as soon as it is stored, and the claimant's only
//! once the callback is sent: the callback usually goes to a queue this
//! worker consumes, and must find room in the prefetch window to start at
//! once.

use crate::chord::{self, Later};
use crate::claims::ClaimGuard;
use celeriac_common::TaskState;
use celeriac_common::backend::{BackendError, ResultBackend, TaskError, TaskOutcome};
use celeriac_common::backoff::Backoff;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most outcomes written in one statement.
const BATCH_MAX: usize = 256;
/// How long finished deliveries wait for others to share their ack (tokio's
/// timer rounds it up to its next 1 ms tick).
const ACK_LINGER: Duration = Duration::from_millis(1);
/// An ack the broker does not take within this is given up (redelivered later).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How long a delivery whose chord could not be settled (the broker
/// refused the callback, the database failed) is held before it goes back
/// to its queue, whose next delivery reports again: a failure that lasts
/// is retried about once a second, not as fast as the broker redelivers.
const SETTLE_RETRY: Duration = Duration::from_secs(1);

/// How often one outcome the database refuses (not merely cannot reach) is
/// tried before it is given up.
const REFUSALS_MAX: u32 = 3;

/// Failures of a batch, for a reason other than a refusal, while the
/// database answers a ping meanwhile: then it is the batch the database
/// cannot take (MySQL drops the connection of a statement over
/// `max_allowed_packet`), and its outcomes are stored one by one...
pub(crate) const SPLIT_AFTER: u32 = 3;
/// ...and one outcome failing so this often is given up (a FAILURE row
/// saying so is stored in its place), instead of holding every later
/// outcome and ack for ever.
pub(crate) const ANSWERED_MAX: u32 = 10;

/// `call` to `backend` on a path that must go on whatever the database
/// does (a store, a STARTED mark, progress, the lookup of a redelivered
/// copy, a heartbeat, a chord report, the revocations at start): given up
/// after [`ResultBackend::call_timeout`]. A store cut short is an upsert
/// and safe to repeat.
pub(crate) async fn bounded<T, E: From<BackendError>>(
    backend: &ResultBackend,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let after = backend.call_timeout();
    tokio::time::timeout(after, call)
        .await
        .unwrap_or_else(|_| Err(BackendError::NoAnswer { after }.into()))
}

/// How long a ping may take to say whether the database answers.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished delivery: what to store (if anything) and what to ack.
pub(crate) struct Finished {
    pub(crate) outcome: Option<TaskOutcome>,
    /// What to do once it is stored, before the ack (chords, chains).
    pub(crate) later: Option<Box<Later>>,
    pub(crate) tag: u64,
    pub(crate) acker: Acker,
    pub(crate) window: Arc<AckWindow>,
    pub(crate) task_id: String,
    /// The claim on its row (a chord callback, a beat run), ended when
    /// this is dropped: after the outcome is stored or given up.
    #[expect(dead_code, reason = "held for what its drop does")]
    pub(crate) claim: Option<ClaimGuard>,
}

/// The delivery tags of one channel that are received and not yet settled
/// (acked, or nacked back to the queue). Tags are numbered 1, 2, 3, … per
/// channel; with several consumers on the channel a lower tag can still wait
/// in another consumer's buffer, so a multiple ack never goes beyond the
/// tags received without a gap.
///
/// It also says when its session stops handing out work (at shutdown, or
/// `Session::retire`): its deliveries not yet running go back to their
/// queues.
#[derive(Debug, Default)]
pub(crate) struct AckWindow {
    tags: Mutex<Tags>,
    retired: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Tags {
    unsettled: BTreeSet<u64>,
    /// Every tag up to this one has been received.
    contiguous: u64,
    /// Tags received beyond a gap.
    ahead: BTreeSet<u64>,
}

impl AckWindow {
    pub(crate) fn received(&self, tag: u64) {
        let mut t = self.lock();
        t.unsettled.insert(tag);
        if tag == t.contiguous + 1 {
            t.contiguous = tag;
            while t.ahead.first() == Some(&(t.contiguous + 1)) {
                t.ahead.pop_first();
                t.contiguous += 1;
            }
        } else if tag > t.contiguous {
            t.ahead.insert(tag);
        }
    }

    /// The tag is no longer unacknowledged at the broker.
    pub(crate) fn settled(&self, tag: u64) {
        self.lock().unsettled.remove(&tag);
    }

    /// How many tags received are not settled yet.
    pub(crate) fn unsettled(&self) -> usize {
        self.lock().unsettled.len()
    }

    /// Whether every tag received has been settled.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().unsettled.is_empty()
    }

    /// Tells the session's deliveries that wait for their turn to give
    /// themselves back (see `Session::give_back_waiting`).
    pub(crate) fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Resolves once [`AckWindow::retire`] was called.
    pub(crate) async fn retired(&self) {
        let _ = self.retired.subscribe().wait_for(|r| *r).await;
    }

    /// Settles `tags` (sorted) and says how many of the lowest can be acked
    /// with one multiple ack: those below every other unsettled tag and
    /// below the first tag not yet received.
    fn settle_batch(&self, tags: &[u64]) -> usize {
        let mut t = self.lock();
        for tag in tags {
            t.unsettled.remove(tag);
        }
        let limit = t
            .unsettled
            .first()
            .copied()
            .unwrap_or(u64::MAX)
            .min(t.contiguous + 1);
        tags.partition_point(|tag| *tag < limit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tags> {
        // The set stays consistent even if a holder panicked.
        self.tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Sends finished deliveries to the recorder task.
pub(crate) type RecorderTx = mpsc::Sender<Finished>;

/// Runs until every sender is dropped and the queue is drained; `prefetch`
/// is the sessions' prefetch window.
pub(crate) async fn run(
    backend: Option<ResultBackend>,
    mut rx: mpsc::Receiver<Finished>,
    prefetch: u16,
) {
    let fill = (usize::from(prefetch) / 4).clamp(1, BATCH_MAX);
    let mut batch = Vec::with_capacity(BATCH_MAX);
    // Stored (or with nothing to store), not yet acked.
    let mut unacked: Vec<Finished> = Vec::new();
    let mut deadline = None;
    loop {
        let more = rx.recv_many(&mut batch, BATCH_MAX);
        let received = match deadline {
            None => more.await,
            // `recv_many` is cancel safe: on timeout nothing was taken.
            Some(at) => match tokio::time::timeout_at(at, more).await {
                Ok(n) => n,
                Err(_) => {
                    ack_all(&mut unacked).await;
                    deadline = None;
                    continue;
                }
            },
        };
        if received == 0 {
            break; // every sender is gone and the queue is empty
        }
        let mut outcomes: Vec<TaskOutcome> = Vec::with_capacity(batch.len());
        let mut laters = Vec::new();
        for (i, f) in batch.iter_mut().enumerate() {
            outcomes.extend(f.outcome.take());
            if let Some(mut later) = f.later.take() {
                outcomes.append(&mut later.aborted);
                laters.push((i, later));
            }
        }
        let Some(backend) = &backend else {
            unacked.append(&mut batch);
            ack_soon(&mut unacked, fill, &mut deadline).await;
            continue;
        };
        // Stored, then reported to their chords: both before the acks.
        let store = async {
            if laters.is_empty() {
                store_until_done(backend, outcomes).await;
                return None;
            }
            // With chord members: stored and reported in one commit when
            // the database allows it.
            // (A write cut short by the timeout is done again apart:
            // storing and reporting are both idempotent.)
            let together = chord::store_and_report(backend, &outcomes, &laters);
            if let Ok(Some(reported)) = tokio::time::timeout(backend.call_timeout(), together).await
            {
                return Some(reported);
            }
            store_until_done(backend, outcomes).await;
            Some(chord::report(backend, &laters).await)
        };
        let mut store = std::pin::pin!(store);
        let reported = match deadline {
            // Acks waiting for company never wait on a later batch's
            // write (which retries for as long as the database is down).
            Some(at) => match tokio::time::timeout_at(at, &mut store).await {
                Ok(reported) => reported,
                Err(_) => {
                    ack_all(&mut unacked).await;
                    deadline = None;
                    store.await
                }
            },
            None => store.await,
        };
        let acting = reported
            .as_ref()
            .map(|r| r.acting(&laters))
            .unwrap_or_default();
        if let Some(reported) = reported.filter(|_| !acting.is_empty()) {
            // A chord to settle: the rest of the batch is acked first, so
            // the callback it sends finds room in the prefetch window.
            let mut kept = Vec::with_capacity(acting.len());
            for (i, f) in batch.drain(..).enumerate() {
                if acting.binary_search(&i).is_ok() {
                    kept.push(f);
                } else {
                    unacked.push(f);
                }
            }
            ack_all(&mut unacked).await;
            deadline = None;
            // Deliveries whose chord could not be settled go back to their
            // queue (after SETTLE_RETRY): their next delivery reports again.
            let back = chord::act_on(backend, &laters, reported).await;
            for (f, i) in kept.into_iter().zip(acting) {
                if back.binary_search(&i).is_ok() {
                    tokio::spawn(async move {
                        tokio::time::sleep(SETTLE_RETRY).await;
                        nack(f).await;
                    });
                } else {
                    unacked.push(f);
                }
            }
        }
        unacked.append(&mut batch);
        ack_soon(&mut unacked, fill, &mut deadline).await;
    }
    ack_all(&mut unacked).await;
}

/// Acks `unacked` now if `fill` of them wait or their linger is over;
/// else starts the linger.
async fn ack_soon(
    unacked: &mut Vec<Finished>,
    fill: usize,
    deadline: &mut Option<tokio::time::Instant>,
) {
    let now = tokio::time::Instant::now();
    if unacked.len() >= fill || deadline.is_some_and(|at| at <= now) {
        ack_all(unacked).await;
        *deadline = None;
    } else if deadline.is_none() {
        *deadline = Some(now + ACK_LINGER);
    }
}

/// Acks every delivery in `unacked` (whose outcomes are stored), with one
/// multiple ack per session where that is exact, and empties it.
async fn ack_all(unacked: &mut Vec<Finished>) {
    // After a lost connection the channel is gone (and the broker will
    // redeliver); never let one dead ack hold up the others.
    unacked.retain(|done| done.acker.usable());
    // Deliveries of one session (channel) are acked together.
    unacked.sort_unstable_by_key(|d| (Arc::as_ptr(&d.window), d.tag));
    let mut acks = Vec::new();
    for session in unacked.chunk_by(|a, b| Arc::ptr_eq(&a.window, &b.window)) {
        let tags: Vec<u64> = session.iter().map(|d| d.tag).collect();
        let together = session[0].window.settle_batch(&tags);
        if together > 0 {
            acks.push(ack(&session[together - 1], together > 1));
        }
        acks.extend(session[together..].iter().map(|done| ack(done, false)));
    }
    // Sent together: one frame does not wait for the one before it.
    futures_util::future::join_all(acks).await;
    unacked.clear();
}

/// Returns a delivery to its queue.
async fn nack(done: Finished) {
    if !done.acker.usable() {
        return; // the channel is gone: the broker requeues it by itself
    }
    let opts = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    match tokio::time::timeout(ACK_TIMEOUT, done.acker.nack(opts)).await {
        Ok(Ok(_)) => done.window.settled(done.tag),
        _ => {
            tracing::warn!(
                task.id = %done.task_id,
                "requeue failed; the broker will redeliver on disconnect"
            )
        }
    }
}

async fn ack(done: &Finished, multiple: bool) {
    let ack = tokio::time::timeout(ACK_TIMEOUT, done.acker.ack(BasicAckOptions { multiple }));
    match ack.await {
        Ok(Ok(_)) => tracing::debug!(task.id = %done.task_id, tag = done.tag, multiple, "acked"),
        Ok(Err(e)) => {
            tracing::debug!(
                task.id = %done.task_id,
                error = %e,
                "ack failed; the message will be redelivered"
            )
        }
        Err(_) => {
            tracing::warn!(
                task.id = %done.task_id,
                "ack timed out; the message will be redelivered"
            )
        }
    }
}

async fn store_until_done(backend: &ResultBackend, mut outcomes: Vec<TaskOutcome>) {
    if outcomes.is_empty() {
        return;
    }
    let mut backoff = Backoff::new(RETRY_START, RETRY_MAX);
    let mut logged = false;
    let mut refusals = 0;
    let mut answered = 0;
    let mut replaced = false;
    loop {
        let stored =
            tokio::time::timeout(backend.call_timeout(), backend.store(outcomes.clone())).await;
        let stored = match stored {
            Ok(stored) => stored,
            // Too slow, or a silent socket: a batch goes one by one (each
            // write smaller), one outcome is tried again on a fresh
            // connection.
            Err(_) if outcomes.len() > 1 => {
                tracing::error!(
                    count = outcomes.len(),
                    "storing outcomes took over {} s; storing them one by one",
                    backend.call_timeout().as_secs()
                );
                for outcome in outcomes {
                    Box::pin(store_until_done(backend, vec![outcome])).await;
                }
                return;
            }
            Err(_) => {
                answered = 0;
                if !logged {
                    tracing::error!(
                        task.id = %outcomes[0].task_id,
                        "storing an outcome took over {} s; trying again on a fresh connection \
                         (its message stays unacknowledged)",
                        backend.call_timeout().as_secs()
                    );
                    logged = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        let e = match stored {
            Ok(()) => {
                if logged {
                    tracing::info!(
                        count = outcomes.len(),
                        "result backend is back; outcomes stored"
                    );
                }
                return;
            }
            Err(e) => e,
        };
        // The database refused the rows themselves, or the statement cost
        // its connection while the database answers: this batch is what it
        // cannot take. One by one, so one outcome does not hold the others
        // (and their acks) back; one that keeps failing is given up. (A
        // database that says no for a while, read-only, full, locked, is
        // waited out below, as an outage: nothing is given up for that.)
        let refused = e.is_refused();
        let cannot_take = refused || (e.cost_the_connection() && answers(backend).await);
        if !cannot_take {
            answered = 0;
        }
        if !refused {
            if !logged {
                tracing::error!(
                    error = %e,
                    source = ?std::error::Error::source(&e),
                    count = outcomes.len(),
                    "cannot store outcomes; retrying until the result backend is back \
                     (messages stay unacknowledged)"
                );
                logged = true;
            }
            if !cannot_take {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        }
        let tries = if refused {
            refusals += 1;
            refusals
        } else {
            answered += 1;
            answered
        };
        let split_after = if refused { 1 } else { SPLIT_AFTER };
        if outcomes.len() > 1 && tries >= split_after {
            tracing::warn!(
                error = %e,
                source = ?std::error::Error::source(&e),
                count = outcomes.len(),
                "result backend does not take this batch; storing its outcomes one by one"
            );
            for outcome in outcomes {
                Box::pin(store_until_done(backend, vec![outcome])).await;
            }
            return;
        }
        if tries >= if refused { REFUSALS_MAX } else { ANSWERED_MAX } {
            match replacement(&outcomes[0], &e, replaced) {
                Some(row) => {
                    (outcomes, replaced) = (vec![row], true);
                    (refusals, answered) = (0, 0);
                    continue;
                }
                None => return,
            }
        }
        tokio::time::sleep(backoff.delay_for(backoff.failures().max(tries))).await;
    }
}

/// Whether the database answers a ping within [`PING_TIMEOUT`].
pub(crate) async fn answers(backend: &ResultBackend) -> bool {
    matches!(
        tokio::time::timeout(PING_TIMEOUT, backend.connection().ping()).await,
        Ok(Ok(()))
    )
}

/// What to store in place of an outcome the database does not take: a
/// FAILURE `ResultNotStored` row, so the task does not stay PENDING (it is
/// then stored as any outcome, waiting out an outage). `None`, the outcome
/// only logged and its message acked, for a RETRY (its retry message
/// carries on) or when the replacement itself is not taken.
fn replacement(outcome: &TaskOutcome, e: &BackendError, replaced: bool) -> Option<TaskOutcome> {
    if replaced || outcome.state == TaskState::Retry {
        tracing::error!(
            task.id = %outcome.task_id,
            error = %e,
            source = ?std::error::Error::source(e),
            "result backend does not take this task's outcome; it is not stored \
             and its message is acked"
        );
        return None;
    }
    tracing::error!(
        task.id = %outcome.task_id,
        error = %e,
        source = ?std::error::Error::source(e),
        "result backend does not take this task's outcome; \
         storing a FAILURE ResultNotStored in its place"
    );
    let mut row = outcome.clone();
    row.state = TaskState::Failure;
    row.result = None;
    row.error = Some(TaskError {
        kind: "ResultNotStored".to_owned(),
        message: format!(
            "the result backend did not take this task's {} outcome: {e}",
            outcome.state.as_str()
        ),
        traceback: None,
    });
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::AckWindow;

    #[test]
    fn only_tags_below_every_unsettled_one_are_acked_together() {
        let w = AckWindow::default();
        for tag in 1..=6 {
            w.received(tag);
        }
        // 3 is still running: 1 and 2 go together, 4 and 5 one by one.
        assert_eq!(w.settle_batch(&[1, 2, 4, 5]), 2);
        // 3 was returned to its queue (settled by its nack): 6 alone is left.
        w.settled(3);
        assert_eq!(w.settle_batch(&[6]), 1);
        w.received(7);
        w.received(8);
        assert_eq!(w.settle_batch(&[8]), 0, "7 is unsettled below 8");
        assert_eq!(w.settle_batch(&[7]), 1);
    }

    #[test]
    fn never_beyond_a_tag_not_yet_received() {
        let w = AckWindow::default();
        // Tag 2 waits in another consumer's buffer while 1 and 3 arrive.
        w.received(1);
        w.received(3);
        assert_eq!(w.settle_batch(&[1, 3]), 1, "3 must not cover 2");
        w.received(2);
        w.received(4);
        assert_eq!(w.settle_batch(&[2, 4]), 2);
    }
}
