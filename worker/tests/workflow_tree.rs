//! A workflow read back as a tree (`celeriac::workflow`, what `celeriac
//! workflow ID` draws) after a real worker ran it, on each of SQLite,
//! PostgreSQL and MariaDB: T1 → (T2, T3) → T4 found from any of its task
//! ids or from the group's id, every state in place; a chain stopped by a
//! failure shows its later steps not run, in order; the reads use indexes.

use crate::support;

use celeriac::canvas::{TaskSig, WorkflowResult, group};
use celeriac::workflow::{self, Node, RenderOptions, Sequence};
use celeriac::{Client, TaskState};
use celeriac_common::backend::ResultBackend;
use celeriac_common::diagnostics::ECHO;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::Worker;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn echo(args: Value) -> TaskSig {
    let Value::Array(args) = args else {
        panic!("args must be a list")
    };
    TaskSig::by_name(ECHO, args)
}

/// A sequence as `name:STATE` steps, groups as `[member, ...]`.
fn shape(seq: &Sequence) -> String {
    let parts: Vec<String> = seq
        .iter()
        .map(|n| match n {
            Node::Task(t) => format!(
                "{}:{}",
                t.name
                    .as_deref()
                    .unwrap_or("?")
                    .trim_start_matches("celeriac."),
                t.state
            ),
            Node::Group(g) => {
                let m: Vec<String> = g.members.iter().map(shape).collect();
                format!("[{}]", m.join(", "))
            }
        })
        .collect();
    parts.join(" -> ")
}

fn ids(res: &WorkflowResult) -> Vec<String> {
    let mut out = vec![res.id().to_owned()];
    let mut at = res.parent();
    while let Some(p) = at {
        match p.as_group() {
            Some(g) => out.extend(g.ids()),
            None => out.push(p.id().to_owned()),
        }
        at = p.parent();
    }
    out
}

async fn tree_after_a_real_run(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("db");
    let config = testing::config(&db.url, &unique("wf-tree"));
    let worker = Worker::builder(config.clone())
        .with_diagnostics()
        .build()
        .await
        .expect("worker");
    let running = support::InProcess::spawn(worker);
    let client = Client::connect(config.clone()).await.expect("client");
    let backend = ResultBackend::connect(&db.url).await.expect("backend");

    // T1 → (T2, T3) → T4.
    let diamond = echo(json!([1])) | group([echo(json!([2])), echo(json!([3]))]) | echo(json!([]));
    let res = client.send_workflow(&diamond).await.expect("send");
    res.get(WAIT).await.expect("T4");
    settled(&backend, &ids(&res)).await;
    let header = res.parent().and_then(|p| p.as_group()).expect("header");
    let t1 = header.parent().expect("T1").id().to_owned();
    for id in ids(&res).iter().chain([header.id().to_owned()].iter()) {
        let tree = workflow::load(&backend, id)
            .await
            .expect("load")
            .expect("found");
        assert_eq!(tree.root_id, t1, "from {id}");
        assert_eq!(tree.steps.len(), 1, "one sequence from {id}: {tree:?}");
        assert_eq!(
            shape(&tree.steps[0]),
            "echo:SUCCESS -> [echo:SUCCESS, echo:SUCCESS] -> echo:SUCCESS",
            "from {id}"
        );
    }
    let tree = workflow::load(&backend, res.id())
        .await
        .expect("load")
        .expect("found");
    let Node::Group(g) = &tree.steps[0][1] else {
        panic!("a group second")
    };
    let chord = g.chord.as_ref().expect("a chord's header");
    assert_eq!((chord.size, chord.done, chord.state), (2, 2, "COMPLETE"));
    assert_eq!(chord.callback_id, res.id());
    let member_ids: Vec<String> = g
        .members
        .iter()
        .map(|m| match &m[0] {
            Node::Task(t) => t.id.clone(),
            Node::Group(_) => panic!("task members"),
        })
        .collect();
    assert_eq!(member_ids, header.ids(), "members in group order");
    let text = tree.render(RenderOptions::default());
    assert!(text.contains("(chord callback)  ◀"), "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");

    // A chain stopped by a failure: the steps after it are REVOKED, in order.
    let failing = echo(json!([1]))
        | TaskSig::by_name("celeriac.fail", vec![json!("boom")]).immutable()
        | echo(json!([3]))
        | echo(json!([4]));
    let res = client.send_workflow(&failing).await.expect("send");
    // Each step's row is written by the recorder in its own time: wait
    // for all four (T1's may come after the others').
    settled(&backend, &ids(&res)).await;
    let tree = workflow::load(&backend, res.id())
        .await
        .expect("load")
        .expect("found");
    assert_eq!(
        shape(&tree.steps[0]),
        "echo:SUCCESS -> fail:FAILURE -> echo:REVOKED -> echo:REVOKED"
    );
    assert_eq!(tree.counts.get(TaskState::Revoked.as_str()), Some(&2));
    assert!(
        workflow::load(&backend, "no-such-id")
            .await
            .expect("load")
            .is_none()
    );

    assert_indexed(&backend).await;
    running.stop(WAIT).await.expect("worker ran");
    testing::cleanup(&config).await;
    db.drop_database().await;
}

async fn settled(backend: &ResultBackend, ids: &[String]) {
    let start = std::time::Instant::now();
    loop {
        let rows = backend.get_many(ids).await.expect("read");
        if rows
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.state.is_ready()))
        {
            return;
        }
        assert!(start.elapsed() < WAIT, "not all of {ids:?} finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The workflow and group reads use their indexes (SQLite's and
/// PostgreSQL's plans; PostgreSQL told not to prefer a scan of a tiny table).
async fn assert_indexed(backend: &ResultBackend) {
    let db = backend.connection();
    let queries = [
        "SELECT * FROM celeriac_taskmeta WHERE root_id = 'x'",
        "SELECT * FROM celeriac_taskmeta WHERE group_id = 'x'",
    ];
    let (explain, uses_index): (&str, fn(&str) -> bool) = match db.get_database_backend() {
        DbBackend::Sqlite => ("EXPLAIN QUERY PLAN ", |p| p.contains("USING INDEX")),
        DbBackend::Postgres => {
            db.execute_unprepared("SET enable_seqscan = off")
                .await
                .expect("set");
            ("EXPLAIN ", |p| p.contains("Index"))
        }
        _ => ("EXPLAIN ", |p| p.contains("idx_celeriac_taskmeta")),
    };
    for q in queries {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("{explain}{q}"),
            ))
            .await
            .expect("explain");
        let plan: Vec<String> = rows
            .iter()
            .map(|r| {
                (0..8)
                    .filter_map(|i| r.try_get_by_index::<Option<String>>(i).ok().flatten())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let plan = plan.join("\n");
        assert!(uses_index(&plan), "{q} is not indexed:\n{plan}");
    }
}

#[tokio::test]
async fn tree_after_a_real_run_on_sqlite() {
    tree_after_a_real_run(DbKind::Sqlite).await;
}

#[tokio::test]
async fn tree_after_a_real_run_on_postgres() {
    tree_after_a_real_run(DbKind::Postgres).await;
}

#[tokio::test]
async fn tree_after_a_real_run_on_mariadb() {
    tree_after_a_real_run(DbKind::Mysql).await;
}
