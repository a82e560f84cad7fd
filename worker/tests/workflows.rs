//! Workflows against the real RabbitMQ: the raw messages `send_workflow`
//! publishes (no worker), and chains and groups run end to end by a
//! `celeriac-worker` process.

use celeriac::Client;
use celeriac::canvas::{Canvas, TaskSig, chord, group};
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::chord::ChordState;
use celeriac_common::diagnostics::ECHO;
use celeriac_common::protocol::TaskMessage;
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_common::{Config, TaskState};
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use std::time::Duration;

fn echo(args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(ECHO, args)
}

fn worker(config: &Config) -> LoggedProcess {
    process::spawn_worker(
        env!("CARGO_BIN_EXE_celeriac-worker"),
        config,
        "workflows@test",
        &[],
    )
}

/// Every ready message in `queue`, decoded, in order.
async fn drain(queue: &str) -> Vec<TaskMessage> {
    let conn = celeriac_common::broker::connect(&testing::broker_url(), "workflows-test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let d = m.delivery;
        out.push(TaskMessage::decode(&d.properties, &d.data, usize::MAX).expect("decode"));
    }
    let _ = conn.close(200, "done".into()).await;
    out
}

async fn setup() -> (TestDatabase, Config, Client, ResultBackend) {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("workflows"));
    let backend = db.migrated_backend().await.expect("migrated backend");
    let client = Client::connect(config.clone()).await.expect("client");
    (db, config, client, backend)
}

/// T1 → (T2, T3) → T4 and a chord: the first message carries the chord in
/// its chain; a chord's members carry group, index and callback; the chord
/// is in the backend with its size.
#[tokio::test]
async fn messages_on_the_wire() {
    let (_db, config, client, backend) = setup().await;
    let diamond = echo(json!([1])) | group([echo(json!([2])), echo(json!([3]))]) | echo(json!([]));
    let sent = client.send_workflow(&diamond).await.expect("send diamond");
    let fan = chord((0..3).map(|i| echo(json!([i]))), echo(json!(["sum"])));
    let fan_sent = client.send_workflow(&fan).await.expect("send chord");
    let msgs = drain(&config.default_queue).await;
    assert_eq!(msgs.len(), 4, "1 for the chain, 3 for the chord's header");

    let first = &msgs[0];
    assert_eq!(first.root_id.as_deref(), Some(first.id.as_str()));
    let rest = first.embed.chain.as_ref().expect("chain");
    assert_eq!(rest[0].subtask_type.as_deref(), Some("chord"));
    let header = sent
        .parent()
        .and_then(|p| p.as_group())
        .expect("callback's parent is the header");
    assert_eq!(
        header.parent().map(|p| p.id()),
        Some(first.id.as_str()),
        "the header's parent is T1"
    );
    // The nested chord is recorded at send time, before T1 runs.
    let nested = backend
        .chord(header.id())
        .await
        .expect("read")
        .expect("row");
    assert_eq!((nested.size, nested.state), (2, ChordState::Pending));
    assert_eq!(nested.callback_id, sent.id());

    let group_id = fan_sent.parent().expect("header").id().to_owned();
    for (i, m) in msgs[1..].iter().enumerate() {
        assert_eq!(m.group.as_deref(), Some(group_id.as_str()));
        assert_eq!(m.group_index, Some(i as i64));
        let body = m.embed.chord.as_ref().expect("chord");
        assert_eq!(body.task, ECHO);
        assert_eq!(body.options["task_id"].as_str(), Some(fan_sent.id()));
        assert_eq!(body.extra["chord_size"], 3);
    }
    let recorded = backend.chord(&group_id).await.expect("read").expect("row");
    assert_eq!(recorded.size, 3);
    testing::cleanup(&config).await;
}

