//! The scheduler driven step by step with exact instants (no sleeping),
//! against a real SQLite database and a recording publisher: misfire,
//! coalesce, max_instances, run state across restarts, run-now, changes
//! made through the store, fencing, and the nights clocks change (the beat
//! sends what `preview` prints; a failover in the repeated hour sends no
//! second run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac_beat::clock::FakeClock;
use celeriac_beat::error::BeatError;
use celeriac_beat::events::{BeatEvent, EventKind, Events};
use celeriac_beat::firing::beat::{Beat, BeatParts};
use celeriac_beat::firing::dispatch::{DispatchError, Publisher, RunMessage, task_id};
use celeriac_beat::firing::run_state;
use celeriac_beat::leadership::lease::{Fence, Lease, LeaseStatus};
use celeriac_beat::schedule::entry::{Entry, Firing, Grace, Source};
use celeriac_beat::schedule::store::Store;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::backend::TaskOutcome;
use celeriac_common::testing::{DbKind, TestDatabase};
use celeriac_common::{ResultBackend, TaskState};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::sync::broadcast;

#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<RunMessage>>,
    failing: AtomicBool,
}

impl Publisher for Recorder {
    async fn publish(&self, run: &RunMessage) -> Result<(), DispatchError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DispatchError {
                entry: run.entry.clone(),
                task_id: run.task_id,
                source: "broker down".into(),
            });
        }
        self.sent.lock().unwrap().push(run.clone());
        Ok(())
    }
}

impl Recorder {
    fn times(&self, entry: &str) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.entry == entry)
            .map(|m| celeriac_beat::clock::format_instant(m.fire_at))
            .collect()
    }
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn every(secs: u64) -> TriggerSpec {
    TriggerSpec::Interval {
        weeks: None,
        days: None,
        hours: None,
        minutes: None,
        seconds: Some(secs),
        every: None,
        start_date: None,
        end_date: None,
        jitter_seconds: None,
        timezone: None,
        calendars: Vec::new(),
    }
}

/// A file entry (anchored at the epoch): `every 10s` fires at :00, :10, ...
fn entry(name: &str, trigger: TriggerSpec) -> Entry {
    let mut e = Entry::new(name, "tasks.t", trigger);
    e.source = Source::File;
    e
}

struct World {
    _db: TestDatabase,
    backend: ResultBackend,
    store: Store,
    recorder: Arc<Recorder>,
    clock: Arc<FakeClock>,
    events: Events,
}

impl World {
    async fn new() -> World {
        let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
        let backend = db.migrated_backend().await.expect("migrated backend");
        World {
            store: Store::new(backend.connection().clone()),
            backend,
            _db: db,
            recorder: Arc::new(Recorder::default()),
            clock: Arc::new(FakeClock::new(t("2024-01-01T00:00:00Z"))),
            events: Events::new(),
        }
    }

    async fn fence(&self, holder: &str) -> Fence {
        let lease = Lease::new(
            self.backend.connection().clone(),
            holder,
            Duration::from_secs(600),
        );
        match lease.try_acquire().await.unwrap() {
            LeaseStatus::Held(f) => f,
            other => panic!("{other:?}"),
        }
    }

    /// A beat as a freshly started leader would load it at `now`.
    async fn beat(&self, holder: &str, entries: Vec<Entry>, now: &str) -> Beat<Recorder> {
        self.clock.set(t(now));
        let parts = BeatParts {
            store: self.store.clone(),
            publisher: self.recorder.clone(),
            events: self.events.clone(),
            clock: self.clock.clone(),
            fence: self.fence(holder).await,
            defaults: Firing::default(),
        };
        let mut beat = Beat::load(parts, entries, t(now)).await.unwrap();
        // Exact instants: nothing is prepared ahead unless a test asks.
        beat.set_prepare_ahead(Duration::ZERO);
        beat
    }

    async fn tick(
        &self,
        beat: &mut Beat<Recorder>,
        now: &str,
    ) -> celeriac_beat::firing::beat::TickReport {
        self.clock.set(t(now));
        beat.tick(t(now)).await.unwrap()
    }
}

