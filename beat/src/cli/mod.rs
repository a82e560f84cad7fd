//! The `celeriac-beat` command line. Exit codes: 0 success, 1 a service
//! failed (database, broker), 2 bad input (a bad expression, unknown time
//! zone, duplicate or unknown entry, bad JSON), with one line on stderr.

mod args;
mod calendar;
mod error;
mod list;
mod preview;
mod schedule;
mod tagged;

use std::path::PathBuf;
use std::process::ExitCode;

use celeriac_common::Config;
use celeriac_common::cli::{ConnectionArgs, one_line};
use celeriac_common::shutdown::stop_signal;
use clap::{Parser, Subcommand};

use self::calendar::CalendarCommand;
use self::error::CliError;
use self::preview::PreviewArgs;
use self::schedule::ScheduleCommand;
use crate::error::BeatError;
use crate::runner::Service;

/// celeriac beat: cron, interval and one-shot schedules, with leader election.
#[derive(Debug, Parser)]
#[command(name = "celeriac-beat", version)]
pub struct Cli {
    #[command(flatten)]
    conn: ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the scheduler (any number may run; one leads).
    Run {
        /// TOML schedule file, reloaded on change or SIGHUP.
        #[arg(long, env = "CELERIAC_BEAT_SCHEDULE")]
        schedule: Option<PathBuf>,
        /// Do not create or upgrade the tables on start.
        #[arg(long)]
        no_migrate: bool,
        /// Exit at once if the broker cannot be reached at startup, instead
        /// of retrying with backoff (broker_connection_retry_on_startup = false).
        #[arg(long)]
        no_startup_retry: bool,
        /// Serve /metrics (Prometheus) and /health on HOST:PORT, e.g. 127.0.0.1:9809
        /// [default: off].
        #[arg(long, value_name = "ADDR", env = "CELERIAC_BEAT_HTTP_ADDR")]
        http: Option<String>,
    },
    /// List or change the schedule; a running beat picks changes up within a second.
    Schedule {
        /// The TOML schedule file, to list its entries and check names against it.
        #[arg(long, env = "CELERIAC_BEAT_SCHEDULE", global = true)]
        schedule: Option<PathBuf>,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Exclusion calendars: dates on which entries naming them do not fire.
    Calendar {
        /// The TOML schedule file, to list its calendars and check names against it.
        #[arg(long, env = "CELERIAC_BEAT_SCHEDULE", global = true)]
        schedule: Option<PathBuf>,
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// Print the next fire times of a trigger, one RFC 3339 timestamp per line.
    Preview(PreviewArgs),
}

/// Runs the command line; returns the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    let quiet = !matches!(cli.command, Command::Run { .. });
    let config = match cli.conn.load() {
        Ok(c) => c,
        Err(e) => return fail(&CliError::Config(e)),
    };
    celeriac_common::telemetry::init(config.log_format, if quiet { "warn" } else { "info" });
    if let Command::Preview(args) = &cli.command {
        return match preview::run(args, &config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&BeatError::Setup(e).into()),
    };
    let result = runtime.block_on(dispatch(cli.command, config));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn dispatch(command: Command, mut config: Config) -> Result<(), CliError> {
    match command {
        Command::Run {
            schedule,
            no_migrate,
            no_startup_retry,
            http,
        } => {
            config.migrate_on_start &= !no_migrate;
            config.broker_connection_retry_on_startup &= !no_startup_retry;
            if let Some(addr) = http {
                config.beat_http_addr = Some(addr);
            }
            let stop = async {
                stop_signal().await;
            };
            Service::new(config, schedule).run(stop).await?;
            Ok(())
        }
        Command::Schedule { schedule, command } => {
            let schedule = schedule.or_else(|| config.beat_schedule.clone().map(PathBuf::from));
            schedule::run(command, &config, schedule.as_deref()).await
        }
        Command::Calendar { schedule, command } => {
            let schedule = schedule.or_else(|| config.beat_schedule.clone().map(PathBuf::from));
            let store = open_store(&config).await?;
            calendar::run(command, &store, schedule.as_deref()).await
        }
        Command::Preview(_) => Ok(()),
    }
}

/// The database schedule (tables created or upgraded unless `--no-migrate`
/// style configuration says otherwise).
pub(crate) async fn open_store(config: &Config) -> Result<crate::schedule::store::Store, CliError> {
    if !config.results_enabled() {
        return Err(BeatError::NoDatabase.into());
    }
    let backend = celeriac_common::ResultBackend::connect(&config.result_backend).await?;
    if config.migrate_on_start {
        backend.migrate().await?;
    }
    Ok(crate::schedule::store::Store::new(
        backend.connection().clone(),
    ))
}

fn fail(err: &CliError) -> ExitCode {
    eprintln!("celeriac-beat: error: {}", one_line(err));
    ExitCode::from(err.exit_code())
}

/// Prints `rows` under `header` in left-aligned columns two spaces apart,
/// each as wide as its widest cell.
fn print_columns<const N: usize>(header: &[String; N], rows: &[[String; N]]) {
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        celeriac_common::outln!("{}", cells.join("  ").trim_end());
    }
}
