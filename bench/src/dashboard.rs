//! `celeriac-bench dashboard`: the dashboard's task search and task page
//! against a large result table. Fills a fresh PostgreSQL database (on the
//! server of `CELERIAC_TEST_POSTGRES_URL`, loopback by default, dropped at
//! the end) with `--rows` task rows, one `INSERT ... SELECT
//! generate_series` per 100,000 (20 task names, 8 workers, 2 % FAILURE,
//! 1 % RETRY, 0.1 % STARTED, spread over 30 days, through every index the
//! migrations create), serves a dashboard on loopback and times its JSON
//! API over HTTP: each query `--repeat` times after a warm-up, reported as
//! p50, p95 and max in milliseconds (nearest rank).

use crate::chord::results;
use crate::error::{BenchError, err};
use crate::stats::Samples;
use celeriac_common::{Config, ResultBackend};
use celeriac_dashboard::{Dashboard, Options};
use sea_orm::ConnectionTrait;
use serde_json::Value;
use std::time::Instant;

/// Flags of `celeriac-bench dashboard`.
#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Task rows to fill the result table with.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Times each query is timed (after 3 untimed).
    #[arg(long, default_value_t = 50)]
    repeat: usize,
}

/// Rows per INSERT statement.
const CHUNK: u64 = 100_000;

async fn fill(backend: &ResultBackend, rows: u64) -> Result<(), BenchError> {
    let db = backend.connection();
    let mut from = 1;
    while from <= rows {
        let to = (from + CHUNK - 1).min(rows);
        // Row i was created (30 days × (rows - i) / rows) ago.
        let sql = format!(
            "INSERT INTO celeriac_taskmeta (task_id, task_name, state, result, content_type, \
             error_type, error_message, args, kwargs, worker, worker_id, retries, queue, \
             created_at, started_at, done_at) \
             SELECT md5('bench' || i)::uuid::text, 'tasks.job' || (i % 20), \
               CASE WHEN i % 1000 = 7 THEN 'STARTED' WHEN i % 50 = 3 THEN 'FAILURE' \
                    WHEN i % 100 = 5 THEN 'RETRY' ELSE 'SUCCESS' END, \
               '{{\"ok\": true}}', 'application/json', \
               CASE WHEN i % 50 = 3 THEN 'ValueError' END, \
               CASE WHEN i % 50 = 3 THEN 'bad input ' || i END, \
               '[' || i || ', \"x\"]', '{{}}', 'celeriac@host' || (i % 8), 'w' || (i % 8), \
               0, 'celery', t, t + interval '5 ms', \
               CASE WHEN i % 1000 = 7 THEN NULL ELSE t + (i % 200) * interval '1 ms' END \
             FROM (SELECT i, now() - ({rows} - i) * (interval '30 days' / {rows}) AS t \
                   FROM generate_series({from}::bigint, {to}::bigint) AS i) AS g"
        );
        db.execute_unprepared(&sql)
            .await
            .map_err(err("cannot fill the table"))?;
        eprintln!("celeriac-bench: {to} rows");
        from = to + 1;
    }
    db.execute_unprepared("ANALYZE celeriac_taskmeta").await?;
    Ok(())
}

/// Times `GET base+path`, `repeat` times after 3 untimed; milliseconds.
async fn time(http: &reqwest::Client, url: &str, repeat: usize) -> Result<Samples, BenchError> {
    let mut ms = Vec::with_capacity(repeat);
    for i in 0..repeat + 3 {
        let start = Instant::now();
        let answer = http.get(url).send().await.map_err(err("request failed"))?;
        if !answer.status().is_success() {
            return Err(BenchError::new(format!("{url}: HTTP {}", answer.status())));
        }
        answer.bytes().await.map_err(err("request failed"))?;
        if i >= 3 {
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(Samples::new(ms))
}

fn report(what: &str, s: &Samples) {
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "{what:<44} {:>7} {:>7} {:>7}",
        f(s.percentile(50.0)),
        f(s.percentile(95.0)),
        f(s.max())
    );
}

/// Runs the benchmark and prints the figures.
pub(crate) async fn run(args: DashboardArgs, mut config: Config) -> Result<(), BenchError> {
    let db = results("postgres").await?;
    config.result_backend = db.url.clone();
    let outcome = measure(&args, config).await;
    db.remove().await;
    outcome
}

async fn measure(args: &DashboardArgs, config: Config) -> Result<(), BenchError> {
    let backend = ResultBackend::connect(&config.result_backend).await?;
    backend.migrate().await?;
    let start = Instant::now();
    fill(&backend, args.rows).await?;
    println!(
        "filled {} rows in {:.1} s",
        args.rows,
        start.elapsed().as_secs_f64()
    );
    let options = Options {
        management_url: Some("off".into()),
        ..Options::default()
    };
    let dashboard = Dashboard::open(config, options).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dashboard.serve(listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let outcome = queries(&http, &base, args.repeat).await;
    let _ = stop.send(());
    let _ = server.await;
    outcome
}

/// GETs `url` and reads its JSON answer.
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, BenchError> {
    http.get(url)
        .send()
        .await
        .map_err(err("request failed"))?
        .json()
        .await
        .map_err(err("bad answer"))
}

async fn queries(http: &reqwest::Client, base: &str, repeat: usize) -> Result<(), BenchError> {
    let page = get_json(http, &format!("{base}/api/tasks?limit=50&state=FAILURE")).await?;
    let failed = page["tasks"][7]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // A key 200 pages (10,000 rows) down.
    let mut next = page["next"].clone();
    for _ in 0..200 {
        let Some(k) = next.as_str() else { break };
        let p = get_json(http, &format!("{base}/api/tasks?limit=50&before={k}")).await?;
        next = p["next"].clone();
    }
    let deep = next.as_str().unwrap_or_default().to_owned();
    let ago = |d| (chrono::Utc::now() - chrono::TimeDelta::days(d)).format("%Y-%m-%dT%H:%M:%SZ");
    let day = format!("/api/tasks?limit=50&since={}&until={}", ago(10), ago(9));
    println!("{:<44} {:>7} {:>7} {:>7}", "GET (ms)", "p50", "p95", "max");
    let cases = [
        ("/api/tasks (newest 50)", "/api/tasks?limit=50".to_owned()),
        (
            "/api/tasks?name=",
            "/api/tasks?limit=50&name=tasks.job7".to_owned(),
        ),
        (
            "/api/tasks?state=FAILURE",
            "/api/tasks?limit=50&state=FAILURE".to_owned(),
        ),
        (
            "/api/tasks?state=STARTED",
            "/api/tasks?limit=50&state=STARTED".to_owned(),
        ),
        (
            "/api/tasks?worker=",
            "/api/tasks?limit=50&worker=celeriac@host3".to_owned(),
        ),
        (
            "/api/tasks?name=&state=FAILURE",
            "/api/tasks?limit=50&name=tasks.job3&state=FAILURE".to_owned(),
        ),
        (
            "/api/tasks?before= (10,000 rows down)",
            format!("/api/tasks?limit=50&before={deep}"),
        ),
        ("/api/tasks?since=&until= (a day, 10 days ago)", day),
        ("/api/tasks?id=", format!("/api/tasks?id={failed}")),
        (
            "/api/tasks/{id} (task page)",
            format!("/api/tasks/{failed}"),
        ),
        ("/api/overview", "/api/overview".to_owned()),
    ];
    for (what, path) in cases {
        report(what, &time(http, &format!("{base}{path}"), repeat).await?);
    }
    Ok(())
}
