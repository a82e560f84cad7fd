//! Durable delayed delivery: tasks run at their eta through the broker's
//! delay queues, survive a killed worker, honour expiry and revocation, and
//! Celery-format eta messages are handled the same way.

use crate::support;

use celeriac::{ApplyOptions, Client, TaskState};
use celeriac_common::diagnostics::Noop;
use celeriac_common::testing::process::spawn_worker;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{TaskDef, broker, delay};
use chrono::{Duration as Span, Utc};
use lapin::options::BasicPublishOptions;
use std::time::Duration;
use support::{WORKER, ready_messages};

const WAIT: Duration = Duration::from_secs(60);
/// How late a task may start after its eta in these tests (the design aims
/// at ~100 ms; the bound leaves room for a loaded CI machine).
const LATE: Span = Span::milliseconds(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_at_their_eta_and_far_ones_wait_in_the_broker() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("delay"));
    let worker = spawn_worker(WORKER, &config, "delay@test", &["--track-started", "true"]);
    let client = Client::connect(config.clone()).await.expect("client");
    let now = Utc::now();
    let mut pending = Vec::new();
    for ms in [300, 1_200, 2_500, 4_100, 9_000, 17_000] {
        let eta = now + Span::milliseconds(ms);
        pending.push((
            eta,
            client.apply_at::<Noop>(eta, ()).await.expect("schedule"),
        ));
    }
    let far = client
        .apply_at::<Noop>(now + Span::days(1), ())
        .await
        .expect("far future");
    for (eta, r) in &pending {
        let rec = r.wait(WAIT).await.expect("ran");
        assert_eq!(rec.state, TaskState::Success);
        let started = rec.started_at.expect("started_at");
        assert!(
            started >= *eta,
            "{} started {} before its eta",
            r.id(),
            *eta - started
        );
        assert!(
            started - *eta < LATE,
            "{} started {} late",
            r.id(),
            started - *eta
        );
    }
    // The day-ahead task waits in the delay queue of its highest digit
    // (`<prefix>.5.1`: a day is 0x149970 units of 64 ms), not in the worker
    // and not in the task queue.
    assert_eq!(far.state().await.expect("state"), TaskState::Pending);
    let day = delay::first_queue(&config, Duration::from_secs(86_390)).expect("delayed");
    assert_eq!(ready_messages(&day).await, 1);
    assert_eq!(ready_messages(&config.default_queue).await, 0);
    assert_eq!(worker.terminate(), Some(0));
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_the_wait_loses_nothing() {
    let db = TestDatabase::create(DbKind::Postgres).await.expect("db");
    let config = testing::config(&db.url, &unique("delaykill"));
    db.migrated_backend().await.expect("migrated backend");
    let doomed = spawn_worker(WORKER, &config, "doomed@test", &[]);
    let client = Client::connect(config.clone()).await.expect("client");
    let eta = Utc::now() + Span::seconds(3);
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(client.apply_at::<Noop>(eta, ()).await.expect("schedule"));
    }
    doomed.kill();
    let rescuer = spawn_worker(
        WORKER,
        &config,
        "rescuer@test",
        &["--track-started", "true"],
    );
    for r in &sent {
        let rec = r.wait(WAIT).await.expect("ran");
        assert_eq!(rec.state, TaskState::Success);
        assert!(rec.started_at.expect("started") >= eta);
        assert_eq!(rec.worker.as_deref(), Some("rescuer@test"));
    }
    assert_eq!(rescuer.terminate(), Some(0));
    testing::cleanup(&config).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_eta_messages_expiry_and_revocation() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("delayx"));
    let worker = spawn_worker(WORKER, &config, "x@test", &["--track-started", "true"]);
    let client = Client::connect(config.clone()).await.expect("client");

    // As Python Celery sends it: straight to the task queue with an eta header.
    let eta = Utc::now() + Span::seconds(3);
    let mut msg = celeriac_common::TaskMessage::new(Noop::NAME, vec![], Default::default());
    msg.lang = "py".into();
    msg.eta = Some(eta.fixed_offset());
    client
        .publish_to_queue(&msg, &config.default_queue)
        .await
        .expect("publish");
    // The worker does not hold it: it goes back to the delay queues.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let parked: u32 = futures_util::future::join_all(
        delay::queue_names(&config)
            .into_iter()
            .map(|name| async move { ready_messages(&name).await }),
    )
    .await
    .into_iter()
    .sum();
    assert_eq!(parked, 1, "the eta message waits in a delay queue");
    let rec = client
        .async_result::<serde_json::Value>(msg.id.clone())
        .wait(WAIT)
        .await
        .expect("ran");
    assert_eq!(rec.state, TaskState::Success);
    assert!(rec.started_at.expect("started") >= eta);

    // Expires before its eta: REVOKED when it comes due, never run.
    let opts = ApplyOptions::new()
        .countdown(Duration::from_secs(2))
        .expires_in(Duration::from_secs(1));
    let expired = client
        .apply_async::<Noop>((), opts)
        .await
        .expect("schedule");
    let rec = expired.wait(WAIT).await.expect("final");
    assert_eq!(
        (rec.state, rec.error.expect("error").kind.as_str()),
        (TaskState::Revoked, "TaskExpired")
    );
    assert!(rec.started_at.is_none());

    // Revoked while it waits: never started.
    let revoked = client
        .apply_async::<Noop>((), ApplyOptions::new().countdown(Duration::from_secs(2)))
        .await
        .expect("schedule");
    assert!(client.revoke(revoked.id()).await.expect("revoke"));
    let canary = client
        .apply_async::<Noop>((), ApplyOptions::new().countdown(Duration::from_secs(3)))
        .await
        .expect("schedule");
    canary.wait(WAIT).await.expect("canary ran");
    let rec = revoked.record().await.expect("record").expect("row");
    assert_eq!(rec.state, TaskState::Revoked);
    // The worker that skipped it may record the revocation too, but never a start.
    assert!(rec.started_at.is_none(), "revoked task never started");
    assert!(
        !client.revoke(canary.id()).await.expect("revoke finished"),
        "a finished task keeps its outcome"
    );

    // Further than the mechanism supports: a clear error, nothing sent.
    let too_far = client
        .apply_at::<Noop>(Utc::now() + Span::days(365 * 9), ())
        .await;
    assert!(
        matches!(too_far, Err(celeriac::ClientError::TooFar(_))),
        "{too_far:?}"
    );
    assert_eq!(worker.terminate(), Some(0));
    testing::cleanup(&config).await;
}

