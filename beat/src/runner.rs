//! The `celeriac-beat run` service: stand by until this process holds the
//! lease, then lead: sleep exactly until the earliest due run, a schedule
//! change, or a change of leadership, and [`Beat::tick`].
//!
//! Wake-ups while leading: the earliest due run (exactly; no polling tick),
//! a schedule file change (checked every second, or SIGHUP), and a check of
//! the database schedule version every half second (one single-row query;
//! the changed entries are read only when it moved), so a change made with
//! `celeriac-beat schedule ...` takes effect within a second.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use celeriac::{Client, ClientError};
use celeriac_common::broker;
use celeriac_common::cli::one_line;
use celeriac_common::{Config, ResultBackend};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::clock::{Clock, SystemClock};
use crate::error::BeatError;
use crate::events::{BeatEvent, EventKind, Events, publish_to_broker};
use crate::firing::batch::Sent;
use crate::firing::beat::{Beat, BeatParts};
use crate::leadership::keeper::{self, Leadership};
use crate::leadership::lease::{Fence, Lease};
use crate::metrics::Served;
use crate::schedule::entry::Firing;
use crate::schedule::file_source::{self, ScheduleFile};
use crate::schedule::store::Store;

/// SQLite's page cache on beat's connection, in KiB (its default is
/// 2,000): the schedule is read once at the load, in order, and a tick then
/// writes a few rows, whose index pages a small cache holds.
const BEAT_PAGE_CACHE_KIB: u32 = 512;

/// How often the leader checks the database schedule version.
pub const CHANGE_POLL: Duration = Duration::from_millis(500);

