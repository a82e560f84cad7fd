//! The queries behind the pages on each database (SQLite, MariaDB/MySQL;
//! PostgreSQL in api.rs): the search indexes' migration, keyset pages,
//! filters, a task's page and workflow, the overview, workers, schedules.

use crate::support;

use celeriac_common::TaskState;
use celeriac_common::backend::{ResultBackend, TaskOutcome, entity};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::{Value, json};

async fn get(base: &str, path: &str) -> Value {
    let r = reqwest::get(format!("{base}{path}")).await.expect("GET");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

async fn pages_and_filters_on(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("database");
    let config = testing::config(&db.url, &unique("dash-db"));
    let (base, stop) = support::serve(&config, None).await;
    let backend = ResultBackend::connect(&db.url).await.expect("backend");
    let now = chrono::Utc::now();
    // A chain root with two children, then two lone tasks, one failed.
    let mut rows = Vec::new();
    for (i, (id, state, parent)) in [
        ("root", TaskState::Success, None),
        ("child-a", TaskState::Success, Some("root")),
        ("child-b", TaskState::Failure, Some("root")),
        ("lone-1", TaskState::Success, None),
        ("lone-2", TaskState::Started, None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut o = TaskOutcome::new(id, format!("t.job{}", i % 2), state);
        o.worker = Some("w@db".into());
        o.parent_id = parent.map(str::to_owned);
        o.root_id = parent.map(|_| "root".to_owned());
        o.started_at = Some(now);
        o.done_at = (state != TaskState::Started).then_some(now);
        // Separate writes: distinct creation times, newest last.
        backend.store(vec![o]).await.expect("stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        rows.push(id);
    }
    // A task reporting progress (state PROGRESS, Celery's custom-state
    // form: its result holds done and total, as ctx.progress writes it).
    let progress = entity::ActiveModel {
        task_id: Set("busy".into()),
        task_name: Set(Some("t.long".into())),
        state: Set("PROGRESS".into()),
        content_type: Set("application/json".into()),
        result: Set(Some(r#"{"done": 3, "total": 10, "file": "a.csv"}"#.into())),
        retries: Set(0),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    };
    entity::Entity::insert(progress)
        .exec(backend.connection())
        .await
        .expect("inserted");
    rows.push("busy");
    let busy = get(&base, "/api/tasks?state=PROGRESS").await;
    assert_eq!(
        busy["tasks"][0]["progress"],
        json!({"done": 3, "total": 10, "file": "a.csv"}),
        "{kind:?}"
    );
    assert_eq!(get(&base, "/api/tasks/busy").await["progress"]["total"], 10);
    let mut seen = Vec::new();
    let mut path = "/api/tasks?limit=2".to_owned();
    loop {
        let page = get(&base, &path).await;
        for t in page["tasks"].as_array().expect("tasks") {
            seen.push(t["id"].as_str().expect("id").to_owned());
        }
        match page["next"].as_str() {
            Some(k) => path = format!("/api/tasks?limit=2&before={k}"),
            None => break,
        }
    }
    rows.reverse();
    assert_eq!(seen, rows, "{kind:?}: newest first, each once");
    let failed = get(&base, "/api/tasks?state=FAILURE").await;
    assert_eq!(failed["tasks"][0]["id"], "child-b");
    let by_name = get(&base, "/api/tasks?name=t.job1&worker=w@db").await;
    assert_eq!(by_name["tasks"].as_array().map(Vec::len), Some(2));
    let task = get(&base, "/api/tasks/child-a").await;
    let tree: Vec<&str> = task["workflow"]["tree"]
        .as_array()
        .expect("tree")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(tree, ["root", "child-a", "child-b"], "{kind:?}");
    assert_eq!(
        get(&base, "/api/tasks/root").await["workflow"]["children"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(get(&base, "/api/tasks/lone-1").await["workflow"].is_null());
    let o = get(&base, "/api/overview").await;
    assert_eq!(o["last_hour"]["succeeded"], 3, "{kind:?}: {o}");
    assert_eq!(
        (o["open"]["STARTED"].clone(), o["open"]["PROGRESS"].clone()),
        (json!(1), json!(1))
    );
    assert!(get(&base, "/api/workers").await["workers"].is_array());
    assert_eq!(get(&base, "/api/schedules").await["schedules"], json!([]));
    let _ = stop.send(());
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    pages_and_filters_on(DbKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    pages_and_filters_on(DbKind::Mysql).await;
}
