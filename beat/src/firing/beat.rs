//! One leader's work: load the schedule, and at each due instant decide,
//! persist, send and record ([`Beat::tick`]). Tests drive `tick` with exact
//! instants; [`crate::runner`] drives it from the wall clock.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;

use crate::clock::Clock;
use crate::error::BeatError;
use crate::events::{BeatEvent, EventKind, Events};
use crate::firing::dispatch::Publisher;
use crate::firing::instances;
use crate::firing::plan::{Batch, Planned, Sent, jobs};
use crate::firing::run_state::{self, RunState};
use crate::firing::scheduler::Scheduler;
use crate::leadership::lease::Fence;
use crate::schedule::entry::{Entry, Firing};
use crate::schedule::store::Store;

/// How long before a run is due its tick starts: the run is decided and
/// recorded ("being sent") ahead, so at the due instant only the publish is
/// left. A change made in this window (a pause) applies from the next run.
pub const PREPARE_AHEAD: std::time::Duration = std::time::Duration::from_millis(200);

/// Entries read per query when loading the schedule.
const LOAD_PAGE: u64 = 2000;

/// Runs published at once (pipelined on one confirm channel).
const PUBLISH_CONCURRENCY: usize = 512;

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

/// The leader's scheduler with its database, publisher and events.
pub struct Beat<P: Publisher> {
    pub(crate) store: Store,
    publisher: Arc<P>,
    events: Events,
    pub(crate) clock: Arc<dyn Clock>,
    fence: Fence,
    pub(crate) scheduler: Scheduler,
    pub(crate) revision: i64,
    prepare_ahead: TimeDelta,
}

impl<P: Publisher> std::fmt::Debug for Beat<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beat")
            .field("fence", &self.fence)
            .field("scheduler", &self.scheduler)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// What [`Beat::load`] needs.
pub struct BeatParts<P: Publisher> {
    /// The database schedule.
    pub store: Store,
    /// Where runs go.
    pub publisher: Arc<P>,
    /// Decisions go here.
    pub events: Events,
    /// The clock (for send times and lateness).
    pub clock: Arc<dyn Clock>,
    /// Proof of leadership.
    pub fence: Fence,
    /// Job defaults.
    pub defaults: Firing,
}

impl<P: Publisher> Beat<P> {
    /// Loads the database schedule, `file_entries` and every run state, and
    /// persists the state of entries seen for the first time.
    pub async fn load(
        parts: BeatParts<P>,
        file_entries: Vec<Entry>,
        now: DateTime<Utc>,
    ) -> Result<Beat<P>, BeatError> {
        let revision = parts.store.version().await?;
        let mut beat = Beat {
            store: parts.store,
            publisher: parts.publisher,
            events: parts.events,
            clock: parts.clock,
            fence: parts.fence,
            scheduler: Scheduler::new(parts.defaults),
            revision,
            prepare_ahead: TimeDelta::from_std(PREPARE_AHEAD).unwrap_or_default(),
        };
        let file_names: HashSet<String> = file_entries.iter().map(|e| e.name.clone()).collect();
        let names: Vec<String> = file_names.iter().cloned().collect();
        let mut states = run_state::load_some(beat.store.db(), &names).await?;
        for entry in file_entries {
            let state = states.remove(&entry.name);
            beat.upsert(entry, state, now);
        }
        // Page by page, so that 100,000 entries never sit in memory twice.
        let mut after: Option<String> = None;
        loop {
            let (page, last) = beat.store.load_page(after.as_deref(), LOAD_PAGE).await?;
            let Some(last) = last else { break };
            after = Some(last);
            let page: Vec<Entry> = page
                .into_iter()
                .filter(|e| {
                    let shadowed = file_names.contains(&e.name);
                    if shadowed {
                        tracing::warn!(entry = %e.name, "a file entry has the same name: the database entry is ignored");
                    }
                    !shadowed
                })
                .collect();
            let names: Vec<String> = page.iter().map(|e| e.name.clone()).collect();
            let mut states = run_state::load_some(beat.store.db(), &names).await?;
            for entry in page {
                let state = states.remove(&entry.name);
                beat.upsert(entry, state, now);
            }
        }
        beat.flush(now).await?;
        let mut ev = BeatEvent::new(EventKind::Loaded, beat.clock.now());
        ev.count = Some(beat.scheduler.len() as u64);
        ev.detail = Some(format!(
            "{} entries, schedule version {revision}, in {} ms",
            beat.scheduler.len(),
            (beat.clock.now() - now).num_milliseconds()
        ));
        beat.events.emit(ev);
        Ok(beat)
    }

    pub(crate) fn upsert(&mut self, entry: Entry, state: Option<RunState>, now: DateTime<Utc>) {
        let name = entry.name.clone();
        if let Err(e) = self.scheduler.upsert(entry, state, now) {
            tracing::error!(entry = %name, "invalid trigger, entry ignored: {e}");
        }
    }

