//! Configuration: defaults, then a TOML file, then `CELERIAC_*` environment
//! variables, then command-line flags (applied by the binaries), each
//! overriding the one before.
//!
//! | key | env | default |
//! | --- | --- | --- |
//! | `broker_url` | `CELERIAC_BROKER_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` (several nodes: `amqp://a;amqp://b` as in Celery, or a list in the file) |
//! | `broker_failover_strategy` | `CELERIAC_BROKER_FAILOVER_STRATEGY` | `round-robin` (nodes tried in the order given; or `shuffle`: an order drawn at random per process) |
//! | `broker_connection_retry_on_startup` | `CELERIAC_BROKER_CONNECTION_RETRY_ON_STARTUP` | `true` (a worker or beat that cannot reach the broker at startup logs it and retries with backoff; `false` exits at once) |
//! | `broker_tls_ca_file` | `CELERIAC_BROKER_TLS_CA_FILE` | unset: `amqps://` trusts the system's CAs only |
//! | `broker_tls_client_cert` | `CELERIAC_BROKER_TLS_CLIENT_CERT` | unset (PEM certificate chain presented to the broker) |
//! | `broker_tls_client_key` | `CELERIAC_BROKER_TLS_CLIENT_KEY` | unset (its PEM private key) |
//! | `broker_connect_timeout_secs` | `CELERIAC_BROKER_CONNECT_TIMEOUT_SECS` | `5` (seconds, fractions allowed: bound on the TCP connect, TLS and AMQP handshakes together, and on each broker round trip while setting up: channel open, declares, `basic.qos`, `confirm.select`, close) |
//! | `broker_heartbeat_secs` | `CELERIAC_BROKER_HEARTBEAT_SECS` | `30` (AMQP heartbeat interval proposed to the broker, the lower side's wins; a broker silent for two intervals is taken for gone and the connection closed; `0` takes the broker's value, RabbitMQ's is 60) |
//! | `result_backend` | `CELERIAC_RESULT_BACKEND` | `sqlite://celeriac.db?mode=rwc` (`none` stores nothing; `rpc://` is Celery's rpc backend: workers publish outcomes to the caller's reply queue, see `celeriac_common::rpc`) |
//! | `default_queue` | `CELERIAC_DEFAULT_QUEUE` | `celery` |
//! | `queues` | `CELERIAC_QUEUES` | `["celery"]` (comma-separated in env) |
//! | `queue_type` | `CELERIAC_QUEUE_TYPE` | `classic` (or `quorum`: task, delay and dead-letter queues; no `queue_max_priority`) |
//! | `queue_max_priority` | `CELERIAC_QUEUE_MAX_PRIORITY` | unset (no `x-max-priority`) |
//! | `concurrency` | `CELERIAC_CONCURRENCY` | `16` tasks at once per worker |
//! | `worker_threads` | `CELERIAC_WORKER_THREADS` | `1`: threads of the stock worker's async runtime (1 = single-threaded, the least overhead per task; blocking tasks always run on a pool of their own) |
//! | `prefetch_multiplier` | `CELERIAC_PREFETCH_MULTIPLIER` | `4` (prefetch = concurrency × multiplier) |
//! | `hostname` | `CELERIAC_HOSTNAME` | `celeriac@<host>` |
//! | `log_format` | `CELERIAC_LOG_FORMAT` | `human` (or `json`) |
//! | `track_started` | `CELERIAC_TRACK_STARTED` | `false` |
//! | `store_args` | `CELERIAC_STORE_ARGS` | `false` (store args/kwargs with results) |
//! | `result_expires_secs` | `CELERIAC_RESULT_EXPIRES_SECS` | `86400` (workers delete older results; `0`: never) |
//! | `shutdown_grace_secs` | `CELERIAC_SHUTDOWN_GRACE_SECS` | `30` |
//! | `publish_timeout_secs` | `CELERIAC_PUBLISH_TIMEOUT_SECS` | `30` (how long a call waits for a lost broker) |
//! | `result_timeout_secs` | `CELERIAC_RESULT_TIMEOUT_SECS` | `60` (how long a worker waits for one call to the result database before it gives it up and makes it again on a fresh connection) |
//! | `max_message_bytes` | `CELERIAC_MAX_MESSAGE_BYTES` | `10485760` |
//! | `dead_letter_queue` | `CELERIAC_DEAD_LETTER_QUEUE` | `celeriac.dlq` |
//! | `delay_prefix` | `CELERIAC_DELAY_PREFIX` | `celeriac.delay` (names of the delay exchanges and queues) |
//! | `migrate_on_start` | `CELERIAC_MIGRATE_ON_START` | `true` |
//! | `worker_heartbeat_secs` | `CELERIAC_WORKER_HEARTBEAT_SECS` | `5` (a worker silent for 3 intervals is gone: its STARTED tasks become RETRY; also the `worker-heartbeat` event's interval) |
//! | `worker_send_events` | `CELERIAC_WORKER_SEND_EVENTS` | `false` (send Celery's task events, as `celery worker -E`; worker events are always sent; Flower switches task events on by remote control) |
//! | `task_send_sent_event` | `CELERIAC_TASK_SEND_SENT_EVENT` | `false` (the producer sends Celery's `task-sent` event for each task it publishes, as Celery's setting of that name) |
//! | `worker_http_addr` | `CELERIAC_WORKER_HTTP_ADDR` | unset: no HTTP server (`HOST:PORT` where the worker serves `/metrics` and `/health`, e.g. `127.0.0.1:9808`) |
//! | `max_deliveries` | `CELERIAC_MAX_DELIVERIES` | `5` (a message delivered this often without finishing is dead-lettered) |
//! | `beat_schedule` | `CELERIAC_BEAT_SCHEDULE` | unset (beat's TOML schedule file) |
//! | `beat_misfire_grace_secs` | `CELERIAC_BEAT_MISFIRE_GRACE_SECS` | `60` (a run later than this is skipped as missed) |
//! | `beat_coalesce` | `CELERIAC_BEAT_COALESCE` | `true` (a backlog of missed runs becomes one run) |
//! | `beat_max_instances` | `CELERIAC_BEAT_MAX_INSTANCES` | `0` (unlimited unfinished runs per entry; above 100 acts as 100) |
//! | `beat_http_addr` | `CELERIAC_BEAT_HTTP_ADDR` | unset: no HTTP server (`HOST:PORT` where `celeriac-beat run` serves `/metrics` and `/health`) |
//! | `beat_lease_secs` | `CELERIAC_BEAT_LEASE_SECS` | `10` (leader lease; a standby takes over this long after the leader dies) |

