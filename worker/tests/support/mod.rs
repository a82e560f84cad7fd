//! Helpers for the worker's integration tests: worker processes, waiting on
//! results, and reading the backend.
#![allow(dead_code, unreachable_pub, missing_docs)]

use celeriac_common::Config;
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `celeriac-worker` process with its log in a temp file.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
    pub hostname: String,
    _dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("worker.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_celeriac-worker"))
            .env_remove("CELERIAC_CONFIG")
            .env("CELERIAC_BROKER_URL", &config.broker_url)
            .env("CELERIAC_RESULT_BACKEND", &config.result_backend)
            .env("CELERIAC_QUEUES", config.queues.join(","))
            .env("CELERIAC_DEAD_LETTER_QUEUE", &config.dead_letter_queue)
            .env("CELERIAC_DELAY_PREFIX", &config.delay_prefix)
            .env("CELERIAC_HOSTNAME", hostname)
            .env("CELERIAC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn celeriac-worker");
        let w = WorkerProcess {
            child,
            log,
            hostname: hostname.to_owned(),
            _dir: dir,
        };
        w.wait_log("worker ready", Duration::from_secs(30));
        w
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "worker log never showed {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM, then the exit code (None if killed by a signal).
    pub fn terminate(mut self) -> Option<i32> {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "worker did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