fn drain(rx: &mut broadcast::Receiver<BeatEvent>) -> Vec<BeatEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test]
async fn fires_on_time_and_wakes_exactly_when_due() {
    let w = World::new().await;
    let mut beat = w
        .beat("a", vec![entry("e", every(10))], "2024-01-01T00:00:03Z")
        .await;
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:00:10Z")));
    assert_eq!(w.tick(&mut beat, "2024-01-01T00:00:09.999Z").await.sent, 0);
    assert_eq!(w.tick(&mut beat, "2024-01-01T00:00:10Z").await.sent, 1);
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:00:20Z")));
    w.tick(&mut beat, "2024-01-01T00:00:20.001Z").await;
    assert_eq!(
        w.recorder.times("e"),
        ["2024-01-01T00:00:10Z", "2024-01-01T00:00:20Z"]
    );
    let sent = w.recorder.sent.lock().unwrap().clone();
    assert_eq!(sent[0].task_id, task_id("e", t("2024-01-01T00:00:10Z")));
    let state = run_state::load_one(w.store.db(), "e")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.total_runs, 2);
    assert_eq!(state.last_run_at, Some(t("2024-01-01T00:00:20Z")));
    assert_eq!(state.next_run_at, Some(t("2024-01-01T00:00:30Z")));
    assert_eq!(state.sending_at, None);
}

#[tokio::test]
async fn runs_are_recorded_ahead_and_sent_when_due() {
    let w = World::new().await;
    let mut beat = w
        .beat("a", vec![entry("e", every(10))], "2024-01-01T00:00:03Z")
        .await;
    beat.set_prepare_ahead(Duration::from_millis(200));
    assert_eq!(beat.next_tick(), Some(t("2024-01-01T00:00:09.8Z")));
    let started = std::time::Instant::now();
    // 150 ms early: decided and recorded now, published once due.
    assert_eq!(w.tick(&mut beat, "2024-01-01T00:00:09.85Z").await.sent, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "published before it was due"
    );
    assert_eq!(w.recorder.times("e"), ["2024-01-01T00:00:10Z"]);
    assert_eq!(beat.next_tick(), Some(t("2024-01-01T00:00:19.8Z")));
}

#[tokio::test]
async fn backlog_follows_misfire_and_coalesce_rules() {
    let w = World::new().await;
    let mut rx = w.events.subscribe();
    let mut each = entry("each", every(10));
    each.firing.coalesce = Some(false);
    each.firing.misfire_grace = Some(Grace::Within(Duration::from_secs(25)));
    let mut once = entry("once", every(10));
    once.firing.coalesce = Some(true);
    let mut strict = entry("strict", every(10));
    strict.firing.misfire_grace = Some(Grace::Within(Duration::from_secs(1)));
    let mut beat = w
        .beat("a", vec![each, once, strict], "2024-01-01T00:00:05Z")
        .await;
    // Nothing runs until 01:05: the beat was "down" for a minute.
    let mut now = t("2024-01-01T00:01:05Z");
    for _ in 0..10 {
        w.clock.set(now);
        beat.tick(now).await.unwrap();
        now += TimeDelta::milliseconds(1);
    }
    // each: 10, 20, 30 are later than 25 s; 40..60 are sent one by one.
    assert_eq!(
        w.recorder.times("each"),
        [
            "2024-01-01T00:00:40Z",
            "2024-01-01T00:00:50Z",
            "2024-01-01T00:01:00Z"
        ]
    );
    // once: the backlog 10..60 is one run, the latest.
    assert_eq!(w.recorder.times("once"), ["2024-01-01T00:01:00Z"]);
    // strict: even the latest is 5 s late with a 1 s grace: all missed.
    assert!(w.recorder.times("strict").is_empty());
    let events = drain(&mut rx);
    let kinds = |entry: &str, kind: EventKind| {
        events
            .iter()
            .filter(|e| e.entry.as_deref() == Some(entry) && e.kind == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds("each", EventKind::Missed)[0].count, Some(3));
    assert_eq!(kinds("once", EventKind::Coalesced)[0].count, Some(5));
    assert_eq!(kinds("strict", EventKind::Missed)[0].count, Some(6));
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:01:10Z")));
}

#[tokio::test]
async fn a_run_cut_by_a_crash_is_resent_with_the_same_id() {
    let w = World::new().await;
    let mut first = w
        .beat("a", vec![entry("e", every(10))], "2024-01-01T00:00:01Z")
        .await;
    w.tick(&mut first, "2024-01-01T00:00:10Z").await;
    // The broker fails at 00:20: the run is marked as being sent, not sent.
    w.recorder.failing.store(true, Ordering::SeqCst);
    let report = w.tick(&mut first, "2024-01-01T00:00:20Z").await;
    assert_eq!(report.failed, 1);
    let state = run_state::load_one(w.store.db(), "e")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.sending_at, Some(t("2024-01-01T00:00:20Z")));
    // The beat dies; another one takes over (the lease expired).
    drop(first);
    w.recorder.failing.store(false, Ordering::SeqCst);
    sea_orm::ConnectionTrait::execute_unprepared(
        w.store.db(),
        "UPDATE celeriac_beat_lease SET expires_at_ms = 0",
    )
    .await
    .unwrap();
    let mut rx = w.events.subscribe();
    let mut second = w
        .beat("b", vec![entry("e", every(10))], "2024-01-01T00:00:21Z")
        .await;
    w.tick(&mut second, "2024-01-01T00:00:21Z").await;
    w.tick(&mut second, "2024-01-01T00:00:30Z").await;
    assert_eq!(
        w.recorder.times("e"),
        [
            "2024-01-01T00:00:10Z",
            "2024-01-01T00:00:20Z",
            "2024-01-01T00:00:30Z"
        ]
    );
    let sent = w.recorder.sent.lock().unwrap().clone();
    assert_eq!(sent[1].task_id, task_id("e", t("2024-01-01T00:00:20Z")));
    assert!(drain(&mut rx).iter().any(|e| e.kind == EventKind::Resent));
    // A restart after a clean send repeats nothing.
    let mut third = {
        sea_orm::ConnectionTrait::execute_unprepared(
            w.store.db(),
            "UPDATE celeriac_beat_lease SET expires_at_ms = 0",
        )
        .await
        .unwrap();
        w.beat("c", vec![entry("e", every(10))], "2024-01-01T00:00:31Z")
            .await
    };
    assert_eq!(w.tick(&mut third, "2024-01-01T00:00:31Z").await.sent, 0);
    assert_eq!(third.next_wake(), Some(t("2024-01-01T00:00:40Z")));
}