use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod env;
mod load;

/// Default broker: the local RabbitMQ's default vhost.
pub const BROKER_URL_DEFAULT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default result backend: an SQLite file in the working directory.
pub const RESULT_BACKEND_DEFAULT: &str = "sqlite://celeriac.db?mode=rwc";
/// Default queue, exchange and routing key, as Celery's.
pub const DEFAULT_QUEUE: &str = "celery";
/// Default bound on connecting to the broker, in seconds.
pub const CONNECT_TIMEOUT_SECS_DEFAULT: f64 = 5.0;
/// Default AMQP heartbeat interval proposed to the broker, in seconds.
pub const BROKER_HEARTBEAT_SECS_DEFAULT: u16 = 30;

/// Queue flavour, as Celery's `task_default_queue_type`: of the task
/// queues, the delay queues and the dead-letter queue (exclusive queues,
/// for remote control and events, are always classic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic durable queue (Celery's default).
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`): replicated on a cluster, and
    /// delay queues that dead-letter at least once.
    Quorum,
}

/// In which order a process tries the broker nodes of `broker_url`, as
/// Celery's `broker_failover_strategy`. Either way a process stays on the
/// node it reached until that node is lost, then moves to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverStrategy {
    /// In the order given: every process starts on the first node.
    #[default]
    RoundRobin,
    /// In an order drawn at random once per process: processes spread over
    /// the nodes.
    Shuffle,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The largest `max_instances` (of an entry, or `beat_max_instances`): beat
/// remembers this many unfinished runs of an entry.
pub const BEAT_MAX_INSTANCES: u32 = 100;

/// Everything a celeriac process needs to know. See the module docs for
/// each key's default and environment variable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Config {
    #[serde(deserialize_with = "urls_or_list")]
    pub broker_url: String,
    pub broker_failover_strategy: FailoverStrategy,
    pub broker_connection_retry_on_startup: bool,
    pub broker_tls_ca_file: Option<PathBuf>,
    pub broker_tls_client_cert: Option<PathBuf>,
    pub broker_tls_client_key: Option<PathBuf>,
    pub broker_connect_timeout_secs: f64,
    pub broker_heartbeat_secs: u16,
    pub result_backend: String,
    pub default_queue: String,
    #[serde(deserialize_with = "list_or_csv")]
    pub queues: Vec<String>,
    pub queue_type: QueueType,
    pub queue_max_priority: Option<u8>,
    pub concurrency: usize,
    pub worker_threads: usize,
    pub prefetch_multiplier: usize,
    pub hostname: String,
    pub log_format: LogFormat,
    pub track_started: bool,
    pub store_args: bool,
    pub result_expires_secs: u64,
    pub shutdown_grace_secs: u64,
    pub publish_timeout_secs: u64,
    pub result_timeout_secs: u64,
    pub max_message_bytes: usize,
    pub dead_letter_queue: String,
    pub delay_prefix: String,
    pub migrate_on_start: bool,
    pub max_deliveries: u32,
    pub worker_heartbeat_secs: u64,
    pub worker_send_events: bool,
    pub task_send_sent_event: bool,
    pub worker_http_addr: Option<String>,
    pub beat_schedule: Option<String>,
    pub beat_misfire_grace_secs: u64,
    pub beat_coalesce: bool,
    pub beat_max_instances: u32,
    pub beat_lease_secs: u64,
    pub beat_http_addr: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker_url: BROKER_URL_DEFAULT.to_owned(),
            broker_failover_strategy: FailoverStrategy::RoundRobin,
            broker_connection_retry_on_startup: true,
            broker_tls_ca_file: None,
            broker_tls_client_cert: None,
            broker_tls_client_key: None,
            broker_connect_timeout_secs: CONNECT_TIMEOUT_SECS_DEFAULT,
            broker_heartbeat_secs: BROKER_HEARTBEAT_SECS_DEFAULT,
            result_backend: RESULT_BACKEND_DEFAULT.to_owned(),
            default_queue: DEFAULT_QUEUE.to_owned(),
            queues: vec![DEFAULT_QUEUE.to_owned()],
            queue_type: QueueType::Classic,
            queue_max_priority: None,
            concurrency: 16,
            worker_threads: 1,
            prefetch_multiplier: 4,
            hostname: format!("celeriac@{}", host_name()),
            log_format: LogFormat::Human,
            track_started: false,
            store_args: false,
            result_expires_secs: 86_400,
            shutdown_grace_secs: 30,
            publish_timeout_secs: 30,
            result_timeout_secs: 60,
            max_message_bytes: crate::protocol::MAX_BODY_BYTES_DEFAULT,
            dead_letter_queue: "celeriac.dlq".to_owned(),
            delay_prefix: "celeriac.delay".to_owned(),
            migrate_on_start: true,
            max_deliveries: 5,
            worker_heartbeat_secs: 5,
            worker_send_events: false,
            task_send_sent_event: false,
            worker_http_addr: None,
            beat_schedule: None,
            beat_misfire_grace_secs: 60,
            beat_coalesce: true,
            beat_max_instances: 0,
            beat_lease_secs: 10,
            beat_http_addr: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file or environment holds a bad value or an unknown key.
    #[error("invalid configuration in {origin}: {message}")]
    Invalid {
        /// Where: the file's path or "environment".
        origin: String,
        /// What is wrong.
        message: String,
    },
}

const ENV_PREFIX: &str = "CELERIAC_";

impl Config {
    /// Prefetch count per consumer: concurrency × multiplier, within AMQP's u16.
    pub fn prefetch(&self) -> u16 {
        u16::try_from(
            self.concurrency
                .saturating_mul(self.prefetch_multiplier)
                .max(1),
        )
        .unwrap_or(u16::MAX)
    }

    /// Whether results are stored at all (`result_backend = "none"` turns them off).
    pub fn results_enabled(&self) -> bool {
        !self.result_backend.eq_ignore_ascii_case("none")
    }

    /// The broker node URLs of `broker_url`: Celery's `amqp://a;amqp://b`
    /// form split at `;`, blanks dropped.
    ///
    /// ```
    /// use celeriac_common::Config;
    ///
    /// let config = Config {
    ///     broker_url: "amqp://a:5672//; amqp://b:5672//".into(),
    ///     ..Config::default()
    /// };
    /// assert_eq!(config.broker_urls(), ["amqp://a:5672//", "amqp://b:5672//"]);
    /// ```
    pub fn broker_urls(&self) -> Vec<&str> {
        split_urls(&self.broker_url)
    }

    /// Whether results go by Celery's `rpc://` backend (to each caller's
    /// reply queue) rather than to a database.
    pub fn rpc_results(&self) -> bool {
        crate::rpc::is_rpc(&self.result_backend)
    }

    /// How long a publish waits for a lost broker to come back.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_secs(self.publish_timeout_secs)
    }

    /// `result_timeout_secs` as a duration (at least a second).
    pub fn result_timeout(&self) -> Duration {
        Duration::from_secs(self.result_timeout_secs.max(1))
    }

    /// How long connecting to the broker, or one broker round trip while
    /// setting up, may take (`broker_connect_timeout_secs`).
    pub fn connect_timeout(&self) -> Duration {
        // NaN and negative values (refused on load) become 0: every
        // connection then fails at once, saying so.
        Duration::try_from_secs_f64(self.broker_connect_timeout_secs.max(0.0))
            .unwrap_or(Duration::MAX)
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(l) => l,
        ListOrCsv::Csv(s) => split_csv(&s),
    })
}