    /// The scheduler (entries and run state).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The schedule version this beat has applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The earliest instant something is due.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        self.scheduler.next_wake()
    }

    /// When to tick next: [`PREPARE_AHEAD`] (or what
    /// [`Beat::set_prepare_ahead`] set) before the earliest due run.
    pub fn next_tick(&mut self) -> Option<DateTime<Utc>> {
        let ahead = self.prepare_ahead;
        self.scheduler
            .next_wake()
            .map(|t| t.checked_sub_signed(ahead).unwrap_or(t))
    }

    /// How long before a run is due it is prepared (tests set zero).
    pub fn set_prepare_ahead(&mut self, ahead: std::time::Duration) {
        self.prepare_ahead = TimeDelta::from_std(ahead).unwrap_or_default();
    }

    /// Persists run states changed outside a tick (new entries).
    pub async fn flush(&mut self, now: DateTime<Utc>) -> Result<(), BeatError> {
        self.save(&[], now).await
    }

    async fn save(
        &mut self,
        served: &[(&str, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<(), BeatError> {
        let dirty = self.scheduler.take_dirty();
        if dirty.is_empty() && served.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, &RunState)> = dirty.iter().map(|(n, s)| (&**n, s)).collect();
        match run_state::save(self.store.db(), &self.fence, &rows, served, now).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.scheduler.mark_dirty(dirty.into_iter().map(|(n, _)| n));
                Err(e.into())
            }
        }
    }

    /// Does everything due at `now` (or within the prepare-ahead time):
    /// [`Beat::prepare`], [`Beat::send`], [`Beat::complete`] in one go.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, BeatError> {
        let Some(batch) = self.prepare(now).await? else {
            return Ok(TickReport::default());
        };
        let sent = self.send(batch).await;
        self.complete(sent).await
    }

    /// Decides what is due (misfire, coalesce, max_instances) and records
    /// the runs about to be sent (fenced). `None` if nothing is due.
    pub async fn prepare(&mut self, now: DateTime<Utc>) -> Result<Option<Batch>, BeatError> {
        let mut planned = self.scheduler.take_due(now, self.prepare_ahead);
        if planned.is_empty() {
            return Ok(None);
        }
        let mut report = TickReport::default();
        self.report_skips(&planned, now, &mut report);
        report.held = instances::hold_busy(
            &mut self.scheduler,
            self.store.db(),
            &self.events,
            &mut planned,
            now,
        )
        .await;
        if let Err(e) = self.save(&[], now).await {
            for p in &planned {
                if p.fire.is_some() || p.run_now.is_some() {
                    self.scheduler.send_failed(&p.name, now);
                }
                self.scheduler.finish(&p.name);
            }
            return Err(e);
        }
        let jobs = jobs(&self.scheduler, &planned);
        Ok(Some(Batch {
            planned,
            jobs,
            report,
            now,
        }))
    }

    /// Publishes a prepared batch, each run when it is due. The future does
    /// not borrow the beat: the service runs it beside further ticks.
    pub fn send(&self, batch: Batch) -> impl Future<Output = Sent> + Send + 'static {
        let publisher = self.publisher.clone();
        let clock = self.clock.clone();
        async move {
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
    }

    /// Records a published batch: runs sent, or to retry with the same id.
    pub async fn complete(&mut self, sent: Sent) -> Result<TickReport, BeatError> {
        let Sent {
            planned,
            results,
            mut report,
            now,
        } = sent;
        let mut served = Vec::new();
        for (job, res) in &results {
            let m = &job.message;
            match res {
                Ok(sent_at) => {
                    report.sent += 1;
                    self.scheduler
                        .sent(&m.entry, m.fire_at, m.task_id, job.run_now, *sent_at);
                    if job.run_now {
                        served.push((m.entry.as_str(), m.fire_at));
                    }
                    let kind = match (job.run_now, job.resend) {
                        (true, _) => EventKind::RunNow,
                        (false, true) => EventKind::Resent,
                        (false, false) => EventKind::Fired,
                    };
                    let mut ev = BeatEvent::new(kind, *sent_at).entry(&m.entry, &m.task);
                    ev.task_id = Some(m.task_id);
                    ev.scheduled_at = Some(m.fire_at);
                    ev.lateness_ms =
                        Some((*sent_at - job.due).num_microseconds().unwrap_or(0) as f64 / 1e3);
                    self.events.emit(ev);
                }
                Err(detail) => {
                    report.failed += 1;
                    self.scheduler.send_failed(&m.entry, now);
                    let mut ev =
                        BeatEvent::new(EventKind::SendFailed, now).entry(&m.entry, &m.task);
                    ev.task_id = Some(m.task_id);
                    ev.scheduled_at = Some(m.fire_at);
                    ev.detail = Some(detail.clone());
                    self.events.emit(ev);
                }
            }
        }
        for p in &planned {
            if self.scheduler.finish(&p.name)
                && let Some(entry) = self.scheduler.entry(&p.name)
            {
                self.events
                    .emit(BeatEvent::new(EventKind::Done, now).entry(&p.name, &entry.task));
            }
        }
        self.save(&served, self.clock.now()).await?;
        Ok(report)
    }

    fn report_skips(&self, planned: &[Planned], now: DateTime<Utc>, report: &mut TickReport) {
        for p in planned {
            let Some(entry) = self.scheduler.entry(&p.name) else {
                continue;
            };
            if let Some((runs, last)) = p.missed {
                report.missed += runs.count;
                let grace = self
                    .scheduler
                    .firing(&p.name)
                    .map(|f| f.misfire_grace.to_string())
                    .unwrap_or_default();
                let mut ev = BeatEvent::new(EventKind::Missed, now).entry(&p.name, &entry.task);
                ev.count = Some(runs.count);
                ev.scheduled_at = Some(last);
                ev.detail = Some(format!(
                    "{runs} runs later than misfire_grace_time ({grace}), the last scheduled at {}",
                    crate::clock::format_instant(last)
                ));
                self.events.emit(ev);
            }
            if let (Some(runs), Some(fire)) = (p.coalesced, p.fire) {
                report.coalesced += runs.count;
                let mut ev = BeatEvent::new(EventKind::Coalesced, now).entry(&p.name, &entry.task);
                ev.count = Some(runs.count);
                ev.scheduled_at = Some(fire.at);
                self.events.emit(ev);
            }
        }
    }
}
