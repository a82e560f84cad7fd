//! One leader's work: load the schedule, and at each due instant decide,
//! persist, send and record ([`Beat::tick`]); between ticks, follow the
//! schedule's changes (database changes polled by schedule version, and
//! schedule file reloads). Tests drive `tick` with exact instants;
//! [`crate::runner`] drives it from the wall clock.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::DbErr;

use crate::clock::Clock;
use crate::error::BeatError;
use crate::events::{BeatEvent, EventKind, Events};
use crate::firing::batch::{self, Batch, Sent};
use crate::firing::dispatch::Publisher;
use crate::firing::instances;
use crate::firing::run_state::{self, RunState};
use crate::firing::scheduler::Scheduler;
use crate::leadership::lease::Fence;
use crate::schedule::entry::Firing;
use crate::schedule::file_source::ScheduleFile;
use crate::schedule::store::Store;
use crate::trigger::Calendars;

pub use crate::firing::batch::TickReport;

mod changes;
mod page;

/// How long before a run is due its tick starts: the run is decided and
/// recorded ("being sent") ahead, so at the due instant only the publish is
/// left. A change made in this window (a pause) applies from the next run.
pub const PREPARE_AHEAD: std::time::Duration = std::time::Duration::from_millis(200);

/// Entries read per query when loading the schedule: pages of 500 leave
/// about 4 MiB less behind in the allocator than pages of 2,000 (at
/// 100,000 entries), in the same load time.
const LOAD_PAGE: u64 = 500;

/// The leader's scheduler with its database, publisher and events.
pub struct Beat<P: Publisher> {
    store: Store,
    publisher: Arc<P>,
    events: Events,
    clock: Arc<dyn Clock>,
    fence: Fence,
    scheduler: Scheduler,
    revision: i64,
    prepare_ahead: TimeDelta,
    /// Exclusion calendars of the schedule file and of the database.
    file_calendars: Calendars,
    db_calendars: Calendars,
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
    /// Loads the database schedule and calendars, the schedule file's
    /// entries and calendars and every run state, and persists the state of
    /// entries seen for the first time.
    pub async fn load(
        parts: BeatParts<P>,
        file: impl Into<ScheduleFile>,
        now: DateTime<Utc>,
    ) -> Result<Beat<P>, BeatError> {
        let file: ScheduleFile = file.into();
        let file_calendars = file.calendars();
        let file_entries = file.entries;
        let revision = parts.store.version().await?;
        let db_calendars = parts.store.calendars().await?;
        let mut beat = Beat {
            store: parts.store,
            publisher: parts.publisher,
            events: parts.events,
            clock: parts.clock,
            fence: parts.fence,
            scheduler: Scheduler::new(parts.defaults),
            revision,
            prepare_ahead: TimeDelta::from_std(PREPARE_AHEAD).unwrap_or_default(),
            file_calendars,
            db_calendars,
        };
        beat.apply_calendars();
        let file_names: HashSet<String> = file_entries.iter().map(|e| e.name.clone()).collect();
        let names: Vec<String> = file_names.iter().cloned().collect();
        let mut states = run_state::load_some(beat.store.db(), &names).await?;
        for entry in file_entries {
            let state = states.remove(&entry.name);
            beat.upsert(entry, state, now);
        }
        // Page by page, so that 100,000 entries never sit in memory twice;
        // the next page read while this one is parsed and applied.
        let store = beat.store.clone();
        let mut fetched = page::fetch(&store, None, LOAD_PAGE).await?;
        while let Some(last) = fetched.last.clone() {
            let apply = async {
                for (entry, state) in fetched.entries(&store).await? {
                    if file_names.contains(&entry.name) {
                        tracing::warn!(
                            entry = %entry.name,
                            "a file entry has the same name: the database entry is ignored"
                        );
                        continue;
                    }
                    beat.upsert(entry, state, now);
                }
                Ok::<(), DbErr>(())
            };
            let (next, applied) = tokio::join!(page::fetch(&store, Some(&last), LOAD_PAGE), apply);
            applied?;
            fetched = next?;
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
                self.scheduler.mark_dirty(dirty);
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
        batch::report_skips(&self.scheduler, &self.events, &planned, now, &mut report);
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
        let jobs = batch::jobs(&self.scheduler, &planned);
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
        batch::publish(self.publisher.clone(), self.clock.clone(), batch)
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
}