/// A broker URL given as a string (`amqp://a;amqp://b`) or, in a file,
/// as a list of node URLs (kept joined with `;`).
fn urls_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum UrlOrList {
        One(String),
        List(Vec<String>),
    }
    Ok(match UrlOrList::deserialize(d)? {
        UrlOrList::One(s) => s,
        UrlOrList::List(l) => l.join(";"),
    })
}

/// The URLs of a `;`-separated list, trimmed, blanks dropped.
pub fn split_urls(s: &str) -> Vec<&str> {
    s.split(';')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Splits `"a, b,c"` into `["a", "b", "c"]`, dropping empty items.
pub fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect()
}

/// This machine's host name.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A URL with its password replaced by `****`, safe to log; each URL of a
/// `;`-separated list (several broker nodes) is masked.
pub fn mask_url(raw: &str) -> String {
    if raw.contains(';') {
        return raw.split(';').map(mask_one).collect::<Vec<_>>().join(";");
    }
    mask_one(raw)
}

fn mask_one(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            if u.set_password(Some("****")).is_ok() {
                u.to_string()
            } else {
                "<url with credentials>".to_owned()
            }
        }
        Ok(u) => u.to_string(),
        Err(_) => match raw.rfind('@') {
            Some(at) => format!("****{}", &raw[at..]),
            None => raw.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests;