#[tokio::test]
async fn a_resume_counts_from_when_it_was_made_not_when_it_was_seen() {
    let w = World::new().await;
    let mut beat = w.beat("a", vec![], "2024-01-01T00:00:00Z").await;
    let e = Entry::new("db", "tasks.db", every(10));
    w.store.add(&e, t("2024-01-01T00:00:00Z")).await.unwrap();
    w.store
        .set_enabled("db", false, t("2024-01-01T00:00:01Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:01Z")).await.unwrap();
    // Resumed 0.1 s before a fire time, seen 0.1 s after it: that fire
    // is sent, not skipped to the next one.
    w.store
        .set_enabled("db", true, t("2024-01-01T00:00:19.9Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:20.1Z"))
        .await
        .unwrap();
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:00:20Z")));
    w.tick(&mut beat, "2024-01-01T00:00:20.2Z").await;
    assert_eq!(w.recorder.times("db"), ["2024-01-01T00:00:20Z"]);
    // A change written by a clock a minute slow counts from 10 s before it
    // was seen at most: of the paused stretch, only a fire in those 10 s
    // (00:01:00) can come back, not 00:00:30, 00:00:40 or 00:00:50.
    w.store
        .set_enabled("db", false, t("2024-01-01T00:00:21Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:21Z")).await.unwrap();
    w.store
        .set_enabled("db", true, t("2024-01-01T00:00:05Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:01:05Z")).await.unwrap();
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:01:00Z")));
}

