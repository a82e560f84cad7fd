//! An external `celeriac-worker` process driven by the bench: spawned with
//! environment variables, watched for its "worker ready" log line, measured
//! through `/proc` (RSS, CPU time), stopped with SIGTERM.

use crate::error::BenchError;
use crate::procfs;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How a bench worker is started.
#[derive(Clone)]
pub(crate) struct WorkerSpec<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) broker_url: &'a str,
    pub(crate) result_backend: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) dead_letter_queue: &'a str,
    pub(crate) concurrency: usize,
    pub(crate) prefetch_multiplier: usize,
    pub(crate) hostname: String,
    /// Quorum: its queues are quorum queues, its delay queues under
    /// `delay_prefix` (a classic worker keeps the configured ones).
    pub(crate) quorum: Option<&'a str>,
    /// Task events on (`CELERIAC_WORKER_SEND_EVENTS`).
    pub(crate) events: bool,
}

/// A running worker process.
pub(crate) struct WorkerProc {
    child: Child,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
}

const LOG_KEEP: usize = 30;

/// `explicit`, or else `celeriac-worker` next to the running `celeriac-bench`
/// executable (cargo builds both into the same target directory).
pub(crate) fn locate(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::new(format!("cannot find the celeriac-bench executable: {e}")))?;
    let bin = exe
        .parent()
        .map(|d| d.join("celeriac-worker"))
        .unwrap_or_else(|| PathBuf::from("celeriac-worker"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(BenchError::new(format!(
            "no celeriac-worker binary at {} (build it: cargo build --release -p celeriac-worker, or pass --worker-bin)",
            bin.display()
        )))
    }
}

impl WorkerProc {
    /// Starts the worker and waits for its "worker ready" line.
    pub(crate) async fn spawn(
        spec: &WorkerSpec<'_>,
        timeout: Duration,
    ) -> Result<WorkerProc, BenchError> {
        let mut cmd = Command::new(spec.bin);
        cmd.env("CELERIAC_BROKER_URL", spec.broker_url)
            .env("CELERIAC_RESULT_BACKEND", spec.result_backend)
            .env("CELERIAC_QUEUES", spec.queue)
            .env("CELERIAC_CONCURRENCY", spec.concurrency.to_string())
            .env(
                "CELERIAC_PREFETCH_MULTIPLIER",
                spec.prefetch_multiplier.to_string(),
            )
            .env("CELERIAC_HOSTNAME", &spec.hostname)
            .env("CELERIAC_WORKER_SEND_EVENTS", spec.events.to_string())
            // started_at is stored with every final outcome; no extra STARTED write.
            .env("CELERIAC_TRACK_STARTED", "false")
            .env("CELERIAC_DEAD_LETTER_QUEUE", spec.dead_letter_queue)
            .env("CELERIAC_MIGRATE_ON_START", "true")
            .env("CELERIAC_LOG_FORMAT", "human")
            .env("CELERIAC_SHUTDOWN_GRACE_SECS", "5")
            .env(
                "CELERIAC_QUEUE_TYPE",
                if spec.quorum.is_some() {
                    "quorum"
                } else {
                    "classic"
                },
            )
            // No per-task log lines (Celery is benchmarked at -l warning too);
            // keep the lifecycle lines, "worker ready" among them.
            .env("RUST_LOG", "warn,celeriac_worker::worker=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(prefix) = spec.quorum {
            cmd.env("CELERIAC_DELAY_PREFIX", prefix);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot start {}: {e}", spec.bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::new("the worker exited at once"))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            let name = spec.hostname.clone();
            tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("worker ready") {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    } else if line.contains(" WARN ") || line.contains(" ERROR ") {
                        eprintln!("{name}: {line}");
                    }
                    if let Ok(mut l) = log.lock() {
                        if l.len() == LOG_KEEP {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
            });
        }
        let mut proc = WorkerProc { child, pid, log };
        let outcome = tokio::select! {
            r = ready_rx => r.map_err(|_| "its log ended before \"worker ready\"".to_owned()),
            s = proc.child.wait() => Err(match s {
                Ok(s) => format!("it exited ({s})"),
                Err(e) => format!("cannot wait for it: {e}"),
            }),
            _ = tokio::time::sleep(timeout) => Err(format!("not ready within {timeout:?}")),
        };
        match outcome {
            Ok(()) => Ok(proc),
            Err(why) => {
                // Give the reader a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let tail = proc.log_tail();
                proc.stop().await;
                Err(BenchError::new(format!(
                    "worker {} did not start: {why}{tail}",
                    spec.bin.display()
                )))
            }
        }
    }

    /// `; its last log lines:` and those lines, or nothing if it logged none.
    fn log_tail(&self) -> String {
        let lines = self
            .log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        if lines.is_empty() {
            lines
        } else {
            format!("; its last log lines:\n{lines}")
        }
    }

    /// Waits for the worker to exit and says so (it runs until the bench
    /// stops it); cancel-safe, to race a phase of the run.
    pub(crate) async fn exited(&mut self) -> BenchError {
        let why = match self.child.wait().await {
            Ok(status) => format!("the worker exited during the run ({status})"),
            Err(e) => format!("cannot wait for the worker: {e}"),
        };
        // Give the reader a moment to collect the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        BenchError::new(format!("{why}{}", self.log_tail()))
    }

    /// User + system CPU seconds used so far.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.pid)
    }

    /// Resident set size now, in MB.
    pub(crate) fn rss_mb(&self) -> Option<f64> {
        procfs::status_mb(self.pid, "VmRSS:")
    }

    /// Peak resident set size so far, in MB.
    pub(crate) fn peak_rss_mb(&self) -> Option<f64> {
        procfs::status_mb(self.pid, "VmHWM:")
    }

    /// SIGKILL: unacknowledged messages go back to their queue.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM (warm shutdown), then SIGKILL if it is still there after 15 s.
    pub(crate) async fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
