//! The JSON API against a real worker, RabbitMQ and PostgreSQL.

use crate::support;

use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::schedule::store::Store;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::diagnostics::ECHO;
use serde_json::{Value, json};
use support::{TOKEN, eventually, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_pages_by_key_and_reads_tasks_workers_and_queues() {
    let s = stack("dash-api", Some(TOKEN), true).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.run(ECHO, vec![json!(i)]).await);
    }
    let failed = s.run("celeriac.fail", vec![json!("boom")]).await;

    // Newest first, two per page, by key: every task once.
    let (st, first) = s.get("/api/tasks?limit=2").await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(first["tasks"][0]["id"], failed.as_str());
    let mut seen: Vec<String> = Vec::new();
    let mut page = first;
    loop {
        for t in page["tasks"].as_array().expect("tasks") {
            seen.push(t["id"].as_str().expect("id").to_owned());
        }
        let Some(next) = page["next"].as_str() else {
            break;
        };
        page = s.get(&format!("/api/tasks?limit=2&before={next}")).await.1;
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(ids.iter().all(|i| seen.contains(i)));

    // Filters.
    let (_, by_state) = s.get("/api/tasks?state=failure").await;
    assert_eq!(ids_of(&by_state), vec![failed.clone()]);
    let (_, by_name) = s.get(&format!("/api/tasks?name={ECHO}&limit=10")).await;
    assert_eq!(ids_of(&by_name).len(), 5);
    let (_, by_worker) = s.get(&format!("/api/tasks?worker={}", s.hostname)).await;
    assert_eq!(ids_of(&by_worker).len(), 6);
    let (_, by_id) = s.get(&format!("/api/tasks?id={}", ids[2])).await;
    assert_eq!(ids_of(&by_id), vec![ids[2].clone()]);
    let (_, future) = s.get("/api/tasks?since=2999-01-01T00:00:00Z").await;
    assert!(ids_of(&future).is_empty());

    // One task: arguments, result, error, timings.
    let (st, t) = s.get(&format!("/api/tasks/{}", ids[3])).await;
    assert_eq!(st, 200);
    assert_eq!(
        (t["state"].clone(), t["args"].clone()),
        (json!("SUCCESS"), json!([3]))
    );
    assert_eq!(t["result"]["args"], json!([3]));
    assert!(t["started_at"].is_string() && t["done_at"].is_string() && t["runtime"].is_number());
    let (_, f) = s.get(&format!("/api/tasks/{failed}")).await;
    assert_eq!(f["error"]["type"], "TaskFailed");
    assert_eq!(f["worker"], s.hostname.as_str());

    // Bad input and unknown ids.
    assert_eq!(s.get("/api/tasks?before=garbage").await.0, 400);
    assert_eq!(s.get("/api/tasks?since=yesterday").await.0, 400);
    assert_eq!(s.get("/api/tasks/no-such-task").await.0, 404);

    // The worker: alive, from its heartbeat row, with counts from events
    // and its pool, queues and memory from remote control.
    let host = s.hostname.clone();
    let queue = s.config.default_queue.clone();
    eventually(
        12,
        "the worker with events' counts and its stats",
        || async {
            let (_, w) = s.get("/api/workers").await;
            w["workers"].as_array().is_some_and(|l| {
                l.iter().any(|w| {
                    w["hostname"] == host.as_str()
                        && w["alive"] == true
                        && w["source"] == "heartbeat"
                        && w["processed"].as_u64() >= Some(6)
                        && w["concurrency"].as_u64() >= Some(1)
                        && w["rss_kb"].as_u64() > Some(0)
                        && w["queues"] == json!([queue.as_str()])
                })
            })
        },
    )
    .await;

    // Queues: ours from the management API (its figures lag by its
    // collection interval, 5 s), with the worker consuming it.
    eventually(
        15,
        "our queue with its consumer, from the management API",
        || async {
            let (st, q) = s.get("/api/queues").await;
            st == 200
                && q["source"] == "management"
                && q["queues"].as_array().is_some_and(|l| {
                    l.iter().any(|x| {
                        x["name"] == queue.as_str() && x["consumers"] == 1 && x["ready"] == 0
                    })
                })
        },
    )
    .await;

    // Overview: the last hour's counts.
    let (_, o) = s.get("/api/overview").await;
    assert_eq!(
        (
            o["last_hour"]["succeeded"].as_u64(),
            o["last_hour"]["failed"].as_u64()
        ),
        (Some(5), Some(1))
    );
    assert_eq!(o["minutes"].as_array().map(Vec::len), Some(60));
    s.stop().await;
}