/// Paused and resumed while no beat leads: the beat that loads the entry
/// next counts from the resume too, not from before the pause (a fire of
/// the paused stretch within the misfire grace was sent at load).
#[tokio::test]
async fn a_resume_while_no_beat_leads_counts_from_when_it_was_made() {
    let w = World::new().await;
    // "ran" has a run state: a beat sent its 00:00:10 run, then stopped.
    let ran = Entry::new("ran", "tasks.db", every(10));
    w.store.add(&ran, t("2024-01-01T00:00:00Z")).await.unwrap();
    let mut first = w.beat("a", vec![], "2024-01-01T00:00:05Z").await;
    w.tick(&mut first, "2024-01-01T00:00:10.1Z").await;
    drop(first);
    // "fresh" never had one: added (fires at :01, :11, ...) and paused
    // while no beat leads.
    let fresh = Entry::new("fresh", "tasks.db", every(10));
    w.store
        .add(&fresh, t("2024-01-01T00:00:11Z"))
        .await
        .unwrap();
    for name in ["ran", "fresh"] {
        w.store
            .set_enabled(name, false, t("2024-01-01T00:00:12Z"))
            .await
            .unwrap();
        w.store
            .set_enabled(name, true, t("2024-01-01T00:05:05Z"))
            .await
            .unwrap();
    }
    let mut beat = w.beat("a", vec![], "2024-01-01T00:05:06Z").await;
    // 00:05:00 and 00:05:01 fell in the paused stretch, within the grace:
    // not sent.
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:05:10Z")));
    w.tick(&mut beat, "2024-01-01T00:05:11.1Z").await;
    assert_eq!(
        w.recorder.times("ran"),
        ["2024-01-01T00:00:10Z", "2024-01-01T00:05:10Z"]
    );
    assert_eq!(w.recorder.times("fresh"), ["2024-01-01T00:05:11Z"]);
}

#[tokio::test]
async fn a_database_entry_hidden_by_a_file_entry_returns_when_it_is_removed() {
    let w = World::new().await;
    let db_entry = Entry::new("x", "tasks.db", every(10));
    w.store
        .add(&db_entry, t("2024-01-01T00:00:00Z"))
        .await
        .unwrap();
    let mut beat = w
        .beat("a", vec![entry("x", every(60))], "2024-01-01T00:00:01Z")
        .await;
    assert_eq!(beat.scheduler().entry("x").unwrap().source, Source::File);
    // The file entry goes while the database cannot be read: nothing
    // changes, so trying again later still finds the database entry.
    let db = w.store.db();
    let rename = |sql: &'static str| async move {
        sea_orm::ConnectionTrait::execute_unprepared(db, sql)
            .await
            .unwrap();
    };
    rename("ALTER TABLE celeriac_beat_entries RENAME TO hidden_entries").await;
    let now = t("2024-01-01T00:00:02Z");
    assert!(beat.apply_file(Vec::<Entry>::new(), now).await.is_err());
    assert_eq!(beat.scheduler().entry("x").unwrap().source, Source::File);
    rename("ALTER TABLE hidden_entries RENAME TO celeriac_beat_entries").await;
    beat.apply_file(Vec::<Entry>::new(), now).await.unwrap();
    let x = beat.scheduler().entry("x").expect("the database entry");
    assert_eq!(x.source, Source::Database);
    w.tick(&mut beat, "2024-01-01T00:00:10Z").await;
    assert_eq!(w.recorder.times("x"), ["2024-01-01T00:00:10Z"]);
}

#[tokio::test]
async fn numbers_edited_into_a_row_stop_nothing() {
    // Too long for a Duration (misfire grace, expiry) or negative: read
    // without a panic, at the load and at each run.
    let w = World::new().await;
    let mut e = Entry::new("db", "tasks.db", every(10));
    e.firing.max_instances = Some(5);
    w.store.add(&e, t("2024-01-01T00:00:00.5Z")).await.unwrap();
    let edit = |sql: &'static str| async {
        sea_orm::ConnectionTrait::execute_unprepared(w.store.db(), sql)
            .await
            .unwrap();
    };
    edit(
        "UPDATE celeriac_beat_entries SET misfire_grace_secs = 1e20, \
         options = '{\"expires_secs\": -1}'",
    )
    .await;
    let mut beat = w.beat("a", vec![], "2024-01-01T00:00:01Z").await;
    w.tick(&mut beat, "2024-01-01T00:00:10Z").await;
    // A modify through the store (it bumps the version) with an expiry
    // of 1e20 s: valid, finite and positive.
    e.options.expires_secs = Some(1e20);
    w.store.modify(&e, t("2024-01-01T00:00:11Z")).await.unwrap();
    beat.poll_changes(t("2024-01-01T00:00:11Z")).await.unwrap();
    w.tick(&mut beat, "2024-01-01T00:00:20Z").await;
    w.tick(&mut beat, "2024-01-01T00:00:30Z").await;
    assert_eq!(
        w.recorder.times("db"),
        [
            "2024-01-01T00:00:10Z",
            "2024-01-01T00:00:20Z",
            "2024-01-01T00:00:30Z"
        ]
    );
}

