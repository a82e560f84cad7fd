//! `celeriac-bench beat`: one beat with many database entries,
//! against the configured RabbitMQ and a throw-away SQLite file (or
//! `--database URL`, which must be an empty database).
//!
//! Schedule: `--entries` interval entries with period `--period`, their
//! phases spread evenly (millisecond resolution) over the period except for
//! an idle gap, so that about `entries / period` runs fall due each second
//! during the `--duration` window, none during the following `--idle`
//! window, and `--burst` of them all at the same instant in the middle of
//! the window (a top-of-the-minute crowd). Reported: load time, resident
//! memory, the process's CPU use while idle, and lateness of each run
//! (broker confirm minus due time) as p50 / p99 / max, p50 and p99
//! nearest-rank ([`crate::stats`]); then the load time of a second beat
//! started on the same database, where every entry has a run state.

use std::collections::HashMap;
use std::time::Duration;

use celeriac_beat::clock::format_instant;
use celeriac_beat::events::EventKind;
use celeriac_beat::runner::Service;
use celeriac_beat::schedule::entry::Entry;
use celeriac_beat::schedule::store::Store;
use celeriac_beat::trigger::TriggerSpec;
use celeriac_common::cli::one_line;
use celeriac_common::shutdown::stop_signal;
use celeriac_common::{Config, ResultBackend};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use tokio::sync::oneshot;

use crate::cleanup::delete_queues;
use crate::error::BenchError;
use crate::procfs;
use crate::stats::Samples;

/// Flags of `celeriac-bench beat`.
#[derive(Debug, clap::Args)]
pub(crate) struct BeatArgs {
    /// Entries in the schedule.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Period of every entry, in seconds.
    #[arg(long, default_value_t = 3600)]
    period: u64,
    /// Seconds of the measured window (runs falling due).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Seconds with nothing due after the window (CPU measured there).
    #[arg(long, default_value_t = 15)]
    idle: u64,
    /// Entries all due at the same instant, mid-window.
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// Seconds between start and the first run (room to load the schedule).
    #[arg(long, default_value_t = 20)]
    lead_in: u64,
    /// Database URL [default: a temporary SQLite file].
    #[arg(long)]
    database: Option<String>,
    /// Internal: only write the schedule, first run due at this instant
    /// (RFC 3339), into `--database`, and exit. The bench runs itself so to
    /// fill the database, so that what writing 100,000 rows leaves in the
    /// allocator is not counted in beat's memory.
    #[arg(long, hide = true)]
    fill_only: Option<String>,
}

