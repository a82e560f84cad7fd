//! `--http`: `/metrics` scraped and parsed (every listed metric with its
//! type, counters moving after tasks), `/health` 200 while consuming and
//! 503 once the broker goes away (a private proxy to it is cut; the shared
//! RabbitMQ is left alone), and task progress stored as PROGRESS, throttled,
//! never over the final outcome.

use crate::support;

use celeriac::{ApplyOptions, Client, TaskState};
use celeriac_common::TaskDef;
use celeriac_common::backend::{ResultBackend, TaskOutcome};
use celeriac_common::netfault::{Proxy, ProxyMode};
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use celeriac_worker::{TaskContext, TaskFailure, Worker};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

task!(Add, "m.add", (i64, i64), i64);
task!(Broken, "m.broken", (), ());
task!(Steps, "m.steps", (u64,), u64);

/// Every metric the worker lists, with its type.
const LISTED: [(&str, &str); 17] = [
    ("celery_task_received_total", "counter"),
    ("celery_task_started_total", "counter"),
    ("celery_task_succeeded_total", "counter"),
    ("celery_task_failed_total", "counter"),
    ("celery_task_retried_total", "counter"),
    ("celery_task_revoked_total", "counter"),
    ("celery_task_rejected_total", "counter"),
    ("celery_task_runtime", "histogram"),
    ("celeriac_task_queue_wait_seconds", "histogram"),
    ("celery_worker_up", "gauge"),
    ("celery_worker_tasks_active", "gauge"),
    ("celeriac_worker_prefetch_in_use", "gauge"),
    ("celeriac_worker_prefetch_limit", "gauge"),
    ("celeriac_worker_reconnects_total", "counter"),
    ("celeriac_worker_events_dropped_total", "counter"),
    ("celery_queue_length", "gauge"),
    ("celery_active_consumer_count", "gauge"),
];

/// `GET path` over HTTP/1.1; the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (code, body.to_owned())
}

