//! Helpers for beat's integration tests: the command line, and a consumer
//! that records every message of a test queue. Beat processes are
//! `celeriac_common::testing::process::spawn_beat(BEAT, ..)`.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celeriac_common::testing::process;
use celeriac_common::{Config, TaskMessage};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// This crate's binary, for `testing::process::spawn_beat`.
pub const BEAT: &str = env!("CARGO_BIN_EXE_celeriac-beat");

/// The outcome of one `celeriac-beat` command.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `celeriac-beat ARGS` to completion; a command still running after
/// a minute is killed and fails the test with what it printed.
pub fn cli(config: &Config, args: &[&str]) -> Output {
    let mut child = process::command(BEAT, config)
        .env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run celeriac-beat");
    // Read as it comes, so a long output cannot fill the pipe and stall it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if began.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "celeriac-beat {args:?} still running after a minute:\n{}\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs a command that must succeed.
pub fn ok(config: &Config, args: &[&str]) -> String {
    let out = cli(config, args);
    assert_eq!(out.code, 0, "celeriac-beat {args:?} failed: {}", out.stderr);
    out.stdout
}

/// One message a beat sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub id: String,
    pub entry: String,
    pub scheduled_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
}

/// Records every message arriving on a queue (or every JSON event on a
/// queue bound to an exchange).
#[derive(Clone, Default)]
pub struct Collector {
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub events: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Collector {
    /// Starts consuming `config.default_queue` (declared first).
    pub async fn start(config: &Config) -> Collector {
        let c = Collector::default();
        let conn = celeriac_common::broker::connect(&config.broker_url, "beat-test-collector")
            .await
            .expect("broker");
        let ch = conn.create_channel().await.expect("channel");
        celeriac_common::broker::declare_task_queue(&ch, &config.default_queue, config)
            .await
            .expect("declare");
        let mut consumer = ch
            .basic_consume(
                config.default_queue.as_str().into(),
                "beat-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let messages = c.messages.clone();
        let max = config.max_message_bytes;
        tokio::spawn(async move {
            let _conn = conn;
            while let Some(Ok(d)) = consumer.next().await {
                if let Ok(msg) = TaskMessage::decode(&d.properties, &d.data, max) {
                    messages.lock().unwrap().push(received(&msg));
                }
                let _ = d.ack(BasicAckOptions::default()).await;
            }
        });
        c
    }

    /// Also records beat events (exchange `celeriac.beat`, key `beat.#`).
    pub async fn watch_events(&self, config: &Config) {
        let conn = celeriac_common::broker::connect(&config.broker_url, "beat-test-events")
            .await
            .expect("broker");
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_declare(
            "celeriac.beat".into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        ch.queue_bind(
            q.name().as_str().into(),
            "celeriac.beat".into(),
            "beat.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        let mut consumer = ch
            .basic_consume(
                q.name().as_str().into(),
                "beat-test-events".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let events = self.events.clone();
        tokio::spawn(async move {
            let _conn = conn;
            while let Some(Ok(d)) = consumer.next().await {
                if let Ok(v) = serde_json::from_slice(&d.data) {
                    events.lock().unwrap().push(v);
                }
            }
        });
    }

    pub fn of(&self, entry: &str) -> Vec<Received> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.entry == entry)
            .cloned()
            .collect()
    }

    pub fn events_of(&self, entry: &str, kind: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["entry"] == entry && e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until `entry` has `n` messages; returns them.
    pub async fn wait_for(&self, entry: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.of(entry);
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < timeout,
                "{entry}: only {} of {n} messages after {timeout:?}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a message of `entry` scheduled at or after `at` arrives.
    pub async fn wait_scheduled_from(
        &self,
        entry: &str,
        at: DateTime<Utc>,
        timeout: Duration,
    ) -> Received {
        let start = Instant::now();
        loop {
            if let Some(m) = self.of(entry).into_iter().find(|m| m.scheduled_at >= at) {
                return m;
            }
            assert!(
                start.elapsed() < timeout,
                "{entry}: nothing scheduled from {at} after {timeout:?}: {:?}",
                self.of(entry)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn received(msg: &TaskMessage) -> Received {
    let text = |k: &str| {
        msg.extra_headers
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Received {
        id: msg.id.clone(),
        entry: text("beat_entry"),
        scheduled_at: text("beat_scheduled_at")
            .parse()
            .unwrap_or(DateTime::UNIX_EPOCH),
        received_at: Utc::now(),
    }
}

/// Checks a run history: scheduled times one `step` apart from the first to
/// the last (nothing lost), one task id per scheduled time, the id being
/// the deterministic one. Returns how many messages repeated an id.
pub fn check_history(entry: &str, got: &[Received], step: chrono::TimeDelta) -> usize {
    let mut times: Vec<DateTime<Utc>> = got.iter().map(|m| m.scheduled_at).collect();
    times.sort();
    times.dedup();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            step,
            "{entry}: gap or irregular step between {} and {}: {times:?}",
            pair[0],
            pair[1]
        );
    }
    for m in got {
        let expected = celeriac_beat::firing::dispatch::task_id(entry, m.scheduled_at).to_string();
        assert_eq!(
            m.id, expected,
            "{entry}: run {} has a non-deterministic id",
            m.scheduled_at
        );
    }
    got.len() - times.len()
}

/// A schedule file in a temp dir.
pub fn schedule_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("schedule.toml");
    std::fs::write(&path, text).expect("write schedule");
    path
}

/// The process id in the lease holder (`host:pid:random`), if anyone holds it.
pub async fn leader_pid(db_url: &str) -> Option<u32> {
    let backend = celeriac_common::ResultBackend::connect(db_url).await.ok()?;
    let row = celeriac_beat::leadership::lease::read_lease(
        backend.connection(),
        celeriac_beat::leadership::lease::LEASE_NAME,
    )
    .await
    .ok()??;
    if row.expires_in.is_zero() {
        return None;
    }
    row.holder.split(':').nth(1)?.parse().ok()
}