fn ids_of(page: &Value) -> Vec<String> {
    page["tasks"].as_array().map_or(Vec::new(), |l| {
        l.iter()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_token_and_do_what_they_say() {
    let s = stack("dash-act", Some(TOKEN), true).await;
    // Bound to loopback: a request naming another host (DNS rebinding) is refused,
    // even with the token.
    let rebound = s
        .http
        .post(s.url(&format!("/api/tasks/{}/revoke", uuid::Uuid::new_v4())))
        .header("Host", "evil.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(rebound.status().as_u16(), 403);
    let failed = s.run("celeriac.fail", vec![json!("once")]).await;
    let later = s
        .client
        .send_task(
            ECHO,
            vec![],
            Default::default(),
            celeriac::ApplyOptions::new().countdown(std::time::Duration::from_secs(600)),
        )
        .await
        .expect("sent")
        .id()
        .to_owned();
    let revoke = format!("/api/tasks/{later}/revoke");
    assert_eq!(s.post(&revoke, None).await.0, 401);
    assert_eq!(s.post(&revoke, Some("wrong")).await.0, 403);
    let (st, r) = s.post(&revoke, Some(TOKEN)).await;
    assert_eq!((st, r["revoked"].clone()), (200, json!(true)), "{r}");
    assert_eq!(
        s.get(&format!("/api/tasks/{later}")).await.1["state"],
        "REVOKED"
    );

    // Retry: the same call under a new id; only for an unsuccessful task.
    let (st, r) = s
        .post(&format!("/api/tasks/{failed}/retry"), Some(TOKEN))
        .await;
    assert_eq!(st, 200, "{r}");
    let again = r["retried_as"].as_str().expect("new id").to_owned();
    assert_ne!(again, failed);
    eventually(20, "the retried task's failure", || async {
        s.get(&format!("/api/tasks/{again}")).await.1["error"]["message"] == "once"
    })
    .await;
    let ok = s.run(ECHO, vec![]).await;
    assert_eq!(
        s.post(&format!("/api/tasks/{ok}/retry"), Some(TOKEN))
            .await
            .0,
        409
    );

    // Schedules: a database entry, paused, resumed and run now.
    let store = Store::new(
        s.client
            .backend()
            .await
            .expect("backend")
            .connection()
            .clone(),
    );
    let spec: TriggerSpec =
        serde_json::from_value(json!({"type": "cron", "expr": "0 3 * * *"})).expect("spec");
    store
        .add(&Entry::new("nightly", ECHO, spec), chrono::Utc::now())
        .await
        .expect("added");
    let (_, list) = s.get("/api/schedules").await;
    let nightly = &list["schedules"][0];
    assert_eq!(
        (nightly["name"].clone(), nightly["paused"].clone()),
        (json!("nightly"), json!(false))
    );
    assert_eq!(
        nightly["next"].as_array().map(Vec::len),
        Some(5),
        "{nightly}"
    );
    assert_eq!(s.post("/api/schedules/nightly/pause", None).await.0, 401);
    assert_eq!(
        s.post("/api/schedules/nightly/pause", Some(TOKEN)).await.0,
        200
    );
    assert!(
        !store
            .get("nightly")
            .await
            .expect("read")
            .expect("entry")
            .enabled
    );
    assert_eq!(
        s.get("/api/schedules").await.1["schedules"][0]["paused"],
        true
    );
    assert_eq!(
        s.post("/api/schedules/nightly/resume", Some(TOKEN)).await.0,
        200
    );
    assert!(
        store
            .get("nightly")
            .await
            .expect("read")
            .expect("entry")
            .enabled
    );
    assert_eq!(
        s.post("/api/schedules/nope/pause", Some(TOKEN)).await.0,
        404
    );
    assert_eq!(
        s.post("/api/schedules/nightly/explode", Some(TOKEN))
            .await
            .0,
        404
    );
    let (st, run) = s.post("/api/schedules/nightly/run", Some(TOKEN)).await;
    assert_eq!(st, 200);
    assert!(run["task_id"].is_string());

    assert_eq!(
        s.post("/api/dlq/no-such-id/replay", Some(TOKEN)).await.0,
        404
    );

    // A dashboard without a token refuses every action.
    let (base, stop) = support::serve(&s.config, None).await;
    let r = s
        .http
        .post(format!("{base}{revoke}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 403);
    let _ = stop.send(());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_open_event_streams() {
    use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
    use std::time::Duration;

    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("dash-stop"));
    let (base, stop, served) = support::serving(&config, None).await;
    // A browser tab: an events stream, open and read from.
    let mut events = reqwest::get(format!("{base}/api/events"))
        .await
        .expect("events");
    assert!(events.status().is_success());
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .expect("a first event (the tick) within 10 s")
        .expect("read");
    assert!(first.is_some());
    // Ctrl-C: the server returns at once, not when the tab is closed (and
    // before its 5 s backstop for slow requests).
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(3), served)
        .await
        .expect("the dashboard stops within 3 s with a tab open")
        .expect("join")
        .expect("served");
    let rest = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the events stream ended");
}
