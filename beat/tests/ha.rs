//! Several `celeriac-beat run` processes on one database: exactly one
//! leads, each run is sent once, and a standby takes over when the leader
//! is killed, without losing or repeating runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use celeriac_common::testing::process::{LoggedProcess, spawn_beat};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use chrono::{TimeDelta, Utc};
use support::{BEAT, Collector, check_history, leader_pid, ok};

const LONG: Duration = Duration::from_secs(40);

async fn beats_share_one_schedule(kind: DbKind, count: usize) {
    let db = TestDatabase::create(kind).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-ha"));
    config.beat_lease_secs = 2;
    let collector = Collector::start(&config).await;
    ok(
        &config,
        &[
            "schedule",
            "add",
            "ha",
            "celeriac.noop",
            "--every",
            "1s",
            "--coalesce",
            "false",
            "--misfire-grace",
            "60s",
        ],
    );
    let mut beats: Vec<LoggedProcess> =
        (0..count).map(|_| spawn_beat(BEAT, &config, &[])).collect();
    // All running: each run exactly once.
    let steady = collector.wait_for("ha", 5, LONG).await;
    assert_eq!(
        check_history("ha", &steady, TimeDelta::seconds(1)),
        0,
        "{steady:?}"
    );
    let leader = leader_pid(&db.url).await.expect("a leader");
    let at = beats
        .iter()
        .position(|b| b.pid() == leader)
        .expect("the leader is one of ours");
    let leading: Vec<_> = beats
        .iter()
        .filter(|b| b.log_text().contains("leading: holds the beat lease"))
        .map(LoggedProcess::pid)
        .collect();
    assert_eq!(leading, vec![leader], "exactly one beat leads");
    beats.remove(at).kill();
    let killed = Utc::now();
    // A survivor takes over (lease 2 s) and keeps the schedule going.
    collector
        .wait_scheduled_from("ha", killed + TimeDelta::seconds(6), LONG)
        .await;
    let new_leader = leader_pid(&db.url).await.expect("a new leader");
    assert_ne!(new_leader, leader);
    for beat in beats {
        assert_eq!(beat.terminate(), Some(0));
    }
    let all = collector.of("ha");
    let repeats = check_history("ha", &all, TimeDelta::seconds(1));
    assert!(
        repeats <= 1,
        "only the run cut by the kill may be re-sent (same id): {all:?}"
    );
    testing::cleanup(&config).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_beats_on_sqlite() {
    beats_share_one_schedule(DbKind::Sqlite, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beats_on_postgres() {
    beats_share_one_schedule(DbKind::Postgres, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_beats_on_mysql() {
    beats_share_one_schedule(DbKind::Mysql, 2).await;
}
