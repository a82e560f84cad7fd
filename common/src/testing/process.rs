//! celeriac's binaries run by tests: a worker, a beat, or a one-off
//! command, reaching the broker, the result database and the queues of the
//! test's [`Config`].
//!
//! The binary is a parameter: a crate's own tests pass
//! `env!("CARGO_BIN_EXE_<name>")`; another crate's binary is found with
//! [`sibling_bin`].
//!
//! ```no_run
//! use celeriac_common::testing::{self, process, unique};
//!
//! let config = testing::config("sqlite://results.db?mode=rwc", &unique("doc"));
//! let worker = process::spawn_worker(process::sibling_bin("celeriac-worker"), &config, "w@test", &[]);
//! assert_eq!(worker.terminate(), Some(0));
//! ```

use crate::config::{Config, env::env_name};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The options a child takes from the test's config: where the broker, the
/// results and the queues are, and beat's lease. The others are the
/// child's own (defaults, `--config` file, flags), as for an operator.
const SHARED: [&str; 8] = [
    "broker_url",
    "result_backend",
    "default_queue",
    "queues",
    "queue_type",
    "dead_letter_queue",
    "delay_prefix",
    "beat_lease_secs",
];

/// How long a process may take to log that it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// `bin` with `config`'s broker, result backend, queues and beat lease in
/// its environment (see [`Config::to_env`]), and none of the test's own
/// `CELERIAC_*` variables (`CELERIAC_CONFIG` included).
pub fn command(bin: impl AsRef<OsStr>, config: &Config) -> Command {
    let mut cmd = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CELERIAC_") {
            cmd.env_remove(name);
        }
    }
    let shared = SHARED.map(env_name);
    cmd.envs(
        config
            .to_env()
            .into_iter()
            .filter(|(name, _)| shared.contains(name)),
    );
    cmd
}

/// A worker (`bin`) for `config`, named `hostname`, logging JSON at
/// `info`, started with `args`; returns once it logged `worker ready`.
///
/// # Panics
/// If it cannot start or is not ready within 30 s.
pub fn spawn_worker(
    bin: impl AsRef<OsStr>,
    config: &Config,
    hostname: &str,
    args: &[&str],
) -> LoggedProcess {
    let mut cmd = command(bin, config);
    cmd.env("CELERIAC_HOSTNAME", hostname)
        .env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(args);
    LoggedProcess::spawn(cmd, "worker", "worker ready")
}

/// `celeriac-beat run ARGS` (`bin`) for `config`, logging JSON at `info`;
/// returns once it logged `beat started`.
///
/// # Panics
/// If it cannot start or does not start within 30 s.
pub fn spawn_beat(bin: impl AsRef<OsStr>, config: &Config, args: &[&str]) -> LoggedProcess {
    let mut cmd = command(bin, config);
    cmd.env("CELERIAC_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .arg("run")
        .args(args);
    LoggedProcess::spawn(cmd, "beat", "beat started")
}

/// A binary of the workspace built beside the running test
/// (`target/<profile>/<name>`): another crate's binary, which
/// `CARGO_BIN_EXE_*` does not name.
///
/// # Panics
/// If it is not there (not built by this cargo invocation).
pub fn sibling_bin(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let path = std::env::current_exe()
        .expect("current exe")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests for the whole workspace",
        path.display()
    );
    path
}

/// A child process of a test (a worker, a beat) with its stderr in a log
/// file of its own, killed when dropped.
#[derive(Debug)]
pub struct LoggedProcess {
    child: Child,
    log: PathBuf,
    what: String,
    _dir: tempfile::TempDir,
}

impl LoggedProcess {
    /// Starts `cmd` (stdout discarded, stderr to the log) and waits up to
    /// 30 s for `ready` to appear in the log. `what` names it in failures.
    ///
    /// # Panics
    /// If it cannot start or never logs `ready`: these are test helpers.
    pub fn spawn(mut cmd: Command, what: &str, ready: &str) -> LoggedProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("process.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let p = LoggedProcess {
            child,
            log,
            what: what.to_owned(),
            _dir: dir,
        };
        p.wait_log(ready, READY_TIMEOUT);
        p
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    ///
    /// # Panics
    /// If it does not within `timeout` (the log is in the message).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let seen = poll(timeout, || self.log_text().contains(needle).then_some(()));
        assert!(
            seen.is_some(),
            "{} log never showed {needle:?}:\n{}",
            self.what,
            self.log_text()
        );
    }

    /// Sends `kill -SIG`.
    ///
    /// # Panics
    /// If `kill` fails.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{sig} {} failed", self.what);
    }

    /// SIGTERM, then its exit code (None if a signal ended it).
    ///
    /// # Panics
    /// If it is still running 40 s later.
    pub fn terminate(mut self) -> Option<i32> {
        self.signal("TERM");
        match poll(STOP_TIMEOUT, || self.child.try_wait().expect("wait")) {
            Some(status) => status.code(),
            None => panic!("{} did not stop:\n{}", self.what, self.log_text()),
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `probe` every 20 ms until it gives a value; `None` once `timeout` has passed.
fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}
