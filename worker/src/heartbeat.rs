//! The worker's heartbeat in the result backend, and the sweep that
//! recovers tasks left STARTED by workers that died (see
//! `celeriac_common::backend::workers`).

use crate::recorder;
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::workers::{MISSED_HEARTBEATS, WorkerInfo};
use std::time::Duration;
use tokio::sync::watch;

/// Heartbeats between two sweeps for lost tasks.
const SWEEP_EVERY: u64 = 2;

/// Writes the first heartbeat, so the worker is known alive before it
/// records any STARTED task, and sweeps once: a worker often starts just
/// after another one died.
pub(crate) async fn announce(backend: &ResultBackend, me: &WorkerInfo, interval: Duration) {
    if let Err(e) = recorder::bounded(backend, backend.worker_heartbeat(me, interval)).await {
        tracing::warn!(
            error = %e,
            "cannot write the worker's heartbeat; retrying every {interval:?}"
        );
        return;
    }
    sweep(backend).await;
}

/// Renews the heartbeat every `interval` and, every few heartbeats, moves
/// tasks of dead workers from STARTED to RETRY; until `stop` turns true.
pub(crate) async fn run(
    backend: ResultBackend,
    me: WorkerInfo,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = recorder::bounded(&backend, backend.worker_heartbeat(&me, interval)).await {
            tracing::warn!(
                error = %e,
                source = ?std::error::Error::source(&e),
                "cannot write the worker's heartbeat"
            );
            continue;
        }
        beats += 1;
        if !beats.is_multiple_of(SWEEP_EVERY) {
            continue;
        }
        sweep(&backend).await;
    }
}

async fn sweep(backend: &ResultBackend) {
    match recorder::bounded(backend, backend.recover_lost_tasks()).await {
        Ok(lost) => {
            for task in lost {
                tracing::warn!(
                    task.id = %task.task_id,
                    lost_worker = %task.worker_id,
                    "task left STARTED by a worker with no heartbeat for {MISSED_HEARTBEATS} \
                     intervals: RETRY (WorkerLostError) until its message is redelivered"
                );
            }
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                source = ?std::error::Error::source(&e),
                "cannot check for tasks of lost workers"
            );
        }
    }
}