/// The beat service.
pub struct Service {
    config: Config,
    schedule: Option<PathBuf>,
    events: Events,
    holder: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("schedule", &self.schedule)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with `config`; `schedule` (else `config.beat_schedule`) is
    /// the TOML schedule file, if any.
    pub fn new(config: Config, schedule: Option<PathBuf>) -> Service {
        let schedule = schedule.or_else(|| config.beat_schedule.clone().map(PathBuf::from));
        Service {
            config,
            schedule,
            events: Events::new(),
            holder: Lease::holder_id(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The event bus (subscribe before [`Service::run`] to see every decision).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// This process's lease holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Runs until `shutdown` completes, then releases the lease and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), BeatError> {
        if !self.config.results_enabled() {
            return Err(BeatError::NoDatabase);
        }
        let http = match &self.config.beat_http_addr {
            Some(addr) => Some(Served::start(addr, &self.events, &self.config.hostname).await?),
            None => None,
        };
        let mut file_entries = file_source::load_or_empty(self.schedule.as_deref())?;
        // The schedule is read once; then a tick touches a few pages.
        let backend = ResultBackend::connect_with_page_cache(
            &self.config.result_backend,
            Some(BEAT_PAGE_CACHE_KIB),
        )
        .await?;
        if self.config.migrate_on_start {
            backend.migrate().await?;
        }
        let db = backend.connection().clone();
        if let Some(path) = &self.schedule {
            let db_calendars = Store::new(db.clone()).calendars().await?;
            file_source::check_calendars(&file_entries, &db_calendars, path)?;
        }
        let mut shutdown = std::pin::pin!(shutdown);
        // Waits for the broker (`broker_connection_retry_on_startup`).
        let transient = |e: &ClientError| matches!(e, ClientError::Broker(b) if b.is_transient());
        let connect = broker::retry_on_startup(&self.config, transient, || {
            Client::connect(self.config.clone())
        });
        let client = tokio::select! {
            client = connect => Arc::new(client?),
            _ = &mut shutdown => return Ok(()),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(publish_to_broker(
            self.config.clone(),
            self.events.subscribe(),
            stop_rx.clone(),
        )));
        let ttl = Duration::from_secs(self.config.beat_lease_secs.max(1));
        let (lead_tx, mut lead_rx) = watch::channel(Leadership::Standby);
        let recheck = Arc::new(Notify::new());
        let lease = Lease::new(db.clone(), self.holder.clone(), ttl);
        tasks.push(tokio::spawn(keeper::keep(
            lease,
            lead_tx,
            recheck.clone(),
            stop_rx.clone(),
        )));
        let (file_tx, mut file_rx) = mpsc::channel::<ScheduleFile>(4);
        if let Some(path) = &self.schedule {
            tasks.push(tokio::spawn(file_source::watch(
                path.clone(),
                file_tx,
                stop_rx.clone(),
            )));
        }
        tracing::info!(
            holder = %self.holder,
            entries_in_file = file_entries.entries.len(),
            lease_secs = ttl.as_secs(),
            "beat started; waiting for the lease"
        );
        let store = Store::new(db);
        let defaults = Firing::from_config(&self.config);
        if let Some(h) = &http {
            h.health().ok("standing by (waiting for the lease)");
        }
        'outer: loop {
            // Stand by.
            let fence = loop {
                if let Leadership::Leader(f) = &*lead_rx.borrow_and_update() {
                    break f.clone();
                }
                tokio::select! {
                    _ = lead_rx.changed() => {}
                    Some(entries) = file_rx.recv() => file_entries = entries,
                    _ = &mut shutdown => break 'outer,
                }
            };
            let mut detail = BeatEvent::new(EventKind::Leading, self.clock.now());
            detail.detail = Some(format!("holder {} token {}", fence.holder, fence.token));
            self.events.emit(detail);
            let parts = BeatParts {
                store: store.clone(),
                publisher: client.clone(),
                events: self.events.clone(),
                clock: self.clock.clone(),
                fence: fence.clone(),
                defaults,
            };
            let mut beat = match Beat::load(parts, file_entries.clone(), self.clock.now()).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("cannot load the schedule: {}", one_line(&e));
                    recheck.notify_one();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = &mut shutdown => break 'outer,
                    }
                }
            };
            let reason = self
                .lead(
                    &mut beat,
                    &fence,
                    &mut lead_rx,
                    &mut file_rx,
                    &mut file_entries,
                    &recheck,
                    &mut shutdown,
                )
                .await;
            let mut ev = BeatEvent::new(EventKind::Standby, self.clock.now());
            ev.detail = Some(reason.to_owned());
            self.events.emit(ev);
            if reason == STOPPING {
                break;
            }
        }
        if let Some(h) = &http {
            h.health().unavailable("stopping");
        }
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        client.close().await;
        if let Some(h) = http {
            h.stop().await;
        }
        tracing::info!("beat stopped");
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn lead<S: Future<Output = ()> + Send>(
        &self,
        beat: &mut Beat<Client>,
        fence: &Fence,
        lead_rx: &mut watch::Receiver<Leadership>,
        file_rx: &mut mpsc::Receiver<ScheduleFile>,
        file_entries: &mut ScheduleFile,
        recheck: &Notify,
        shutdown: &mut std::pin::Pin<&mut S>,
    ) -> &'static str {
        let mut poll = tokio::time::interval(CHANGE_POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut db_failing = false;
        // Batches being published run beside the loop, so a crowd of runs
        // due together never delays the next one; their outcomes come back here.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Sent>();
        let mut in_flight = 0usize;
        // A schedule file not (fully) applied yet: tried again at each poll.
        let mut unapplied: Option<ScheduleFile> = None;
        let mut file_warned = false;
        loop {
            let sleep = match beat.next_tick() {
                Some(at) => (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => {
                    self.drain(beat, &mut done_rx, in_flight).await;
                    return STOPPING;
                }
                changed = lead_rx.changed() => {
                    if changed.is_err() || *lead_rx.borrow() != Leadership::Leader(fence.clone()) {
                        return "the lease moved";
                    }
                }
                Some(sent) = done_rx.recv() => {
                    in_flight = in_flight.saturating_sub(1);
                    if let Err(e) = beat.complete(sent).await {
                        if matches!(e, BeatError::LostLease) {
                            recheck.notify_one();
                            return "lost the lease";
                        }
                        tracing::warn!(
                            "cannot record sent runs (kept for the next write): {}",
                            one_line(&e)
                        );
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
                Some(entries) = file_rx.recv() => {
                    *file_entries = entries.clone();
                    unapplied = Some(entries);
                    let now = self.clock.now();
                    if apply_file(beat, &mut unapplied, &mut file_warned, now).await.is_err() {
                        recheck.notify_one();
                        return "lost the lease";
                    }
                }
                _ = poll.tick() => {
                    let now = self.clock.now();
                    if apply_file(beat, &mut unapplied, &mut file_warned, now).await.is_err() {
                        recheck.notify_one();
                        return "lost the lease";
                    }
                    match beat.poll_changes(self.clock.now()).await {
                        Ok(_) => db_failing = false,
                        Err(BeatError::LostLease) => {
                            recheck.notify_one();
                            return "lost the lease";
                        }
                        Err(e) if !db_failing => {
                            db_failing = true;
                            tracing::warn!(
                                "cannot read schedule changes: {}",
                                one_line(&e)
                            );
                        }
                        Err(_) => {}
                    }
                }
            }
            let now = self.clock.now();
            if beat.next_tick().is_some_and(|at| at <= now) {
                match beat.prepare(now).await {
                    Ok(Some(batch)) => {
                        in_flight += 1;
                        let sending = beat.send(batch);
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let _ = done.send(sending.await);
                        });
                    }
                    Ok(None) => {}
                    Err(BeatError::LostLease) => {
                        recheck.notify_one();
                        return "lost the lease";
                    }
                    Err(e) => tracing::warn!("tick failed, runs will be retried: {}", one_line(&e)),
                }
            }
        }
    }

    /// On shutdown: waits (up to the publish timeout) for batches being
    /// published and records them, so a clean stop leaves nothing to re-send.
    async fn drain(
        &self,
        beat: &mut Beat<Client>,
        done_rx: &mut mpsc::UnboundedReceiver<Sent>,
        mut in_flight: usize,
    ) {
        let deadline = tokio::time::Instant::now() + self.config.publish_timeout();
        while in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(sent)) => {
                    in_flight -= 1;
                    if let Err(e) = beat.complete(sent).await {
                        tracing::warn!("cannot record sent runs: {}", one_line(&e));
                    }
                }
                _ => break,
            }
        }
    }
}

const STOPPING: &str = "stopping";

/// Applies the schedule file in `unapplied`, if any. A failure other than
/// a lost lease keeps it there for the next poll (logged once until it
/// applies); `Err` only for the lost lease.
async fn apply_file(
    beat: &mut Beat<Client>,
    unapplied: &mut Option<ScheduleFile>,
    warned: &mut bool,
    now: DateTime<Utc>,
) -> Result<(), BeatError> {
    let Some(file) = unapplied.take() else {
        return Ok(());
    };
    match beat.apply_file(file.clone(), now).await {
        Ok(()) => {
            if std::mem::take(warned) {
                tracing::info!("schedule file change applied");
            }
            Ok(())
        }
        Err(BeatError::LostLease) => Err(BeatError::LostLease),
        Err(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!(
                    "schedule file change not fully applied, trying again: {}",
                    one_line(&e)
                );
            }
            *unapplied = Some(file);
            Ok(())
        }
    }
}