#[tokio::test]
async fn a_fenced_off_beat_sends_nothing() {
    let w = World::new().await;
    let mut old = w
        .beat("a", vec![entry("e", every(10))], "2024-01-01T00:00:01Z")
        .await;
    sea_orm::ConnectionTrait::execute_unprepared(
        w.store.db(),
        "UPDATE celeriac_beat_lease SET expires_at_ms = 0",
    )
    .await
    .unwrap();
    let _new = w.fence("b").await;
    w.clock.set(t("2024-01-01T00:00:10Z"));
    let err = old
        .tick(t("2024-01-01T00:00:10Z"))
        .await
        .expect_err("fenced off");
    assert!(matches!(err, BeatError::LostLease));
    assert!(w.recorder.times("e").is_empty());
}

#[tokio::test]
async fn max_instances_holds_runs_until_the_backend_shows_them_finished() {
    let w = World::new().await;
    let mut rx = w.events.subscribe();
    let mut e = entry("slow", every(10));
    e.firing.max_instances = Some(1);
    let mut beat = w.beat("a", vec![e], "2024-01-01T00:00:01Z").await;
    w.tick(&mut beat, "2024-01-01T00:00:10Z").await;
    let report = w.tick(&mut beat, "2024-01-01T00:00:20Z").await;
    assert_eq!(report.held, 1);
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| e.kind == EventKind::Held && e.count == Some(1))
    );
    // The first run finishes: the next one goes out.
    let id = task_id("slow", t("2024-01-01T00:00:10Z")).to_string();
    w.backend
        .store(vec![TaskOutcome::new(id, "tasks.t", TaskState::Success)])
        .await
        .unwrap();
    w.tick(&mut beat, "2024-01-01T00:00:30Z").await;
    assert_eq!(
        w.recorder.times("slow"),
        ["2024-01-01T00:00:10Z", "2024-01-01T00:00:30Z"]
    );
}

#[tokio::test]
async fn store_changes_and_run_now_are_picked_up() {
    let w = World::new().await;
    let mut beat = w.beat("a", vec![], "2024-01-01T00:00:00Z").await;
    let mut e = Entry::new("db", "tasks.db", every(10));
    w.store.add(&e, t("2024-01-01T00:00:00.5Z")).await.unwrap();
    assert!(beat.poll_changes(t("2024-01-01T00:00:01Z")).await.unwrap());
    assert!(
        !beat.poll_changes(t("2024-01-01T00:00:01Z")).await.unwrap(),
        "no change, no reload"
    );
    // Anchored at its creation second: 00:00:10, 00:00:20, ...
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:00:10Z")));
    w.store
        .set_enabled("db", false, t("2024-01-01T00:00:02Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:02Z")).await.unwrap();
    assert_eq!(beat.next_wake(), None);
    w.store
        .set_enabled("db", true, t("2024-01-01T00:00:45Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:45Z")).await.unwrap();
    assert_eq!(
        beat.next_wake(),
        Some(t("2024-01-01T00:00:50Z")),
        "resumed from now, paused runs are not sent"
    );
    w.store
        .request_run_now("db", t("2024-01-01T00:00:46Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:46Z")).await.unwrap();
    w.tick(&mut beat, "2024-01-01T00:00:46.2Z").await;
    assert_eq!(w.recorder.times("db"), ["2024-01-01T00:00:46Z"]);
    let state = run_state::load_one(w.store.db(), "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.run_now_at, None);
    assert_eq!(state.total_runs, 1);
    e.trigger = every(30);
    w.store.modify(&e, t("2024-01-01T00:00:47Z")).await.unwrap();
    beat.poll_changes(t("2024-01-01T00:00:47Z")).await.unwrap();
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:01:17Z")));
    w.store
        .remove("db", t("2024-01-01T00:00:48Z"))
        .await
        .unwrap();
    beat.poll_changes(t("2024-01-01T00:00:48Z")).await.unwrap();
    assert_eq!(beat.next_wake(), None);
    assert!(beat.scheduler().is_empty());
}

#[tokio::test]
async fn a_date_entry_fires_once_and_is_done() {
    let w = World::new().await;
    let mut rx = w.events.subscribe();
    let once = entry(
        "once",
        TriggerSpec::Date {
            run_at: "2024-01-01T01:00:30+01:00".parse().unwrap(),
        },
    );
    let mut beat = w.beat("a", vec![once], "2024-01-01T00:00:01Z").await;
    assert_eq!(beat.next_wake(), Some(t("2024-01-01T00:00:30Z")));
    w.tick(&mut beat, "2024-01-01T00:00:30Z").await;
    assert_eq!(w.recorder.times("once"), ["2024-01-01T00:00:30Z"]);
    assert_eq!(beat.next_wake(), None);
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| e.kind == EventKind::Done && e.entry.as_deref() == Some("once"))
    );
    let state = run_state::load_one(w.store.db(), "once")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.next_run_at, None);
    assert_eq!(state.total_runs, 1);
}

