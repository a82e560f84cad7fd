//! Beat and several broker nodes (issue #20): when the node it publishes to
//! dies, the run being sent is sent again on the next node and beat keeps
//! firing, each second once, none lost. The "nodes" are TCP proxies to the
//! one test broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::time::{Duration, Instant};

use celeriac_common::Config;
use celeriac_common::netfault::{Proxy, ProxyMode};
use celeriac_common::testing::process::spawn_beat;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use chrono::{TimeDelta, Utc};
use support::{BEAT, Collector, check_history, ok};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beat_keeps_firing_when_its_broker_node_dies() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let mut direct = testing::config(&db.url, &unique("beat-failover"));
    direct.beat_lease_secs = 2;
    let collector = Collector::start(&direct).await;
    ok(
        &direct,
        &["schedule", "add", "tick", "celeriac.noop", "--every", "1s"],
    );
    let broker = testing::broker_url();
    let mut first = Proxy::start(&broker, ProxyMode::Forward).await.unwrap();
    let second = Proxy::start(&broker, ProxyMode::Forward).await.unwrap();
    let nodes = Config {
        broker_url: format!("{};{}", first.url(), second.url()),
        ..direct.clone()
    };
    let args = ["--connect-timeout", "1", "--broker-heartbeat", "1"];
    let beat = spawn_beat(BEAT, &nodes, &args);
    collector.wait_for("tick", 2, LONG).await;
    assert_eq!(second.accepted(), 0, "started on the first node");

    first.stop();
    let killed = Utc::now();
    let started = Instant::now();
    // Three runs scheduled after the kill, every second in between.
    collector
        .wait_scheduled_from("tick", killed + TimeDelta::seconds(3), LONG)
        .await;
    eprintln!("three runs after the node died: {:?}", started.elapsed());
    assert!(second.accepted() > 0, "not on the second node");
    let got = collector.of("tick");
    let twice = check_history("tick", &got, TimeDelta::seconds(1));
    eprintln!("{} runs, {twice} sent twice", got.len());
    assert!(twice <= 1, "{got:?}");
    assert_eq!(beat.terminate(), Some(0));
    testing::cleanup(&direct).await;
}
