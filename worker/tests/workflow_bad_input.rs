//! Bad workflows against the real RabbitMQ and a worker process (SQLite):
//! refused at send time with nothing published (empty chord header, a
//! chain of 100,000 steps), or a FAILURE on the step at run time (an
//! unknown task in a chord's header fails the chord once; an unknown
//! callback fails once; arguments a typed task cannot take fail the step
//! and stop its chain), or stopped part way with an error that says how
//! far it got (a member the broker refuses). Never a hang.

use celeriac::Client;
use celeriac::canvas::{CanvasError, TaskSig, chain, chord};
use celeriac_common::TaskState;
use celeriac_common::backend::{ResultBackend, TaskRecord};
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::process::{self, LoggedProcess};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn echo(args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(ECHO, args)
}

async fn done(backend: &ResultBackend, id: &str, worker: &LoggedProcess) -> TaskRecord {
    let start = Instant::now();
    loop {
        if let Some(r) = backend.get(id).await.expect("read")
            && r.state.is_ready()
        {
            return r;
        }
        assert!(start.elapsed() < WAIT, "{id} hangs:\n{}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_workflows_fail_clearly_and_never_hang() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("wf-bad"));
    let backend = db.migrated_backend().await.expect("migrated backend");
    let client = Client::connect(config.clone()).await.expect("client");

    // Refused at send time, before anything is published.
    let empty = chord(Vec::<TaskSig>::new(), echo(json!([])));
    assert!(matches!(
        client.send_workflow(&empty).await,
        Err(CanvasError::Empty(_))
    ));
    let long = chain((0..100_000).map(|i| echo(json!([i]))));
    let err = client.send_workflow(&long).await.expect_err("too long");
    assert!(matches!(err, CanvasError::ChainTooLong { .. }), "{err}");
    assert!(err.to_string().contains("100000") || err.to_string().contains("100,000"));
    // Nothing was published: the queue was not even declared.
    let purged = client.purge(&config.default_queue).await;
    assert!(
        matches!(purged, Ok(0)) || purged.is_err_and(|e| format!("{e:?}").contains("NOT_FOUND")),
        "something was published"
    );

    let worker = process::spawn_worker(
        env!("CARGO_BIN_EXE_celeriac-worker"),
        &config,
        "wf-bad@test",
        &[],
    );
    // An unknown task in a chord's header: the chord fails, naming it.
    let unknown = TaskSig::by_name("no.such.task", vec![]);
    let res = client
        .send_workflow(&chord([echo(json!([1])), unknown], echo(json!([]))))
        .await
        .expect("send");
    let cb = done(&backend, res.id(), &worker).await;
    assert_eq!(cb.state, TaskState::Failure);
    let err = cb.error.expect("error");
    assert_eq!(err.kind, "ChordError");
    assert!(err.message.contains("NotRegistered"), "{}", err.message);

    // An unknown callback: FAILURE NotRegistered, once.
    let res = client
        .send_workflow(&chord(
            [echo(json!([1]))],
            TaskSig::by_name("no.such.cb", vec![]),
        ))
        .await
        .expect("send");
    let cb = done(&backend, res.id(), &worker).await;
    assert_eq!(cb.state, TaskState::Failure);
    assert_eq!(cb.error.expect("error").kind, "NotRegistered");

    // Arguments a typed task cannot take: the step fails, the chain stops.
    let bad = TaskSig::by_name("celeriac.sleep", vec![json!("soon")]).immutable();
    let res = client
        .send_workflow(&(echo(json!([1])) | bad | echo(json!([3]))))
        .await
        .expect("send");
    let step2 = res.parent().expect("step 2").id().to_owned();
    assert_eq!(
        done(&backend, &step2, &worker).await.state,
        TaskState::Failure
    );
    assert_eq!(
        done(&backend, res.id(), &worker).await.state,
        TaskState::Revoked
    );
    let callbacks = worker
        .log_text()
        .lines()
        .filter(|l| l.contains("chord callback sent"))
        .count();
    assert!(
        callbacks <= 1,
        "a callback sent twice:\n{}",
        worker.log_text()
    );

    let _ = worker.terminate();
    testing::cleanup(&config).await;
    db.drop_database().await;
}

/// A member the broker refuses (its queue exists with other arguments)
/// stops the send with an error that says how far it got: the members
/// before it are published and confirmed, the refused one is not.
#[tokio::test]
async fn a_refused_member_stops_the_send_and_says_how_far_it_got() {
    use celeriac::canvas::group;
    use lapin::options::BasicGetOptions;
    use lapin::types::AMQPValue;
    let config = testing::config("none", &unique("wf-refused"));
    let blocked = format!("{}.blocked", config.default_queue);
    let (conn, ch) = testing::declare_refusing_queue(&blocked).await;
    let client = Client::connect(config.clone()).await.expect("client");
    let id = |i: usize| format!("{}-{i}", config.default_queue);
    let members = (0..5).map(|i| {
        let sig = echo(json!([i])).task_id(id(i));
        if i == 2 {
            sig.queue(blocked.clone())
        } else {
            sig
        }
    });
    let err = client
        .send_workflow(&group(members))
        .await
        .expect_err("refused");
    let CanvasError::Publish { sent, total, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((*sent, *total), (2, 5), "{err}");
    assert!(err.to_string().contains("2 of 5 messages"), "{err}");
    // The two before it are in the queue (once or more: at least once);
    // the refused one nowhere; the two after it may have gone out.
    let mut queued = Vec::new();
    while let Some(m) = ch
        .basic_get(
            config.default_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
    {
        let headers = m.delivery.properties.headers().clone().expect("headers");
        if let Some(AMQPValue::LongString(id)) = headers.inner().get("id") {
            queued.push(String::from_utf8_lossy(id.as_bytes()).into_owned());
        }
    }
    for i in [0, 1] {
        assert!(queued.contains(&id(i)), "{} missing from {queued:?}", id(i));
    }
    assert!(!queued.contains(&id(2)), "{queued:?}");
    let refused = ch
        .basic_get(blocked.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get");
    assert!(refused.is_none(), "nothing reached the refused queue");
    testing::delete_queues(&[blocked.as_str()]).await;
    testing::cleanup(&config).await;
    let _ = conn.close(200, "done".into()).await;
}
