//! The bench's command-line options and their checks.

use super::database::Results;
use super::reference;
use crate::error::BenchError;
use std::path::PathBuf;

/// Measure throughput, latency and worker footprint against the configured
/// RabbitMQ, next to plain lapin reference loops.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// No-op tasks in the throughput run (and messages in the reference loop).
    #[arg(long, default_value_t = 20_000)]
    pub(super) tasks: u64,
    /// Concurrent producers; each waits for its publish confirm before the next.
    #[arg(long, default_value_t = 128)]
    pub(super) producers: u64,
    /// Worker concurrency (tasks at once).
    #[arg(long, default_value_t = 16)]
    pub(super) concurrency: usize,
    /// Worker prefetch = concurrency × this.
    #[arg(long, default_value_t = 8)]
    pub(super) prefetch_multiplier: usize,
    /// Result backend for the throughput run: a throw-away database made for the bench.
    #[arg(long, value_enum, default_value_t = Results::None)]
    pub(super) results: Results,
    /// Bytes of payload per task (one string argument); 0 sends no arguments.
    #[arg(long, default_value_t = 0)]
    pub(super) payload: usize,
    /// Tasks per second in the latency run.
    #[arg(long, default_value_t = 500.0)]
    pub(super) rate: f64,
    /// Tasks in the latency run (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub(super) latency_tasks: u64,
    /// Warm-up tasks through the worker before the measured run.
    #[arg(long, default_value_t = 1_000)]
    pub(super) warmup: u64,
    /// Rounds of the references + throughput, in turn; the figures are medians.
    #[arg(long, default_value_t = 1)]
    pub(super) rounds: u32,
    /// Best plain reference: publisher tasks, each on its own channel.
    #[arg(long, default_value_t = reference::BEST_PUBLISHERS, help_heading = "Best plain reference")]
    pub(super) reference_publishers: u64,
    /// Best plain reference: messages unconfirmed at most, over all its publishers.
    #[arg(long, default_value_t = reference::BEST_CONFIRM_WINDOW, help_heading = "Best plain reference")]
    pub(super) reference_confirm_window: u64,
    /// Best plain reference: the consumer's prefetch.
    #[arg(long, default_value_t = reference::BEST_PREFETCH, help_heading = "Best plain reference")]
    pub(super) reference_prefetch: u16,
    /// Best plain reference: one `basic.ack(multiple)` per this many messages (at most the prefetch).
    #[arg(long, default_value_t = reference::BEST_ACK_EVERY, help_heading = "Best plain reference")]
    pub(super) reference_ack_every: u16,
    /// Each round also runs celeriac with task events on (a fresh worker as
    /// with `-E`, a monitor draining celeryev), reporting both and their ratio.
    #[arg(long)]
    pub(super) events: bool,
    /// Run the quorum rounds (implies `--queue-type quorum`) on this broker
    /// instead, for example a 3-node cluster as `amqp://a;amqp://b;amqp://c`
    /// (`scripts/rabbitmq-cluster.sh`), against classic rounds on the main one.
    #[arg(long, value_name = "URLS")]
    pub(super) quorum_broker: Option<String>,
    /// Print the figures as one JSON object on the last line.
    #[arg(long)]
    pub(super) json: bool,
    /// PostgreSQL server on which `--results postgres` creates (and drops) its database.
    #[arg(
        long,
        env = "CELERIAC_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        hide_env_values = true
    )]
    pub(super) postgres_url: String,
    /// MySQL / MariaDB server on which `--results mysql` creates (and drops) its database.
    #[arg(
        long,
        env = "CELERIAC_BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306/test",
        hide_env_values = true
    )]
    pub(super) mysql_url: String,
    /// The celeriac-worker binary [default: next to this executable].
    #[arg(long, env = "CELERIAC_BENCH_WORKER")]
    pub(super) worker_bin: Option<PathBuf>,
    /// Seconds any one phase may take before the bench gives up.
    #[arg(long, default_value_t = 300)]
    pub(super) timeout: u64,
}

pub(super) fn check_args(args: &BenchArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::new(m.to_owned()));
    if args.tasks == 0 {
        return bad("--tasks must be at least 1");
    }
    if args.producers == 0 {
        return bad("--producers must be at least 1");
    }
    if args.concurrency == 0 || args.prefetch_multiplier == 0 {
        return bad("--concurrency and --prefetch-multiplier must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return bad("--rate must be a positive number of tasks per second");
    }
    if args.rounds == 0 {
        return bad("--rounds must be at least 1");
    }
    if args.reference_publishers == 0 || args.reference_confirm_window == 0 {
        return bad("--reference-publishers and --reference-confirm-window must be at least 1");
    }
    if args.reference_prefetch == 0
        || args.reference_ack_every == 0
        || args.reference_ack_every > args.reference_prefetch
    {
        return bad(
            "--reference-prefetch must be at least 1 and --reference-ack-every between 1 and it",
        );
    }
    Ok(())
}
