//! Quickstart: a worker, a beat and a producer doing real work against the
//! local RabbitMQ, results in SQLite (`celeriac-quickstart.db`).
//!
//! Run it with `scripts/quickstart.sh` (or, with RabbitMQ already up,
//! `cargo run -p celeriac-examples --example quickstart`). You should see
//! each task's id and result printed as it completes (`celeriac.fail`
//! fails on purpose: the worker logs a WARN for it), three runs
//! sent by the beat from `examples/quickstart-schedule.toml` (every second),
//! then `quickstart: 6 tasks and 3 beat runs, all done`.

use celeriac::{ApplyOptions, Client, Config};
use celeriac_beat::runner::Service;
use celeriac_examples::{Add, WordCount, WordCountArgs};
use celeriac_worker::{TaskFailure, Worker};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    celeriac_common::telemetry::init(celeriac_common::config::LogFormat::Human, "warn");
    let mut config = Config::load(None)?;
    if std::env::var_os("CELERIAC_RESULT_BACKEND").is_none() {
        config.result_backend = "sqlite://celeriac-quickstart.db?mode=rwc".into();
    }
    config.default_queue = "celeriac-quickstart".into();
    config.queues = vec![config.default_queue.clone()];
    config.track_started = true;

    // The worker side: register tasks, run until told to stop.
    let (ticked, mut ticks) = tokio::sync::mpsc::unbounded_channel::<String>();
    let worker = Worker::builder(config.clone())
        .register_raw("tasks.tick", move |ctx, _args, _kwargs| {
            let ticked = ticked.clone();
            async move {
                let at = ctx.headers.get("beat_scheduled_at").cloned();
                let _ = ticked.send(format!(
                    "{} (scheduled {})",
                    ctx.id,
                    at.and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                ));
                Ok::<Value, TaskFailure>(json!("tick"))
            }
        })
        .with_diagnostics()
        .register::<Add, _, _, _>(|_ctx, (x, y)| async move { Ok::<_, TaskFailure>(x + y) })
        .register_blocking::<WordCount, _, _>(|_ctx, args: WordCountArgs| {
            Ok::<_, TaskFailure>(args.text.split_whitespace().count())
        })
        .build()
        .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));

    // The beat: sends `tasks.tick` every second from the schedule file.
    let schedule = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("quickstart-schedule.toml");
    let (stop_beat, beat_stopped) = tokio::sync::oneshot::channel::<()>();
    let beat = tokio::spawn(
        Service::new(config.clone(), Some(schedule)).run(async move {
            let _ = beat_stopped.await;
        }),
    );

    // The producer side: every call returns once RabbitMQ holds the message.
    let client = Client::connect(config).await?;
    let wait = Duration::from_secs(30);
    let add = client.delay::<Add>((2, 3)).await?;
    let later = client
        .apply_async::<Add>(
            (40, 2),
            ApplyOptions::new().countdown(Duration::from_secs(2)),
        )
        .await?;
    let words = client
        .delay::<WordCount>(WordCountArgs {
            text: "the quick brown fox".into(),
        })
        .await?;
    let echo = client
        .send_task(
            "celeriac.echo",
            vec![json!(1), json!("a")],
            Default::default(),
            ApplyOptions::new(),
        )
        .await?;
    let at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let scheduled = client.apply_at::<Add>(at, (1, 1)).await?;

    println!(
        "tasks.add(2, 3)            {} -> {}",
        add.id(),
        add.get(wait).await?
    );
    println!(
        "tasks.word_count(text=...) {} -> {}",
        words.id(),
        words.get(wait).await?
    );
    println!(
        "celeriac.echo(1, \"a\")      {} -> {}",
        echo.id(),
        echo.get(wait).await?
    );
    // Sent last, after an explanation: the worker logs a task's failure as
    // a WARN, which a first reader would otherwise take for a problem.
    println!(
        "celeriac.fail fails on purpose, to show a FAILURE result (the worker logs a WARN for it):"
    );
    let fail = client
        .send_task(
            "celeriac.fail",
            vec![json!("on purpose")],
            Default::default(),
            ApplyOptions::new(),
        )
        .await?;
    match fail.get(wait).await {
        Err(e) => println!("celeriac.fail(...)         {} -> {e}", fail.id()),
        Ok(v) => println!(
            "celeriac.fail(...)         {} -> unexpectedly {v}",
            fail.id()
        ),
    }
    println!(
        "tasks.add(1, 1) at +1s     {} -> {}",
        scheduled.id(),
        scheduled.get(wait).await?
    );
    let record = later.wait(wait).await?;
    println!(
        "tasks.add(40, 2) +2s       {} -> {} ({}, ran on {})",
        later.id(),
        record.result.unwrap_or_default(),
        record.state,
        record.worker.unwrap_or_default()
    );
    for n in 1..=3 {
        let run = tokio::time::timeout(wait, ticks.recv())
            .await?
            .ok_or("the worker stopped")?;
        println!("beat run {n}: tasks.tick    {run}");
    }
    println!("quickstart: 6 tasks and 3 beat runs, all done");

    let _ = stop_beat.send(());
    beat.await??;
    let _ = stop.send(());
    worker.await??;
    Ok(())
}
