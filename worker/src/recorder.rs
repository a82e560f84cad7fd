//! Records outcomes in batches, then acknowledges their messages: a message
//! is acked only after its outcome is stored (`acks_late`). While the
//! database is unreachable, outcomes wait here and are retried; their
//! messages stay unacknowledged, so nothing is lost if the worker dies.

use celeriac_common::backend::{ResultBackend, TaskOutcome};
use lapin::Acker;
use lapin::options::BasicAckOptions;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most outcomes written in one statement.
const BATCH_MAX: usize = 256;
/// An ack the broker does not take within this is given up (redelivered later).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One finished delivery: what to store (if anything) and what to ack.
pub(crate) struct Finished {
    pub(crate) outcome: Option<TaskOutcome>,
    pub(crate) acker: Acker,
    pub(crate) task_id: String,
}

/// Sends finished deliveries to the recorder task.
pub(crate) type RecorderTx = mpsc::Sender<Finished>;

/// Runs until every sender is dropped and the queue is drained.
pub(crate) async fn run(backend: Option<ResultBackend>, mut rx: mpsc::Receiver<Finished>) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let outcomes: Vec<TaskOutcome> =
            batch.iter_mut().filter_map(|f| f.outcome.take()).collect();
        if let Some(backend) = &backend {
            store_until_done(backend, outcomes).await;
        }
        for done in batch.drain(..) {
            // After a lost connection the channel is gone (and the broker will
            // redeliver); never let one dead ack hold up the others.
            if !done.acker.usable() {
                continue;
            }
            let ack = tokio::time::timeout(ACK_TIMEOUT, done.acker.ack(BasicAckOptions::default()));
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(task.id = %done.task_id, error = %e, "ack failed; the message will be redelivered")
                }
                Err(_) => {
                    tracing::warn!(task.id = %done.task_id, "ack timed out; the message will be redelivered")
                }
            }
        }
    }
}

async fn store_until_done(backend: &ResultBackend, outcomes: Vec<TaskOutcome>) {
    if outcomes.is_empty() {
        return;
    }
    let mut wait = RETRY_START;
    let mut logged = false;
    loop {
        match backend.store(outcomes.clone()).await {
            Ok(()) => {
                if logged {
                    tracing::info!(
                        count = outcomes.len(),
                        "result backend is back; outcomes stored"
                    );
                }
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), count = outcomes.len(), "cannot store outcomes; retrying until the result backend is back (messages stay unacknowledged)");
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}