/// A scrape: `# TYPE` lines by name, and samples by their full series text.
struct Scrape {
    types: HashMap<String, String>,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let value = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value: {line}"));
                assert!(
                    samples.insert(series.to_owned(), value).is_none(),
                    "twice: {line}"
                );
            }
        }
        Scrape { types, samples }
    }

    /// The sum of the samples of `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                series.split('{').next() == Some(name)
                    && labels
                        .iter()
                        .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_and_health_follows_the_broker() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let queue = unique("metrics");
    let config = testing::config(&db.url, &queue);
    let mut proxy = Proxy::start(&config.broker_url, ProxyMode::Forward)
        .await
        .expect("proxy");
    let mut worker_config = config.clone();
    worker_config.broker_url = proxy.url();
    worker_config.worker_http_addr = Some("127.0.0.1:0".into());
    worker_config.hostname = "metrics@test".into();
    let worker = Worker::builder(worker_config)
        .register::<Add, _, _, _>(|_, (x, y)| async move { Ok::<_, TaskFailure>(x + y) })
        .register::<Broken, _, _, _>(|_, ()| async {
            Err::<(), _>(TaskFailure::new("ValueError", "broken on purpose"))
        })
        .build()
        .await
        .expect("worker");
    let addr = worker.http_addr().expect("an HTTP address");
    let running = support::InProcess::spawn(worker);

    let client = Client::connect(config.clone()).await.expect("client");
    let deadline = Instant::now() + WAIT;
    while get(addr, "/health").await.0 != 200 {
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = get(addr, "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(body.contains("consuming 1 queue"), "{body}");

    for i in 0..3 {
        let r = client.delay::<Add>((i, 1)).await.expect("send");
        assert_eq!(r.get(WAIT).await.expect("result"), i + 1);
    }
    let broken = client.delay::<Broken>(()).await.expect("send");
    assert!(broken.get(WAIT).await.is_err());
    let unknown_task = client
        .send_task("m.unknown", vec![], Default::default(), ApplyOptions::new())
        .await
        .expect("send");
    let _ = unknown_task.wait(WAIT).await;

    let (code, text) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let scrape = Scrape::parse(&text);
    for (name, kind) in LISTED {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "{name} in\n{text}"
        );
    }
    let add = [
        ("name", Add::NAME),
        ("hostname", "metrics@test"),
        ("queue_name", queue.as_str()),
    ];
    assert_eq!(
        scrape.sum("celery_task_received_total", &add),
        3.0,
        "{text}"
    );
    assert_eq!(
        scrape.sum("celery_task_succeeded_total", &add),
        3.0,
        "{text}"
    );
    assert_eq!(scrape.sum("celery_task_runtime_count", &add), 3.0, "{text}");
    assert_eq!(
        scrape.sum("celeriac_task_queue_wait_seconds_count", &add),
        3.0,
        "{text}"
    );
    let failed = [("name", Broken::NAME), ("exception", "ValueError")];
    assert_eq!(
        scrape.sum("celery_task_failed_total", &failed),
        1.0,
        "{text}"
    );
    let unknown = [("name", "m.unknown"), ("exception", "NotRegistered")];
    assert_eq!(
        scrape.sum("celery_task_failed_total", &unknown),
        1.0,
        "{text}"
    );
    let host = [("hostname", "metrics@test")];
    assert_eq!(scrape.sum("celery_worker_up", &host), 1.0, "{text}");
    assert_eq!(
        scrape.sum("celeriac_worker_prefetch_limit", &host),
        64.0,
        "{text}"
    );
    let q = [("queue_name", queue.as_str())];
    assert_eq!(scrape.sum("celery_queue_length", &q), 0.0, "{text}");
    assert_eq!(
        scrape.sum("celery_active_consumer_count", &q),
        1.0,
        "{text}"
    );
    assert!(text.contains("celery_task_runtime_bucket{"), "{text}");

    // The broker goes away (the proxy closes every connection and stops
    // listening): /health answers 503, saying why.
    proxy.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (code, body) = get(addr, "/health").await;
        if code == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still {code}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("\"status\":\"unavailable\""), "{body}");
    let scrape = Scrape::parse(&get(addr, "/metrics").await.1);
    assert_eq!(scrape.sum("celery_worker_up", &host), 0.0);

    running.stop(WAIT).await.expect("worker ran");
    // The server stops with the worker.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    client.close().await;
    testing::cleanup(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_stored_throttled_and_never_over_the_outcome() {
    let db = TestDatabase::create(DbKind::Sqlite).await.expect("db");
    let config = testing::config(&db.url, &unique("progress"));
    let worker = Worker::builder(config.clone())
        .register::<Steps, _, _, _>(|ctx: TaskContext, (n,)| async move {
            // A tight loop of reports, then a pause: the last one must be
            // stored during the pause although it came within the throttle.
            for i in 1..=n {
                ctx.progress(i, n, json!({"step": format!("s{i}")}));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok::<_, TaskFailure>(n * 10)
        })
        .build()
        .await
        .expect("worker");
    let running = support::InProcess::spawn(worker);
    let client = Client::connect(config.clone()).await.expect("client");
    let backend = ResultBackend::connect(&db.url).await.expect("backend");

    let r = client.delay::<Steps>((100,)).await.expect("send");
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let row = backend.get(r.id()).await.expect("read");
        if let Some(row) = row {
            if row.state.is_ready() {
                break row;
            }
            if row.state == TaskState::Progress {
                let v = row.result.clone().expect("progress value");
                assert_eq!(v["total"], 100);
                assert_eq!(v["step"], format!("s{}", v["done"]));
                seen.push(v["done"].as_u64().expect("done"));
            }
        }
        assert!(Instant::now() < deadline, "never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(last.state, TaskState::Success);
    assert_eq!(
        last.result,
        Some(json!(1000)),
        "the outcome is not overwritten"
    );
    assert_eq!(
        seen.last(),
        Some(&100),
        "the last report is stored: {seen:?}"
    );
    seen.dedup();
    // About 200 ms of reports at one write per 250 ms: a few values, not 100.
    assert!(seen.len() <= 4, "throttled: {seen:?}");

    // A progress report arriving after the outcome is refused by the backend.
    let mut late = TaskOutcome::new(r.id(), Steps::NAME, TaskState::Progress);
    late.result = Some(json!({"done": 1, "total": 100}));
    backend.store_progress(late).await.expect("store");
    let row = backend.get(r.id()).await.expect("read").expect("row");
    assert_eq!(
        (row.state, row.result),
        (TaskState::Success, Some(json!(1000)))
    );

    running.stop(WAIT).await.expect("worker ran");
    client.close().await;
    testing::cleanup(&config).await;
}
