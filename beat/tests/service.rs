//! `celeriac-beat run` as a process against the real RabbitMQ and a
//! database: firing on time, surviving SIGKILL, and command-line changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::Duration;

use celeriac_common::testing::process::spawn_beat;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use chrono::{TimeDelta, Utc};
use support::{BEAT, Collector, check_history, ok};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_second_entry_fires_once_per_second_with_events() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-every"));
    config.beat_lease_secs = 2;
    let collector = Collector::start(&config).await;
    collector.watch_events(&config).await;
    ok(
        &config,
        &["schedule", "add", "tick", "celeriac.noop", "--every", "1s"],
    );
    let beat = spawn_beat(BEAT, &config, &[]);
    let first = collector.wait_for("tick", 1, LONG).await[0].scheduled_at;
    // A five-second window after the first run: exactly six runs, one per second.
    let end = first + TimeDelta::seconds(5);
    collector
        .wait_scheduled_from("tick", end + TimeDelta::seconds(1), LONG)
        .await;
    let got = collector.of("tick");
    let window: Vec<_> = got
        .iter()
        .filter(|m| m.scheduled_at >= first && m.scheduled_at <= end)
        .collect();
    assert_eq!(window.len(), 6, "{got:?}");
    assert_eq!(
        check_history("tick", &got, TimeDelta::seconds(1)),
        0,
        "duplicates: {got:?}"
    );
    for m in &got[1..] {
        let late = (m.received_at - m.scheduled_at).num_milliseconds();
        assert!(late < 1000, "run {} arrived {late} ms late", m.scheduled_at);
    }
    let fired = collector.events_of("tick", "beat-fired");
    assert!(fired.len() >= 6, "events: {fired:?}");
    assert!(
        fired
            .iter()
            .all(|e| e["uuid"].is_string() && e["lateness_ms"].is_number())
    );
    assert!(beat.log_text().contains("\"entry\":\"tick\""));
    assert_eq!(beat.terminate(), Some(0));
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_neither_repeats_nor_loses_runs() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-kill"));
    config.beat_lease_secs = 2;
    let collector = Collector::start(&config).await;
    // `all`: every run within a minute counts, one by one. `latest`: a backlog is one run.
    ok(
        &config,
        &[
            "schedule",
            "add",
            "all",
            "celeriac.noop",
            "--every",
            "1s",
            "--coalesce",
            "false",
            "--misfire-grace",
            "60s",
        ],
    );
    ok(
        &config,
        &[
            "schedule",
            "add",
            "latest",
            "celeriac.noop",
            "--every",
            "1s",
            "--coalesce",
            "true",
            "--misfire-grace",
            "1s",
        ],
    );
    let first = spawn_beat(BEAT, &config, &[]);
    collector.wait_for("all", 3, LONG).await;
    collector.wait_for("latest", 3, LONG).await;
    first.kill();
    let killed = Utc::now();
    // Down for a while: runs fall due with no beat running.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = spawn_beat(BEAT, &config, &[]);
    let resumed = Utc::now() + TimeDelta::seconds(3);
    collector.wait_scheduled_from("all", resumed, LONG).await;
    collector.wait_scheduled_from("latest", resumed, LONG).await;
    assert_eq!(second.terminate(), Some(0));
    let all = collector.of("all");
    let repeats = check_history("all", &all, TimeDelta::seconds(1));
    assert!(
        repeats <= 1,
        "only a run cut by the kill may be re-sent (same id): {all:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.scheduled_at > killed + TimeDelta::seconds(1)
                && m.scheduled_at < killed + TimeDelta::seconds(4)),
        "the downtime backlog was not sent: {all:?}"
    );
    // `latest`: ids deterministic, no scheduled time sent under two ids, and the backlog coalesced.
    let latest = collector.of("latest");
    let mut times: Vec<_> = latest.iter().map(|m| m.scheduled_at).collect();
    times.sort();
    times.dedup();
    assert!(latest.len() - times.len() <= 1, "{latest:?}");
    for m in &latest {
        assert_eq!(
            m.id,
            celeriac_beat::firing::dispatch::task_id("latest", m.scheduled_at).to_string()
        );
    }
    assert!(
        times
            .windows(2)
            .any(|w| w[1] - w[0] > TimeDelta::seconds(2)),
        "no gap for the coalesced backlog: {times:?}"
    );
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_changes_take_effect_within_a_second() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut config = testing::config(&db.url, &unique("beat-cli"));
    config.beat_lease_secs = 2;
    let collector = Collector::start(&config).await;
    let beat = spawn_beat(BEAT, &config, &[]);
    beat.wait_log("leading", LONG);

    // run-now: the message arrives within a second of the command.
    ok(
        &config,
        &[
            "schedule",
            "add",
            "hourly",
            "celeriac.noop",
            "--every",
            "1h",
        ],
    );
    let id = ok(&config, &["schedule", "run-now", "hourly"]);
    let asked = Utc::now();
    let got = collector.wait_for("hourly", 1, LONG).await;
    assert_eq!(got[0].id, id.trim());
    let took = (got[0].received_at - asked).num_milliseconds();
    assert!(took < 1500, "run-now took {took} ms");

    // add: runs start at once.
    ok(
        &config,
        &["schedule", "add", "c", "celeriac.noop", "--every", "1s"],
    );
    let added = Utc::now();
    let first = collector.wait_for("c", 1, LONG).await;
    assert!(
        (first[0].received_at - added).num_milliseconds() < 2000,
        "{first:?}"
    );

    // pause: nothing scheduled after the pause is sent.
    ok(&config, &["schedule", "pause", "c"]);
    let paused = Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late: Vec<_> = collector
        .of("c")
        .into_iter()
        .filter(|m| m.received_at > paused + TimeDelta::seconds(1))
        .collect();
    assert!(late.is_empty(), "runs after pause: {late:?}");

    // resume: runs again, from now (the paused runs are not sent).
    ok(&config, &["schedule", "resume", "c"]);
    let resumed = Utc::now();
    let m = collector.wait_scheduled_from("c", resumed, LONG).await;
    assert!((m.received_at - resumed).num_milliseconds() < 2000, "{m:?}");
    assert!(
        !collector
            .of("c")
            .iter()
            .any(|m| m.scheduled_at > paused + TimeDelta::seconds(1)
                && m.scheduled_at < resumed - TimeDelta::seconds(1))
    );

    // modify: every 2 s from now on.
    ok(&config, &["schedule", "modify", "c", "--every", "2s"]);
    let modified = Utc::now() + TimeDelta::seconds(1);
    let a = collector.wait_scheduled_from("c", modified, LONG).await;
    let b = collector
        .wait_scheduled_from("c", a.scheduled_at + TimeDelta::milliseconds(1), LONG)
        .await;
    assert_eq!(b.scheduled_at - a.scheduled_at, TimeDelta::seconds(2));

    // remove: no more runs.
    ok(&config, &["schedule", "remove", "c"]);
    let removed = Utc::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !collector
            .of("c")
            .iter()
            .any(|m| m.received_at > removed + TimeDelta::seconds(1))
    );
    let list = ok(&config, &["schedule", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "hourly");
    assert_eq!(list[0]["total_runs"], 1);
    assert_eq!(beat.terminate(), Some(0));
    testing::cleanup(&config).await;
}
