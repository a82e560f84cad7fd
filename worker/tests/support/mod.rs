//! Helpers for the worker's integration tests: worker processes, waiting on
//! results, and reading the backend.
#![allow(dead_code, unused_macros, unreachable_pub, missing_docs)]

use celeriac_common::Config;
use celeriac_common::backend::ResultBackend;
use celeriac_common::backend::entity::{Column, Entity};
use celeriac_common::testing::process;
use celeriac_worker::{Worker, WorkerError};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A task definition with no body: `task!(Add, "tests.add", (i64, i64), i64)`.
macro_rules! task {
    ($ty:ident, $name:literal, $args:ty, $out:ty) => {
        struct $ty;
        impl ::celeriac_common::TaskDef for $ty {
            const NAME: &'static str = $name;
            type Args = $args;
            type Output = $out;
        }
    };
}

/// This crate's worker binary, for `testing::process::spawn_worker`.
pub const WORKER: &str = env!("CARGO_BIN_EXE_celeriac-worker");

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

/// `celeriac-beat ARGS` (built beside the worker by a workspace build)
/// with the same connection settings as the worker processes.
pub fn beat_command(config: &Config, args: &[&str]) -> Command {
    let mut cmd = process::command(process::sibling_bin("celeriac-beat"), config);
    cmd.env("RUST_LOG", "warn").args(args);
    cmd
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

/// A program of the project's virtualenv (`scripts/python-env.sh` makes it
/// on first use): `python`, `celery`.
pub fn venv_bin(name: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/python-env.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run python-env.sh");
    assert!(out.status.success(), "python-env.sh failed");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).with_file_name(name)
}

/// A worker running in the test's own process until [`InProcess::stop`].
pub struct InProcess {
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

impl InProcess {
    /// Runs `worker` on a task of its own.
    pub fn spawn(worker: Worker) -> InProcess {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(worker.run_until(async move {
            let _ = stopped.await;
        }));
        InProcess { stop, running }
    }

    /// Asks it to stop (a warm shutdown) and returns what its run returned.
    ///
    /// # Panics
    /// If it has not stopped within `within`, or its task panicked.
    pub async fn stop(self, within: Duration) -> Result<(), WorkerError> {
        let _ = self.stop.send(());
        tokio::time::timeout(within, self.running)
            .await
            .expect("worker stops")
            .expect("join")
    }
}