/// A chain runs in order with each result prepended; its result walks back
/// to its first step; a group's results come back in order with its id on
/// every row; a failed step stops the chain.
#[tokio::test]
async fn chains_and_groups_run() {
    let (_db, config, client, backend) = setup().await;
    let worker = worker(&config);
    let wait = Duration::from_secs(30);

    let flow = echo(json!([1])) | echo(json!([2])) | echo(json!([3])).immutable();
    let res = client.send_workflow(&flow).await.expect("send chain");
    let last = res.get(wait).await.expect("chain result");
    assert_eq!(last, json!({"args": [3], "kwargs": {}}));
    let second = res.parent().expect("step 2");
    assert_eq!(
        second.get(wait).await.expect("step 2"),
        json!({"args": [{"args": [1], "kwargs": {}}, 2], "kwargs": {}})
    );
    let first = second.parent().expect("step 1");
    assert!(first.parent().is_none());
    let row = backend.get(second.id()).await.expect("read").expect("row");
    assert_eq!(row.parent_id.as_deref(), Some(first.id()));
    assert_eq!(row.root_id.as_deref(), Some(first.id()));

    let members: Vec<Canvas> = (0..5).map(|i| echo(json!([i])).into()).collect();
    let res = client
        .send_workflow(&group(members))
        .await
        .expect("send group");
    let g = res.as_group().expect("a group");
    let values = g.get(wait).await.expect("group results");
    let expected: Vec<Value> = (0..5).map(|i| json!({"args": [i], "kwargs": {}})).collect();
    assert_eq!(values, expected);
    let counts = g.counts().await.expect("counts");
    assert_eq!((counts.total, counts.finished, counts.succeeded), (5, 5, 5));
    for id in g.ids() {
        let row = backend.get(&id).await.expect("read").expect("row");
        assert_eq!(row.group_id.as_deref(), Some(g.id()));
    }

    let failing = echo(json!([1]))
        | TaskSig::by_name("celeriac.fail", vec![json!("boom")]).immutable()
        | echo(json!([3]));
    let res = client.send_workflow(&failing).await.expect("send");
    let failed = res.parent().expect("step 2");
    let err = failed.get(wait).await.expect_err("step 2 fails");
    assert!(err.to_string().contains("boom"), "{err}");
    // The step after a failure never runs: it is marked not run.
    let after = res.as_task().expect("task");
    let err = after.get(wait).await.expect_err("not run");
    assert_eq!(after.state().await.expect("state"), TaskState::Revoked);
    assert!(err.to_string().contains("REVOKED"), "{err}");
    let row = backend.get(after.id()).await.expect("read").expect("row");
    let why = row.error.expect("why");
    assert_eq!(why.kind, "ChainAborted");
    assert!(why.message.contains(failed.id()), "{}", why.message);
    // Stopped first: a worker whose queue is deleted under it declares it
    // (and the delay queues) again.
    drop(worker);
    testing::cleanup(&config).await;
}

/// `rabbitmqctl set_policy` on one queue, cleared when dropped.
struct Policy(String);

impl Policy {
    fn set(queue: &str, definition: &str) -> Policy {
        let name = format!("test-{queue}");
        let pattern = format!("^{queue}$");
        let status = std::process::Command::new("rabbitmqctl")
            .args(["set_policy", "-q", &name, &pattern, definition])
            .args(["--apply-to", "queues", "--priority", "100"])
            .status()
            .expect("rabbitmqctl set_policy");
        assert!(status.success(), "rabbitmqctl set_policy: {status}");
        Policy(name)
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", "-q", &self.0])
            .status();
    }
}

/// The broker refuses a chain's next step (its queue is full and rejects
/// publishes): the step before it is not recorded as done with its
/// successor lost; its message goes back to its queue and runs again, and
/// once the broker takes the step the chain completes.
#[tokio::test]
async fn a_next_step_the_broker_refuses_is_sent_again() {
    let (_db, mut config, client, backend) = setup().await;
    let next_queue = format!("{}-next", config.queues[0]);
    config.queues.push(next_queue.clone());
    let refusing = Policy::set(
        &next_queue,
        r#"{"max-length": 0, "overflow": "reject-publish"}"#,
    );
    let worker = worker(&config);

    let flow = echo(json!([1])) | echo(json!([2])).queue(next_queue.as_str());
    let res = client.send_workflow(&flow).await.expect("send chain");
    let first = res.parent().expect("step 1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let row = backend.get(first.id()).await.expect("read");
    assert!(
        row.as_ref().is_none_or(|r| r.state != TaskState::Success),
        "step 1 recorded SUCCESS while its next step was refused: {row:?}"
    );
    drop(refusing);
    let last = res
        .get(Duration::from_secs(30))
        .await
        .expect("the chain completes once the broker takes the step");
    assert_eq!(
        last,
        json!({"args": [{"args": [1], "kwargs": {}}, 2], "kwargs": {}})
    );
    drop(worker);
    testing::cleanup(&config).await;
    testing::delete_queues(&[next_queue.as_str()]).await;
}