/// A file entry with a `cron` or `fields` trigger given as JSON.
fn calendar_entry(name: &str, trigger: serde_json::Value) -> Entry {
    entry(name, TriggerSpec::from_json(&trigger).unwrap())
}

impl World {
    /// Runs `beat` as the service does on the fake clock: from wake to wake
    /// (each tick exactly when the next run is due) up to `until`.
    async fn run_until(&self, beat: &mut Beat<Recorder>, until: DateTime<Utc>) {
        for _ in 0..10_000 {
            let Some(wake) = beat.next_wake().filter(|w| *w <= until) else {
                return;
            };
            self.clock.set(wake);
            beat.tick(wake).await.unwrap();
        }
        panic!("the beat kept waking up before {until}");
    }
}

/// What `preview` prints for the entry's trigger in `(from, until]`, as the
/// recorder shows sent runs.
fn previewed(e: &Entry, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
    let trigger = e.compile().unwrap();
    celeriac_beat::trigger::preview(&trigger, from, 100)
        .into_iter()
        .map(|t| t.to_utc())
        .take_while(|t| *t <= until)
        .map(celeriac_beat::clock::format_instant)
        .collect()
}

#[tokio::test]
async fn across_dst_changes_the_beat_sends_what_preview_prints() {
    // (zone, start, end): the nights clocks change in 2026.
    let nights = [
        (
            "America/New_York",
            "2026-03-07T20:00:00Z",
            "2026-03-09T12:00:00Z",
        ),
        (
            "America/New_York",
            "2026-10-31T20:00:00Z",
            "2026-11-02T12:00:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            "2026-03-30T06:00:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            "2026-10-26T06:00:00Z",
        ),
    ];
    for (zone, from, until) in nights {
        let w = World::new().await;
        let cron = |expr: &str| json!({"type": "cron", "expr": expr, "timezone": zone});
        let mut repeat = cron("30 1 * * *");
        repeat["dst"] = json!("repeat");
        let entries = vec![
            calendar_entry("fixed-130", cron("30 1 * * *")),
            calendar_entry("fixed-230", cron("30 2 * * *")),
            calendar_entry("fixed-2-quarters", cron("*/15 2 * * *")),
            calendar_entry("fixed-1-halves", cron("*/30 1 * * *")),
            calendar_entry("hourly", cron("0 * * * *")),
            calendar_entry(
                "fields-230",
                json!({"type": "fields", "hour": 2, "minute": 30, "timezone": zone}),
            ),
            calendar_entry(
                "fields-every-hour",
                json!({"type": "fields", "minute": 0, "timezone": zone}),
            ),
            calendar_entry("repeat-130", repeat),
        ];
        let mut beat = w.beat("a", entries.clone(), from).await;
        w.run_until(&mut beat, t(until)).await;
        for e in &entries {
            let sent = w.recorder.times(&e.name);
            assert!(!sent.is_empty(), "{} in {zone}", e.name);
            assert_eq!(
                sent,
                previewed(e, t(from), t(until)),
                "{} in {zone} from {from}",
                e.name
            );
        }
    }
}

