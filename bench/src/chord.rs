//! `celeriac-bench chord`: a chord of `--members` no-op tasks end to end
//! (sent, run by one `celeriac-worker`, counted in the result backend, the
//! callback run), against the same members sent as a plain group. Reported:
//! both end-to-end times and their ratio, and the callback's delay: from
//! the last member's end (its `done_at`) to the callback's start.
//!
//! `--results sqlite` (a throw-away file, the default), `postgres` or
//! `mysql` (a fresh database on the server of `CELERIAC_TEST_POSTGRES_URL` /
//! `CELERIAC_TEST_MYSQL_URL`, loopback by default, dropped at the end), or
//! any result-backend URL of an empty database.

use crate::cleanup::delete_queues;
use crate::error::{BenchError, err};
use crate::throughput::worker::{self, WorkerProc, WorkerSpec};
use celeriac::Client;
use celeriac::canvas::{Canvas, TaskSig, chord, group};
use celeriac_common::config::QueueType;
use celeriac_common::diagnostics::Noop;
use celeriac_common::{Config, ResultBackend, TaskDef};
use sea_orm::{ConnectionTrait, Database};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Flags of `celeriac-bench chord`.
#[derive(Debug, clap::Args)]
pub(crate) struct ChordArgs {
    /// Members of the chord (and of the plain group).
    #[arg(long, default_value_t = 10_000)]
    members: usize,
    /// Result backend: sqlite, postgres, mysql, or a URL.
    #[arg(long, default_value = "sqlite")]
    results: String,
    /// The worker's concurrency.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The celeriac-worker binary [default: next to celeriac-bench].
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Seconds to wait for each run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// A result backend made for the run, removed at the end (also used by
/// `celeriac-bench dashboard`).
pub(crate) struct Results {
    pub(crate) url: String,
    drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn results(spec: &str) -> Result<Results, BenchError> {
    let name = format!("celeriac_bench_{}", uuid::Uuid::new_v4().simple());
    let server =
        |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let admin = match spec {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let url = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            );
            return Ok(Results {
                url,
                drop: None,
                _dir: Some(dir),
            });
        }
        "postgres" => server(
            "CELERIAC_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        "mysql" => server(
            "CELERIAC_TEST_MYSQL_URL",
            "mysql://root@127.0.0.1:3306/test",
        ),
        url => {
            return Ok(Results {
                url: url.to_owned(),
                drop: None,
                _dir: None,
            });
        }
    };
    let db = Database::connect(&admin)
        .await
        .map_err(err("cannot connect to the database server"))?;
    db.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let _ = db.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok(Results {
        url: format!("{base}/{name}"),
        drop: Some((admin.clone(), name)),
        _dir: None,
    })
}

impl Results {
    pub(crate) async fn remove(self) {
        if let Some((admin, name)) = self.drop
            && let Ok(db) = Database::connect(&admin).await
        {
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE {name}"))
                .await;
            let _ = db.close().await;
        }
    }
}

/// Runs the benchmark and prints the figures.
pub(crate) async fn run(args: ChordArgs, mut config: Config) -> Result<(), BenchError> {
    let results = results(&args.results).await?;
    config.result_backend = results.url.clone();
    let queue = format!(
        "celeriac.chord-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    config.default_queue = queue.clone();
    config.dead_letter_queue = format!("{queue}.dead");
    let outcome = measure(&args, &config).await;
    delete_queues(
        &config,
        &[queue.clone(), config.dead_letter_queue.clone()],
        &[],
    )
    .await;
    results.remove().await;
    outcome
}

async fn measure(args: &ChordArgs, config: &Config) -> Result<(), BenchError> {
    let backend = ResultBackend::connect(&config.result_backend).await?;
    backend.migrate().await?;
    let bin = worker::locate(args.worker_bin.as_deref())?;
    let spec = WorkerSpec {
        bin: &bin,
        broker_url: &config.broker_url,
        result_backend: &config.result_backend,
        queue: &config.default_queue,
        dead_letter_queue: &config.dead_letter_queue,
        concurrency: args.concurrency,
        prefetch_multiplier: 4,
        hostname: "chord-bench@localhost".to_owned(),
        quorum: (config.queue_type == QueueType::Quorum).then_some(config.delay_prefix.as_str()),
        events: false,
    };
    let worker = WorkerProc::spawn(&spec, Duration::from_secs(60)).await?;
    let client = Client::connect(config.clone()).await?;
    let timeout = Duration::from_secs(args.timeout);
    let noop = || -> Canvas { TaskSig::by_name(Noop::NAME, Vec::new()).into() };
    let n = args.members;

    let started = Instant::now();
    let sent = client.send_workflow(&group((0..n).map(|_| noop()))).await?;
    let members = sent
        .as_group()
        .ok_or_else(|| BenchError::new("a group has members"))?;
    members.wait(timeout).await?;
    let plain = started.elapsed();

    let started = Instant::now();
    let sent = client
        .send_workflow(&chord((0..n).map(|_| noop()), noop()))
        .await?;
    sent.get(timeout).await?;
    let with_chord = started.elapsed();
    let header = sent
        .parent()
        .and_then(|p| p.as_group())
        .ok_or_else(|| BenchError::new("a chord has a header"))?;
    let last = backend
        .get_many(&header.ids())
        .await?
        .into_iter()
        .filter_map(|r| r.and_then(|r| r.done_at))
        .max()
        .ok_or_else(|| BenchError::new("no member recorded its end"))?;
    let callback = backend
        .get(sent.id())
        .await?
        .ok_or_else(|| BenchError::new("the callback has no row"))?;
    let chord_row = backend
        .chord(header.id())
        .await?
        .ok_or_else(|| BenchError::new("the chord has no row"))?;
    let since_last = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| (t - last).num_microseconds().unwrap_or(0) as f64 / 1e3)
    };
    let delay = since_last(callback.started_at);
    // Where the delay sits: the claim (the report that completed the
    // chord), the callback marked sent (after its confirmed publish), the
    // callback's start.
    let steps = [
        ("claimed", since_last(chord_row.fired_at)),
        ("sent", since_last(chord_row.callback_sent_at)),
        ("started", delay),
    ];
    worker.stop().await;

    println!(
        "chord benchmark: {n} no-op members, one worker (concurrency {}), results {}",
        args.concurrency, args.results
    );
    println!(
        "  plain group     : {:>9.3} s end to end",
        plain.as_secs_f64()
    );
    println!(
        "  chord           : {:>9.3} s end to end (members + callback)",
        with_chord.as_secs_f64()
    );
    println!(
        "  ratio           : {:>9.2} x the plain group",
        with_chord.as_secs_f64() / plain.as_secs_f64()
    );
    match delay {
        Some(ms) => println!(
            "  callback delay  : {ms:>9.1} ms from the last member's end to the callback's start"
        ),
        None => println!("  callback delay  : unknown (no started_at on the callback)"),
    }
    let steps: Vec<String> = steps
        .iter()
        .filter_map(|(what, at)| at.map(|ms| format!("{what} +{ms:.1}")))
        .collect();
    println!("  after the last  : {} ms", steps.join(", "));
    Ok(())
}