#[tokio::test]
async fn publishing_raw_to_the_entry_exchange_reaches_the_queue() {
    // The topology on its own, without a worker: a 1 s delay lands in the task queue.
    let config = testing::config("none", &unique("delayraw"));
    let conn = broker::connect(&config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    broker::declare_task_queue(&ch, &config.default_queue, &config)
        .await
        .expect("queue");
    delay::declare_topology(&ch, &config)
        .await
        .expect("topology");
    delay::bind_queue(&ch, &config, &config.default_queue)
        .await
        .expect("bind");
    let key = delay::routing_key(Duration::from_secs(1), &config.default_queue).expect("key");
    ch.basic_publish(
        delay::entry_exchange(&config).as_str().into(),
        key.as_str().into(),
        BasicPublishOptions::default(),
        b"x",
        Default::default(),
    )
    .await
    .expect("publish");
    assert_eq!(
        ready_messages(&config.default_queue).await,
        0,
        "not before its time"
    );
    let mut arrived = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ready_messages(&config.default_queue).await == 1 {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "delivered after about a second");
    let _ = conn.close(200, "done".into()).await;
    testing::cleanup(&config).await;
}

/// A broker 100 ms away (a round trip through a proxy that holds every
/// byte 50 ms each way): the first `apply_at` declares the delay topology
/// (669 declarations) and the worker declares it at start. One round trip
/// each, that took over a minute, longer than `publish_timeout_secs`:
/// `apply_at` failed. Sent at once, it takes a few round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_broker_takes_delayed_tasks_in_a_few_round_trips() {
    use celeriac_common::netfault::{Proxy, ProxyMode};
    use std::time::Instant;

    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let mut config = testing::config(&db.url, &unique("delayfar"));
    let proxy = Proxy::start(
        &config.broker_url,
        ProxyMode::Latency(Duration::from_millis(50)),
    )
    .await
    .expect("proxy");
    let direct = config.broker_url.clone();
    config.broker_url = proxy.url();
    let began = Instant::now();
    let client = Client::connect(config.clone()).await.expect("client");
    let eta = Utc::now() + Span::seconds(3);
    let sent = client.apply_at::<Noop>(eta, ()).await.expect("schedule");
    let took = began.elapsed();
    println!("connected and sent the first delayed task in {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let worker = spawn_worker(WORKER, &config, "far@test", &[]);
    let rec = sent.wait(WAIT).await.expect("ran");
    assert_eq!(rec.state, TaskState::Success);
    assert_eq!(worker.terminate(), Some(0));
    config.broker_url = direct;
    testing::cleanup(&config).await;
}