#[tokio::test]
async fn the_nightly_job_runs_once_on_the_night_clocks_go_back() {
    let w = World::new().await;
    let nightly = calendar_entry(
        "nightly",
        json!({"type": "cron", "expr": "30 1 * * *", "timezone": "America/New_York"}),
    );
    let mut beat = w
        .beat("a", vec![nightly.clone()], "2026-10-31T12:00:00Z")
        .await;
    w.run_until(&mut beat, t("2026-11-02T12:00:00Z")).await;
    // 01:30 EDT on the 1st (05:30Z), then 01:30 EST on the 2nd (06:30Z).
    assert_eq!(
        w.recorder.times("nightly"),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

/// The lease of the dead leader has expired.
async fn expire_lease(w: &World) {
    sea_orm::ConnectionTrait::execute_unprepared(
        w.store.db(),
        "UPDATE celeriac_beat_lease SET expires_at_ms = 0",
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failover_in_the_repeated_hour_does_not_send_the_run_again() {
    let nightly = || {
        calendar_entry(
            "nightly",
            json!({"type": "cron", "expr": "30 1 * * *", "timezone": "America/New_York"}),
        )
    };
    let first_pass = t("2026-11-01T05:30:00Z"); // 01:30 EDT
    // A sends the 01:30 EDT run and dies at 01:10 EST; B takes over then.
    let w = World::new().await;
    let mut a = w.beat("a", vec![nightly()], "2026-11-01T05:00:00Z").await;
    w.run_until(&mut a, t("2026-11-01T06:10:00Z")).await;
    drop(a);
    expire_lease(&w).await;
    let mut b = w.beat("b", vec![nightly()], "2026-11-01T06:10:00Z").await;
    assert_eq!(b.next_wake(), Some(t("2026-11-02T06:30:00Z")));
    w.run_until(&mut b, t("2026-11-02T12:00:00Z")).await;
    assert_eq!(
        w.recorder.times("nightly"),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );

    // A is cut while sending the 01:30 EDT run (broker down) and dies; B,
    // taking over in the repeated hour, re-sends that run with the same id
    // and sends no 01:30 EST run.
    let w = World::new().await;
    let mut a = w.beat("a", vec![nightly()], "2026-11-01T05:00:00Z").await;
    w.recorder.failing.store(true, Ordering::SeqCst);
    assert_eq!(w.tick(&mut a, "2026-11-01T05:30:00Z").await.failed, 1);
    drop(a);
    w.recorder.failing.store(false, Ordering::SeqCst);
    expire_lease(&w).await;
    let mut b = w.beat("b", vec![nightly()], "2026-11-01T06:10:00Z").await;
    w.tick(&mut b, "2026-11-01T06:10:00Z").await;
    w.run_until(&mut b, t("2026-11-01T12:00:00Z")).await;
    let sent = w.recorder.sent.lock().unwrap().clone();
    let ids: Vec<_> = sent.iter().map(|m| m.task_id).collect();
    assert_eq!(ids, [task_id("nightly", first_pass)], "{sent:?}");
}

#[tokio::test]
async fn with_dst_repeat_the_second_pass_is_a_run_of_its_own() {
    // Today's behaviour, kept behind dst = "repeat": B sends 01:30 EST too,
    // as a different run (its own instant, its own id).
    let nightly = calendar_entry(
        "nightly",
        json!({
            "type": "cron", "expr": "30 1 * * *", "timezone": "America/New_York",
            "dst": "repeat"
        }),
    );
    let w = World::new().await;
    let mut a = w
        .beat("a", vec![nightly.clone()], "2026-11-01T05:00:00Z")
        .await;
    w.run_until(&mut a, t("2026-11-01T06:10:00Z")).await;
    drop(a);
    expire_lease(&w).await;
    let mut b = w.beat("b", vec![nightly], "2026-11-01T06:10:00Z").await;
    w.run_until(&mut b, t("2026-11-01T12:00:00Z")).await;
    assert_eq!(
        w.recorder.times("nightly"),
        ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"]
    );
    let sent = w.recorder.sent.lock().unwrap().clone();
    assert_ne!(sent[0].task_id, sent[1].task_id);
}

/// Issue #22: a running beat skips excluded dates, follows calendar
/// changes made in the database while it runs, and a calendar removed while
/// still named counts as empty (the entry fires again on every date).
#[tokio::test]
async fn skips_excluded_dates_and_follows_calendar_changes() {
    use celeriac_beat::schedule::file_source::ScheduleFile;
    use celeriac_beat::schedule::holidays::CalendarDay;
    use celeriac_beat::trigger::DateRange;

    let w = World::new().await;
    let weekdays = TriggerSpec::from_json(&json!({
        "type": "cron", "expr": "0 9 * * 1-5", "timezone": "America/New_York",
        "calendars": ["office", "us-holidays"]
    }))
    .unwrap();
    let day = |name: &str, range: &str| CalendarDay {
        calendar: name.into(),
        range: DateRange::parse(range).unwrap(),
        label: None,
        source: Source::File,
    };
    let file = ScheduleFile {
        entries: vec![entry("payroll", weekdays)],
        calendar_days: vec![day("us-holidays", "2026-12-25")],
    };
    let mut beat = w.beat("a", Vec::new(), "2026-12-23T00:00:00Z").await;
    // "office" is defined nowhere yet: a warning, and it excludes nothing.
    beat.apply_file(file.clone(), t("2026-12-23T00:00:00Z"))
        .await
        .unwrap();
    for now in [
        "2026-12-23T14:00:00Z",
        "2026-12-24T14:00:00Z",
        "2026-12-25T14:00:00Z",
    ] {
        w.tick(&mut beat, now).await;
    }
    // Friday 25 December is Christmas: next is Monday 28.
    assert_eq!(beat.next_wake(), Some(t("2026-12-28T14:00:00Z")));
    // The database's "office" calendar closes Monday and Tuesday.
    w.store
        .add_calendar_days(
            "office",
            &[(DateRange::parse("2026-12-28..2026-12-29").unwrap(), None)],
            t("2026-12-25T15:00:00Z"),
        )
        .await
        .unwrap();
    assert!(beat.poll_changes(t("2026-12-25T15:00:01Z")).await.unwrap());
    assert_eq!(beat.next_wake(), Some(t("2026-12-30T14:00:00Z")));
    // Removed again (as `calendar remove --force` does): Monday is back.
    assert_eq!(w.store.remove_calendar("office", None).await.unwrap(), 1);
    assert!(beat.poll_changes(t("2026-12-25T15:00:02Z")).await.unwrap());
    assert_eq!(beat.next_wake(), Some(t("2026-12-28T14:00:00Z")));
    // The file's calendar changes on reload: Monday becomes a holiday.
    let mut reloaded = file;
    reloaded
        .calendar_days
        .push(day("us-holidays", "2026-12-28"));
    beat.apply_file(reloaded, t("2026-12-25T15:00:03Z"))
        .await
        .unwrap();
    assert_eq!(beat.next_wake(), Some(t("2026-12-29T14:00:00Z")));
    w.tick(&mut beat, "2026-12-29T14:00:00Z").await;
    assert_eq!(
        w.recorder.times("payroll"),
        [
            "2026-12-23T14:00:00Z",
            "2026-12-24T14:00:00Z",
            "2026-12-29T14:00:00Z"
        ]
    );
}

/// Loading reads the database schedule page by page (2,000 entries a
/// page), with each page's run states in one range of names: every entry
/// and every stored state arrives, across page boundaries, and a file
/// entry shadows the database entry of the same name.
#[tokio::test]
async fn a_schedule_of_several_pages_loads_every_entry_with_its_state() {
    let w = World::new().await;
    let now = t("2024-01-01T00:00:00Z");
    let n = 4_500;
    let name = |i: usize| format!("db-{i:05}");
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry::new(name(i), "tasks.t", every(3600)))
        .collect();
    w.store.add_many(&entries, now).await.unwrap();
    // States for every seventh entry, each with its own count; some sit on
    // the first and last names of a page (1999, 2000, 3999, 4000).
    let stored: Vec<usize> = (0..n)
        .filter(|i| i % 7 == 0 || [1999, 2000, 3999, 4000].contains(i))
        .collect();
    let states: Vec<(String, run_state::RunState)> = stored
        .iter()
        .map(|&i| {
            let state = run_state::RunState {
                total_runs: i as i64 + 1,
                ..Default::default()
            };
            (name(i), state)
        })
        .collect();
    let rows: Vec<(&str, &run_state::RunState)> =
        states.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let fence = w.fence("loader").await;
    run_state::save(w.store.db(), &fence, &rows, &[], now)
        .await
        .unwrap();
    let shadowing = entry(&name(2000), every(10));
    let beat = w
        .beat("loader", vec![shadowing], "2024-01-01T00:00:00Z")
        .await;
    let scheduler = beat.scheduler();
    assert_eq!(scheduler.len(), n, "every entry, the shadowed one once");
    for i in 0..n {
        let state = scheduler.row(&name(i)).expect("a state");
        // State goes by name: the file entry takes the stored one too.
        let want = if stored.contains(&i) { i as i64 + 1 } else { 0 };
        assert_eq!(state.total_runs, want, "{}", name(i));
    }
    let file = scheduler.entry(&name(2000)).expect("the file entry");
    assert_eq!(file.source, Source::File, "the file entry wins");
}
