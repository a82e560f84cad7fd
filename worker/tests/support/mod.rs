//! Helpers for the worker's integration tests: worker processes, waiting on
//! results, and reading the backend.
#![allow(dead_code, unreachable_pub, missing_docs)]

use celeriac_common::Config;
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use celeriac_common::testing::LoggedProcess;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A `celeriac-worker` process with its log in a temp file.
pub struct WorkerProcess {
    process: LoggedProcess,
    pub hostname: String,
}

pub fn bin(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name)
}

impl WorkerProcess {
    pub fn spawn(config: &Config, hostname: &str, extra: &[&str]) -> WorkerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"));
        cmd.env_remove("CELERIAC_CONFIG")
            .env("CELERIAC_BROKER_URL", &config.broker_url)
            .env("CELERIAC_RESULT_BACKEND", &config.result_backend)
            .env("CELERIAC_QUEUES", config.queues.join(","))
            .env("CELERIAC_DEAD_LETTER_QUEUE", &config.dead_letter_queue)
            .env("CELERIAC_DELAY_PREFIX", &config.delay_prefix)
            .env("CELERIAC_HOSTNAME", hostname)
            .env("CELERIAC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .args(extra);
        WorkerProcess {
            process: LoggedProcess::spawn(cmd, "worker", "worker ready"),
            hostname: hostname.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.process.wait_log(needle, timeout);
    }

    pub fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// SIGTERM, then the exit code (None if killed by a signal).
    pub fn terminate(self) -> Option<i32> {
        self.process.terminate(Duration::from_secs(40))
    }

    pub fn kill(mut self) {
        self.process.kill();
    }
}

/// Waits until `count` rows are in `state`; returns how many there are.
pub async fn wait_for_state(
    backend: &ResultBackend,
    state: &str,
    count: u64,
    timeout: Duration,
) -> u64 {
    let start = Instant::now();
    loop {
        let n = Entity::find()
            .filter(Column::State.eq(state))
            .count(backend.connection())
            .await
            .expect("count");
        if n >= count || start.elapsed() > timeout {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `celeriac-beat` (built beside the worker by a workspace build) with
/// the same connection settings as the worker processes.
pub fn beat_command(config: &Config, args: &[&str]) -> Command {
    let path = bin("celeriac-beat");
    assert!(
        path.exists(),
        "{} not built: run the tests for the whole workspace",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env_remove("CELERIAC_CONFIG")
        .env_remove("CELERIAC_BEAT_SCHEDULE")
        .env("CELERIAC_BROKER_URL", &config.broker_url)
        .env("CELERIAC_RESULT_BACKEND", &config.result_backend)
        .env("CELERIAC_DEFAULT_QUEUE", &config.default_queue)
        .env("CELERIAC_QUEUES", config.queues.join(","))
        .env("CELERIAC_DEAD_LETTER_QUEUE", &config.dead_letter_queue)
        .env("CELERIAC_DELAY_PREFIX", &config.delay_prefix)
        .env("CELERIAC_BEAT_LEASE_SECS", "2")
        .env("RUST_LOG", "warn")
        .args(args);
    cmd
}

/// A running `celeriac-beat run`.
pub struct BeatProcess(LoggedProcess);

impl BeatProcess {
    pub fn spawn(config: &Config) -> BeatProcess {
        let mut cmd = beat_command(config, &["run"]);
        cmd.env("RUST_LOG", "info");
        BeatProcess(LoggedProcess::spawn(cmd, "beat", "beat started"))
    }

    pub fn kill(mut self) {
        self.0.kill();
    }

    pub fn terminate(self) -> Option<i32> {
        self.0.terminate(Duration::from_secs(40))
    }
}

/// Messages ready in `queue` (a passive declare on a connection of its own).
pub async fn ready_messages(queue: &str) -> u32 {
    let conn = celeriac_common::broker::connect(&celeriac_common::testing::broker_url(), "test")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .expect("passive declare");
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

/// Waits up to 20 s until `queue` exists and has a consumer (a passive
/// declare, on a fresh channel each time: a failed one closes its channel).
pub async fn wait_consumed(queue: &str) {
    let conn = celeriac_common::broker::connect(&celeriac_common::testing::broker_url(), "test")
        .await
        .expect("connect");
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = conn.create_channel().await.expect("channel");
        let declared = probe
            .queue_declare(queue.into(), passive, Default::default())
            .await;
        if matches!(&declared, Ok(q) if q.consumer_count() > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue} not consumed: {declared:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = conn.close(200, "done".into()).await;
}
