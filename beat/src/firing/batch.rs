//! A tick's runs on their way out: `Beat::prepare` hands a [`Batch`] of
//! messages to `Beat::send`, which publishes them (`publish`) and hands
//! what became of each ([`Sent`]) to `Beat::complete`; a [`TickReport`]
//! counts what the tick did.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::clock::{Clock, format_instant};
use crate::events::{BeatEvent, EventKind, Events};
use crate::firing::dispatch::{Publisher, RunMessage};
use crate::firing::plan::Planned;
use crate::firing::scheduler::Scheduler;

/// Runs published at once (pipelined on one confirm channel).
const PUBLISH_CONCURRENCY: usize = 128;

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Runs sent (scheduled, re-sent and run-now).
    pub sent: usize,
    /// Runs that could not be sent (retried later).
    pub failed: usize,
    /// Runs held by `max_instances`.
    pub held: usize,
    /// Runs skipped as missed.
    pub missed: u64,
    /// Runs folded into others by coalescing.
    pub coalesced: u64,
}

/// Runs recorded as being sent, to publish (made by `Beat::prepare`).
pub struct Batch {
    pub(crate) planned: Vec<Planned>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) report: TickReport,
    pub(crate) now: DateTime<Utc>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("runs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

/// A published batch, to record (by `Beat::complete`).
pub struct Sent {
    pub(crate) planned: Vec<Planned>,
    pub(crate) results: Vec<(Job, Result<DateTime<Utc>, String>)>,
    pub(crate) report: TickReport,
    pub(crate) now: DateTime<Utc>,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sent")
            .field("runs", &self.results.len())
            .finish_non_exhaustive()
    }
}

/// One message a tick sends.
pub(crate) struct Job {
    pub(crate) message: RunMessage,
    pub(crate) due: DateTime<Utc>,
    pub(crate) resend: bool,
    pub(crate) run_now: bool,
}

/// The messages for `planned`.
pub(crate) fn jobs(scheduler: &Scheduler, planned: &[Planned]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for p in planned {
        let Some(entry) = scheduler.entry(&p.name) else {
            continue;
        };
        if let Some(fire) = p.fire {
            jobs.push(Job {
                message: RunMessage::from_def(&p.name, entry, fire.at, fire.task_id),
                due: fire.due,
                resend: fire.resend,
                run_now: false,
            });
        }
        if let Some((at, id)) = p.run_now {
            jobs.push(Job {
                message: RunMessage::from_def(&p.name, entry, at, id),
                due: at,
                resend: false,
                run_now: true,
            });
        }
    }
    jobs
}

/// Publishes `batch`, each run when it is due, at most
/// [`PUBLISH_CONCURRENCY`] at a time.
pub(crate) async fn publish<P: Publisher>(
    publisher: Arc<P>,
    clock: Arc<dyn Clock>,
    batch: Batch,
) -> Sent {
    let results = futures_util::stream::iter(batch.jobs)
        .map(|job| {
            let publisher = publisher.clone();
            let clock = clock.clone();
            async move {
                // Prepared ahead: recorded already, sent when due.
                if let Ok(wait) = (job.due - clock.now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                let res = publisher.publish(&job.message).await;
                let res = res
                    .map(|()| clock.now())
                    .map_err(|e| celeriac_common::cli::one_line(&e));
                (job, res)
            }
        })
        .buffer_unordered(PUBLISH_CONCURRENCY)
        .collect()
        .await;
    Sent {
        planned: batch.planned,
        results,
        report: batch.report,
        now: batch.now,
    }
}

/// Counts and reports the runs of `planned` skipped as missed or folded
/// into others by coalescing.
pub(crate) fn report_skips(
    scheduler: &Scheduler,
    events: &Events,
    planned: &[Planned],
    now: DateTime<Utc>,
    report: &mut TickReport,
) {
    for p in planned {
        let Some(entry) = scheduler.entry(&p.name) else {
            continue;
        };
        if let Some((runs, last)) = p.missed {
            report.missed += runs.count;
            let grace = scheduler
                .firing(&p.name)
                .map(|f| f.misfire_grace.to_string())
                .unwrap_or_default();
            let mut ev = BeatEvent::new(EventKind::Missed, now).entry(&p.name, &entry.task);
            ev.count = Some(runs.count);
            ev.scheduled_at = Some(last);
            ev.detail = Some(format!(
                "{runs} runs later than misfire_grace_time ({grace}), the last scheduled at {}",
                format_instant(last)
            ));
            events.emit(ev);
        }
        if let (Some(runs), Some(fire)) = (p.coalesced, p.fire) {
            report.coalesced += runs.count;
            let mut ev = BeatEvent::new(EventKind::Coalesced, now).entry(&p.name, &entry.task);
            ev.count = Some(runs.count);
            ev.scheduled_at = Some(fire.at);
            events.emit(ev);
        }
    }
}