/// Runs the benchmark and prints the figures; deletes its queue and
/// temporary directory at the end, also after an error, Ctrl-C or SIGTERM.
pub(crate) async fn run(args: BeatArgs, mut config: Config) -> Result<(), BenchError> {
    if let Some(base) = &args.fill_only {
        return fill(&args, base).await;
    }
    let dir = std::env::temp_dir().join(format!(
        "celeriac-beat-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    config.result_backend = match &args.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()),
    };
    let queue = format!(
        "celeriac.beat-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    config.default_queue = queue.clone();
    config.beat_lease_secs = 5;
    let outcome = tokio::select! {
        r = measure(&args, &config) => r,
        s = stop_signal() => Err(BenchError::new(format!("stopped by {s}"))),
    };
    let queue = std::slice::from_ref(&queue);
    delete_queues(&config, queue, queue).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn measure(args: &BeatArgs, config: &Config) -> Result<(), BenchError> {
    let now = Utc::now().trunc_subsecs(0);
    let base = now + TimeDelta::seconds(i64::try_from(args.lead_in)?);
    let started = std::time::Instant::now();
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args(["beat", "--database", &config.result_backend])
        .args(["--fill-only", &format_instant(base)])
        .args(["--entries", &args.entries.to_string()])
        .args(["--period", &args.period.to_string()])
        .args(["--duration", &args.duration.to_string()])
        .args(["--idle", &args.idle.to_string()])
        .args(["--burst", &args.burst.to_string()])
        .kill_on_drop(true)
        .status()
        .await?;
    if !status.success() {
        return Err(BenchError::new(format!(
            "filling the schedule failed ({status})"
        )));
    }
    println!(
        "inserted {} entries in {:.1} s (in a child process); first run due {}",
        args.entries,
        started.elapsed().as_secs_f64(),
        format_instant(base)
    );

    let rss_before = memory("VmRSS:");
    let service = Service::new(config.clone(), None);
    let mut events = service.events().subscribe();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(service.run(async {
        let _ = stop_rx.await;
    }));

    let window_end = base + TimeDelta::seconds(i64::try_from(args.duration)?);
    let idle_end = window_end + TimeDelta::seconds(i64::try_from(args.idle)?);
    let mut lateness: HashMap<bool, Vec<f64>> = HashMap::new();
    let mut worst: Vec<(f64, DateTime<Utc>)> = Vec::new();
    let mut rss_loaded = 0;
    let mut loaded_split = (0, 0);
    let mut loaded_at: Option<DateTime<Utc>> = None;
    let mut early = 0usize;
    let mut cpu_mark: Option<(std::time::Instant, f64)> = None;
    let mut cpu_idle = None;
    let idle_from = window_end + TimeDelta::seconds(2);
    let idle_to = idle_end - TimeDelta::seconds(1);
    loop {
        let now = Utc::now();
        if cpu_mark.is_none() && now >= idle_from {
            cpu_mark = Some((std::time::Instant::now(), cpu_seconds()));
        }
        if now >= idle_to {
            if let Some((at, cpu)) = cpu_mark {
                cpu_idle = Some((cpu_seconds() - cpu) / at.elapsed().as_secs_f64());
            }
            break;
        }
        let wait = (idle_from.min(idle_to) - now)
            .to_std()
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        let event = match tokio::time::timeout(wait, events.recv()).await {
            Ok(Ok(e)) => e,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                println!("warning: {n} events lost");
                continue;
            }
            Ok(Err(_)) => {
                return Err(match handle.await {
                    Ok(Err(e)) => BenchError::new(format!("beat stopped: {}", one_line(&e))),
                    _ => BenchError::new("beat stopped early"),
                });
            }
            Err(_) => continue,
        };
        match event.kind {
            EventKind::Loaded => {
                rss_loaded = memory("VmRSS:");
                loaded_split = (memory("RssAnon:"), memory("RssFile:"));
                loaded_at = Some(event.at);
                println!("{}", event.detail.unwrap_or_default());
            }
            EventKind::Fired if event.scheduled_at < loaded_at => {
                // Due before the schedule was even loaded: not a firing delay.
                early += 1;
            }
            EventKind::Fired => {
                let burst = event
                    .entry
                    .as_deref()
                    .is_some_and(|e| e.starts_with("burst-"));
                let late = event.lateness_ms.unwrap_or(0.0);
                lateness.entry(burst).or_default().push(late);
                if !burst && let Some(at) = event.scheduled_at {
                    worst.push((late, at));
                }
            }
            EventKind::SendFailed | EventKind::Missed => {
                println!("warning: {:?} {:?}", event.kind, event.entry);
            }
            _ => {}
        }
    }
    let rss_steady = memory("VmRSS:");
    let steady_split = (memory("RssAnon:"), memory("RssFile:"));
    let _ = stop_tx.send(());
    handle.await??;
    let hwm = memory("VmHWM:");

    println!(
        "memory (RSS): {} MiB before beat, {} MiB just after loading, {} MiB after the run and idle window, peak {} MiB",
        rss_before / 1024,
        rss_loaded / 1024,
        rss_steady / 1024,
        hwm / 1024
    );
    // File pages are mostly this executable's code, shared with the page
    // cache; anonymous pages are the process's own data.
    println!(
        "memory split (anonymous / files): {:.1} / {:.1} MiB just after loading, {:.1} / {:.1} MiB after the run and idle window",
        loaded_split.0 as f64 / 1024.0,
        loaded_split.1 as f64 / 1024.0,
        steady_split.0 as f64 / 1024.0,
        steady_split.1 as f64 / 1024.0,
    );
    if early > 0 {
        println!(
            "{early} runs fell due before the schedule was loaded and are left out (raise --lead-in)"
        );
    }
    match cpu_idle {
        Some(c) => println!("cpu while nothing is due: {:.2}% of one core", c * 100.0),
        None => println!("cpu while nothing is due: not measured"),
    }
    for (burst, label) in [(false, "spread"), (true, "burst ")] {
        let v = Samples::new(lateness.remove(&burst).unwrap_or_default());
        let (Some(p50), Some(p99), Some(max)) = (v.percentile(50.0), v.percentile(99.0), v.max())
        else {
            println!("lateness {label}: no runs");
            continue;
        };
        println!(
            "lateness {label}: {} runs, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            v.len()
        );
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let burst_at = base + TimeDelta::milliseconds(i64::try_from(args.duration * 500)?);
    let worst: Vec<String> = worst
        .iter()
        .take(3)
        .map(|(late, at)| {
            format!(
                "{late:.1} ms at burst{:+} ms",
                (*at - burst_at).num_milliseconds()
            )
        })
        .collect();
    println!("latest spread runs: {}", worst.join(", "));
    if args.burst > 0 {
        let floor =
            crate::beat_floor::plain_burst(config, &config.default_queue, args.burst).await?;
        let (p50, p99, max) = (floor.percentile(50.0), floor.percentile(99.0), floor.max());
        if let (Some(p50), Some(p99), Some(max)) = (p50, p99, max) {
            println!(
                "floor: plain lapin, {} messages published at once, first publish to \
                 confirm: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
                floor.len()
            );
        }
    }
    println!(
        "after a restart, every entry with its run state: {}",
        reload(config).await?
    );
    Ok(())
}

/// A second beat on the same database, as after a restart or a failover
/// (every entry now has a run state to read with it): its load event's
/// detail. It is stopped once loaded.
async fn reload(config: &Config) -> Result<String, BenchError> {
    let service = Service::new(config.clone(), None);
    let mut events = service.events().subscribe();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(service.run(async {
        let _ = stop_rx.await;
    }));
    let loaded = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(e) if e.kind == EventKind::Loaded => return Some(e.detail.unwrap_or_default()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await;
    let _ = stop_tx.send(());
    let stopped = handle.await?;
    match loaded {
        Ok(Some(detail)) => Ok(detail),
        Ok(None) => Err(BenchError::new(match stopped {
            Err(e) => format!("the restarted beat stopped: {}", one_line(&e)),
            Ok(()) => "the restarted beat stopped before loading".to_owned(),
        })),
        Err(_) => Err(BenchError::new(
            "the restarted beat did not load within 60 s",
        )),
    }
}

/// `--fill-only`: migrates `--database` and writes the schedule into it.
async fn fill(args: &BeatArgs, base: &str) -> Result<(), BenchError> {
    let url = args
        .database
        .as_deref()
        .ok_or_else(|| BenchError::new("--fill-only needs --database"))?;
    let base = celeriac_beat::clock::parse_instant(base)
        .ok_or_else(|| BenchError::new(format!("--fill-only: not an instant: {base}")))?;
    let backend = ResultBackend::connect(url).await?;
    backend.migrate().await?;
    let store = Store::new(backend.connection().clone());
    let now = base - TimeDelta::seconds(i64::try_from(args.lead_in)?);
    store.add_many(&schedule(args, base)?, now).await?;
    Ok(())
}

/// The entries: spread over the period (with an idle gap) and a burst.
fn schedule(args: &BeatArgs, base: DateTime<Utc>) -> Result<Vec<Entry>, BenchError> {
    let period_ms = args
        .period
        .checked_mul(1000)
        .ok_or_else(|| BenchError::new("--period too long"))?;
    let idle_ms = args.idle * 1000;
    let window_ms = args.duration * 1000;
    if window_ms + idle_ms >= period_ms {
        return Err(BenchError::new(
            "--duration + --idle must be shorter than --period",
        ));
    }
    let burst = args.burst.min(args.entries);
    let spread = args.entries - burst;
    let mut out = Vec::with_capacity(args.entries);
    for i in 0..args.entries {
        let (name, offset_ms) = if i < burst {
            (format!("burst-{i:06}"), window_ms / 2)
        } else {
            let k = u64::try_from(i - burst)?;
            let mut off = k * (period_ms - idle_ms) / u64::try_from(spread.max(1))?;
            if off >= window_ms {
                off += idle_ms;
            }
            (format!("spread-{i:06}"), off)
        };
        let start = base + TimeDelta::milliseconds(i64::try_from(offset_ms)?);
        let trigger = TriggerSpec::Interval {
            weeks: None,
            days: None,
            hours: None,
            minutes: None,
            seconds: Some(args.period),
            every: None,
            start_date: Some(format_instant(start)),
            end_date: None,
            jitter_seconds: None,
            timezone: None,
            calendars: Vec::new(),
        };
        out.push(Entry::new(name, "celeriac.noop", trigger));
    }
    Ok(out)
}

/// A figure of this process's `/proc/self/status` in KiB (0 where unavailable).
fn memory(key: &str) -> u64 {
    procfs::status_kb(std::process::id(), key).unwrap_or(0)
}

/// CPU time used by this process so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    procfs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}
