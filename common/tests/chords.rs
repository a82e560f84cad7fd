//! The chord counter on SQLite, PostgreSQL and MariaDB: concurrent reports
//! complete a chord exactly once, a duplicate counts once, a failure claims
//! the chord once, and 10,000 members are counted quickly.

use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::chord::{
    ChordAction, ChordMember, ChordProgress, ChordState, NewChord,
};
use celeriac_common::testing::{DbKind, TestDatabase, unique};
use serde_json::json;
use std::time::{Duration, Instant};

async fn backend(kind: DbKind) -> (TestDatabase, ResultBackend) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = ResultBackend::connect(&db.url).await.expect("connect");
    backend.migrate().await.expect("migrate");
    (db, backend)
}

fn new_chord(size: u64) -> NewChord {
    NewChord {
        group_id: unique("g"),
        size,
        callback: json!({"task": "tasks.tsum", "args": [], "kwargs": {}, "options": {},
                         "subtask_type": null, "immutable": false}),
        callback_id: unique("cb"),
    }
}

fn member(chord: &NewChord, i: u32, ok: bool) -> ChordMember {
    ChordMember {
        group_id: chord.group_id.clone(),
        task_id: format!("{}-m{i}", chord.group_id),
        index: i,
        ok,
    }
}

fn claims(progress: &[Option<ChordProgress>]) -> usize {
    progress
        .iter()
        .flatten()
        .filter(|p| p.action() != ChordAction::Nothing)
        .count()
}

/// 50 members reported at once from 50 tasks over two pools (two
/// processes' worth of connections): one of them completes the chord.
async fn concurrent_reports_fire_once(kind: DbKind) {
    let (db, first) = backend(kind).await;
    let second = ResultBackend::connect(&db.url).await.expect("second pool");
    let chord = new_chord(50);
    assert!(first.create_chord(&chord).await.expect("create"));
    assert!(
        !first.create_chord(&chord).await.expect("again"),
        "idempotent"
    );
    let tasks = (0..50u32).map(|i| {
        let backend = if i % 2 == 0 { &first } else { &second }.clone();
        let m = member(&chord, i, true);
        tokio::spawn(async move {
            // Half the members report twice, as after a redelivery.
            let mut out = vec![backend.member_done(m.clone()).await.expect("report")];
            if i % 2 == 0 {
                out.push(backend.member_done(m).await.expect("report again"));
            }
            out
        })
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let claimants: Vec<_> = all
        .iter()
        .flatten()
        .filter(|p| p.action() == ChordAction::SendCallback)
        .map(|p| p.chord.fired_by.clone())
        .collect();
    assert!(!claimants.is_empty(), "someone completed the chord");
    assert!(
        claimants.windows(2).all(|w| w[0] == w[1]),
        "one member claimed it: {claimants:?}"
    );
    let record = first
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (50, ChordState::Complete));
    assert!(
        first
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    assert!(
        !first
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    let again = first
        .member_done(ChordMember {
            task_id: record.fired_by.clone().expect("fired_by"),
            ..member(&chord, 0, true)
        })
        .await
        .expect("report")
        .expect("chord");
    assert!(again.claimed, "the claimant is told again");
    assert_eq!(again.action(), ChordAction::Nothing, "but it was sent");
    let members = first.chord_members(&chord.group_id).await.expect("members");
    assert_eq!(members.len(), 50);
    assert!(members.iter().enumerate().all(|(i, m)| m.0 as usize == i));
    db.drop_database().await;
}

/// Duplicates, out of order, a failure, size 1 and an unknown chord.
async fn sequences(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    // Out of order, one duplicate: fires at the third distinct member.
    let chord = new_chord(3);
    backend.create_chord(&chord).await.expect("create");
    let mut fired = Vec::new();
    for i in [2, 2, 0, 1] {
        let p = backend
            .member_done(member(&chord, i, true))
            .await
            .expect("report")
            .expect("chord");
        fired.push(p.action());
    }
    use ChordAction::{FailCallback, Nothing, SendCallback};
    assert_eq!(fired, [Nothing, Nothing, Nothing, SendCallback]);

    // A failed member fails the chord once; later successes do not complete it.
    let chord = new_chord(3);
    backend.create_chord(&chord).await.expect("create");
    let batch = vec![
        member(&chord, 0, true),
        member(&chord, 1, false),
        member(&chord, 2, true),
    ];
    let progress = backend.members_done(batch.clone()).await.expect("batch");
    let actions: Vec<_> = progress.iter().flatten().map(|p| p.action()).collect();
    assert_eq!(actions, [Nothing, FailCallback, Nothing]);
    let progress = backend.members_done(batch).await.expect("batch again");
    assert_eq!(claims(&progress), 1, "redelivered claimant is told again");
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (3, ChordState::Failed));

    // Size 1.
    let chord = new_chord(1);
    backend.create_chord(&chord).await.expect("create");
    let p = backend
        .member_done(member(&chord, 0, true))
        .await
        .expect("report")
        .expect("chord");
    assert_eq!(p.action(), SendCallback);

    // No chord recorded (a chord sent by a client that keeps no counter here).
    let unknown = new_chord(1);
    assert!(
        backend
            .member_done(member(&unknown, 0, true))
            .await
            .expect("report")
            .is_none()
    );
    // An empty header is refused.
    assert!(backend.create_chord(&new_chord(0)).await.is_err());
    db.drop_database().await;
}

/// 10,000 members, reported in batches of 100 from 4 tasks at once.
async fn ten_thousand_members(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    let chord = new_chord(10_000);
    backend.create_chord(&chord).await.expect("create");
    let started = Instant::now();
    let workers = (0..4u32).map(|w| {
        let backend = backend.clone();
        let members: Vec<_> = (0..10_000u32)
            .filter(|i| i % 4 == w)
            .map(|i| member(&chord, i, true))
            .collect();
        tokio::spawn(async move {
            let mut claimed = 0;
            for batch in members.chunks(100) {
                let p = backend.members_done(batch.to_vec()).await.expect("batch");
                claimed += claims(&p);
            }
            claimed
        })
    });
    let mut claimed = 0;
    for w in workers {
        claimed += w.await.expect("task");
    }
    let took = started.elapsed();
    eprintln!("{kind:?}: 10,000 members counted in {took:?}");
    assert_eq!(claimed, 1);
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (10_000, ChordState::Complete));
    assert!(took < Duration::from_secs(60), "took {took:?}");
    db.drop_database().await;
}

macro_rules! on_each_database {
    ($($name:ident),*) => {
        mod sqlite { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DbKind::Sqlite).await } )* }
        mod postgres { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DbKind::Postgres).await } )* }
        mod mysql { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DbKind::Mysql).await } )* }
    };
}

on_each_database!(
    concurrent_reports_fire_once,
    sequences,
    ten_thousand_members
);
