//! The leader lease and its fencing on SQLite, PostgreSQL and MySQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use celeriac_beat::firing::run_state::{self, RunState, SaveError};
use celeriac_beat::leadership::lease::{Lease, LeaseStatus, check_fence};
use celeriac_common::testing::{DbKind, TestDatabase};
use chrono::Utc;
use sea_orm::{DatabaseConnection, TransactionTrait};

async fn database(kind: DbKind) -> (TestDatabase, DatabaseConnection) {
    let db = TestDatabase::create(kind).await.unwrap();
    let backend = db.migrated_backend().await.expect("migrated backend");
    let conn = backend.connection().clone();
    (db, conn)
}

fn held(status: LeaseStatus) -> celeriac_beat::leadership::lease::Fence {
    match status {
        LeaseStatus::Held(f) => f,
        other => panic!("expected to hold the lease, got {other:?}"),
    }
}

async fn fence_ok(
    conn: &DatabaseConnection,
    fence: &celeriac_beat::leadership::lease::Fence,
) -> bool {
    let txn = conn.begin().await.unwrap();
    let ok = check_fence(&txn, fence).await.unwrap();
    txn.rollback().await.unwrap();
    ok
}

async fn lease_lifecycle(kind: DbKind) {
    let (db, conn) = database(kind).await;
    let ttl = Duration::from_millis(1500);
    let a = Lease::new(conn.clone(), "host-a:1:aaaa", ttl);
    let b = Lease::new(conn.clone(), "host-b:2:bbbb", ttl);

    // A takes it; B is told who holds it and for how long.
    let fa = held(a.try_acquire().await.unwrap());
    assert_eq!(fa.token, 1);
    match b.try_acquire().await.unwrap() {
        LeaseStatus::HeldBy {
            holder,
            token,
            expires_in,
        } => {
            assert_eq!(holder, "host-a:1:aaaa");
            assert_eq!(token, 1);
            assert!(expires_in > Duration::ZERO && expires_in <= ttl);
        }
        other => panic!("B should stand by, got {other:?}"),
    }
    // Renewing keeps the token; the fence holds.
    assert_eq!(held(a.try_acquire().await.unwrap()), fa);
    assert!(fence_ok(&conn, &fa).await);

    // A stops renewing: once the lease expires B takes it with the next token.
    let started = std::time::Instant::now();
    let fb = loop {
        match b.try_acquire().await.unwrap() {
            LeaseStatus::Held(f) => break f,
            LeaseStatus::HeldBy { .. } => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "B never took over"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "B took over before A's lease expired"
    );
    assert_eq!(fb.token, 2);

    // A is fenced off: its check fails, its fenced write is refused, it cannot renew.
    assert!(!fence_ok(&conn, &fa).await);
    let state = RunState::default();
    let err = run_state::save(&conn, &fa, &[("x", &state)], &[], Utc::now())
        .await
        .expect_err("fenced");
    assert!(matches!(err, SaveError::LostLease));
    assert!(
        run_state::load_one(&conn, "x").await.unwrap().is_none(),
        "a fenced-off write left a row"
    );
    assert!(matches!(
        a.try_acquire().await.unwrap(),
        LeaseStatus::HeldBy { .. }
    ));
    run_state::save(&conn, &fb, &[("x", &state)], &[], Utc::now())
        .await
        .unwrap();
    assert!(run_state::load_one(&conn, "x").await.unwrap().is_some());

    // B releases: A takes over at once, with a new token.
    assert!(b.release().await.unwrap());
    let fa2 = held(a.try_acquire().await.unwrap());
    assert_eq!(fa2.token, 3);
    assert!(!fence_ok(&conn, &fb).await);
    db.drop_database().await;
}

async fn racing_beats_elect_one(kind: DbKind) {
    let (db, conn) = database(kind).await;
    let leases: Vec<Lease> = (0..6)
        .map(|i| {
            Lease::new(
                conn.clone(),
                format!("host:{i}:race"),
                Duration::from_secs(30),
            )
        })
        .collect();
    let results = futures_util::future::join_all(leases.iter().map(Lease::try_acquire)).await;
    let winners = results
        .into_iter()
        .map(Result::unwrap)
        .filter(|s| matches!(s, LeaseStatus::Held(_)))
        .count();
    assert_eq!(winners, 1, "exactly one of six racing beats may win");
    db.drop_database().await;
}

#[tokio::test]
async fn lease_on_sqlite() {
    lease_lifecycle(DbKind::Sqlite).await;
    racing_beats_elect_one(DbKind::Sqlite).await;
}

#[tokio::test]
async fn lease_on_postgres() {
    lease_lifecycle(DbKind::Postgres).await;
    racing_beats_elect_one(DbKind::Postgres).await;
}

#[tokio::test]
async fn lease_on_mysql() {
    lease_lifecycle(DbKind::Mysql).await;
    racing_beats_elect_one(DbKind::Mysql).await;
}

/// The fields that describe the last run are written with the run's state
/// only: a later write that leaves them out (the scheduler does not keep
/// them) keeps what the row holds, while every other field is written; a
/// write of no runs at all (an entry made again) clears them.
async fn a_write_without_the_last_run_keeps_the_stored_one(kind: DbKind) {
    let (db, conn) = database(kind).await;
    let lease = Lease::new(conn.clone(), "host-a:1:last", Duration::from_secs(30));
    let fence = held(lease.try_acquire().await.unwrap());
    let save = async |rows: &[(&str, &RunState)]| {
        run_state::save(&conn, &fence, rows, &[], Utc::now())
            .await
            .unwrap();
    };
    let stored = async |name: &str| run_state::load_one(&conn, name).await.unwrap().unwrap();
    let t = |s: &str| s.parse::<chrono::DateTime<Utc>>().unwrap();
    let run = RunState {
        cursor_at: Some(t("2024-05-01T10:00:00Z")),
        last_run_at: Some(t("2024-05-01T10:00:00Z")),
        last_sent_at: Some(t("2024-05-01T10:00:00.004Z")),
        last_task_id: Some(uuid::Uuid::new_v4()),
        next_run_at: Some(t("2024-05-01T11:00:00Z")),
        total_runs: 7,
        ..RunState::default()
    };
    let fresh = RunState::default();
    save(&[("a", &run), ("b", &fresh)]).await;
    // A later write of "a" (a skipped fire time moved its cursor), and of
    // "b", each without a last run.
    let moved = RunState {
        cursor_at: Some(t("2024-05-01T11:00:00Z")),
        sending_at: Some(t("2024-05-01T11:00:00Z")),
        next_run_at: Some(t("2024-05-01T12:00:00Z")),
        total_runs: 7,
        ..RunState::default()
    };
    save(&[("a", &moved), ("b", &fresh)]).await;
    let kept = RunState {
        last_run_at: run.last_run_at,
        last_sent_at: run.last_sent_at,
        last_task_id: run.last_task_id,
        ..moved.clone()
    };
    assert_eq!(stored("a").await, kept);
    assert_eq!(stored("b").await, fresh, "nothing to keep: still none");
    // The next run's write replaces them; a run-now (no scheduled time)
    // keeps the scheduled run's time.
    let next = RunState {
        last_run_at: None,
        last_sent_at: Some(t("2024-05-01T11:20:00Z")),
        last_task_id: Some(uuid::Uuid::new_v4()),
        total_runs: 8,
        ..moved.clone()
    };
    save(&[("a", &next)]).await;
    let replaced = RunState {
        last_run_at: run.last_run_at,
        ..next.clone()
    };
    assert_eq!(stored("a").await, replaced);
    // The entry made again under the same name: no runs, so no last run,
    // whatever the row held.
    let made_again = RunState {
        cursor_at: Some(t("2024-05-01T11:30:00Z")),
        ..RunState::default()
    };
    save(&[("a", &made_again)]).await;
    assert_eq!(stored("a").await, made_again);
    db.drop_database().await;
}

celeriac_common::on_each_database!(a_write_without_the_last_run_keeps_the_stored_one);
