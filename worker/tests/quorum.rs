//! `queue_type = "quorum"` end to end on one node: the task, delay and
//! dead-letter queues are quorum queues (the delay ones dead-lettering at
//! least once), delayed tasks and retries go through them and never run
//! early, a bad message reaches the quorum dead-letter queue, and a queue
//! that exists with the other type is a clear error. Each test has a vhost
//! of its own.

use crate::support;

use celeriac::{ApplyOptions, Client, ClientError, TaskState};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::config::{Config, QueueType};
use celeriac_common::diagnostics::Noop;
use celeriac_common::testing::vhost::TestVhost;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{TaskDef, delay};
use celeriac_worker::{TaskContext, TaskFailure, Worker};
use chrono::{Duration as Span, Utc};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Fails its first run asking to be retried in a second, then succeeds.
struct Flaky;
impl TaskDef for Flaky {
    const NAME: &'static str = "test.flaky";
    type Args = ();
    type Output = u32;
}

/// Every queue of `vhost`: (name, type, arguments as JSON).
fn list_queues(vhost: &str) -> Vec<(String, String, Value)> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "-p",
            vhost,
            "name",
            "type",
            "arguments",
        ])
        .args(["--formatter", "json"])
        .output()
        .expect("rabbitmqctl list_queues");
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    rows.into_iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap_or_default().to_owned();
            let kind = r["type"].as_str().unwrap_or_default().to_owned();
            (name, kind, r["arguments"].clone())
        })
        .collect()
}

fn quorum_config(vhost: &TestVhost, results: &str) -> Config {
    let mut config = testing::config(results, &unique("qq"));
    config.broker_url = vhost.url.clone();
    config.queue_type = QueueType::Quorum;
    config.track_started = true;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_carry_delays_retries_and_dead_letters() {
    let vhost = TestVhost::create("quorum").expect("vhost");
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = quorum_config(&vhost, &db.url);
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .register::<Flaky, _, _, _>(|ctx: TaskContext, ()| async move {
            if ctx.retries == 0 {
                return Err(TaskFailure::new("Flaky", "first run").retry_in(Duration::from_secs(1)));
            }
            Ok(ctx.retries)
        })
        .build()
        .await
        .expect("build worker");
    let running = support::InProcess::spawn(worker);
    let client = Client::connect(config.clone()).await.expect("client");

    let eta = Utc::now() + Span::milliseconds(1500);
    let delayed = client.apply_at::<Noop>(eta, ()).await.expect("schedule");
    let flaky = client.delay::<Flaky>(()).await.expect("send");
    let rec = delayed.wait(WAIT).await.expect("delayed task ran");
    assert_eq!(rec.state, TaskState::Success);
    let started = rec.started_at.expect("started_at");
    assert!(started >= eta, "ran {} early", eta - started);
    let rec = flaky.wait(WAIT).await.expect("retried task ran");
    assert_eq!(rec.state, TaskState::Success);
    assert_eq!(rec.retries, 1);
    assert_eq!(rec.result, Some(Value::from(1)));

    // An undecodable message goes to the (quorum) dead-letter queue.
    let conn = broker::connect(&config.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let props = BasicProperties::default().with_content_type("application/json".into());
    ch.basic_publish(
        "".into(),
        config.default_queue.as_str().into(),
        BasicPublishOptions::default(),
        b"{not json",
        props,
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let get = ch
            .basic_get(
                config.dead_letter_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get");
        if get.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close(200, "done".into()).await;

    // Every queue is a quorum queue; the delay levels dead-letter at least
    // once (which needs reject-publish overflow).
    let queues = list_queues(&vhost.name);
    let levels = delay::queue_names(&config);
    for name in levels
        .iter()
        .chain([&config.default_queue, &config.dead_letter_queue])
    {
        let (_, kind, args) = queues
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not declared: {queues:?}"));
        assert_eq!(kind, "quorum", "{name}");
        if levels.contains(name) {
            let text = args.to_string();
            assert!(text.contains("at-least-once"), "{name}: {text}");
            assert!(text.contains("reject-publish"), "{name}: {text}");
        }
    }
    running.stop(WAIT).await.expect("worker ran");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_the_other_type_is_a_clear_error() {
    let vhost = TestVhost::create("qmismatch").expect("vhost");
    let mut classic = testing::config("none", &unique("qm"));
    classic.broker_url = vhost.url.clone();
    let conn = broker::connect(&classic.broker_url, "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    broker::declare_task_queue(&ch, &classic.default_queue, &classic)
        .await
        .expect("classic declare");
    delay::declare_topology(&ch, &classic)
        .await
        .expect("classic delay queues");
    let _ = conn.close(200, "done".into()).await;

    let quorum = Config {
        queue_type: QueueType::Quorum,
        ..classic.clone()
    };
    let client = Client::connect(quorum.clone()).await.expect("client");
    let started = std::time::Instant::now();
    let err = client
        .send_task(Noop::NAME, vec![], Default::default(), ApplyOptions::new())
        .await
        .expect_err("a quorum declaration of a classic queue must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not retried"
    );
    let ClientError::Broker(BrokerError::QueueMismatch { name, hint, .. }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(name, &classic.default_queue);
    assert!(hint.contains("rabbitmqctl delete_queue"), "{hint}");
    let line = err.to_string();
    assert!(
        line.contains("x-queue-type") && !line.contains('\n'),
        "{line}"
    );

    client.close().await;

    // A delay queue: the way out is a new delay_prefix, not a deletion
    // (it holds delayed tasks). The task queue is a new one.
    let fresh = unique("qm-fresh");
    let quorum = Config {
        default_queue: fresh.clone(),
        queues: vec![fresh],
        ..quorum
    };
    let client = Client::connect(quorum.clone()).await.expect("client");
    let err = client
        .send_task(
            Noop::NAME,
            vec![],
            Default::default(),
            ApplyOptions::new().countdown(Duration::from_secs(5)),
        )
        .await
        .expect_err("quorum delay queues over classic ones must fail");
    let ClientError::Broker(BrokerError::QueueMismatch { name, hint, .. }) = &err else {
        panic!("{err:?}")
    };
    assert!(name.starts_with(&quorum.delay_prefix), "{name}");
    assert!(hint.contains("delay_prefix"), "{hint}");
    client.close().await;
}
