//! The `celeriac-beat` command line. Exit codes: 0 success, 1 a service
//! failed (database, broker), 2 bad input (a bad expression, unknown time
//! zone, duplicate or unknown entry, bad JSON), with one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use celeriac_common::cli::{ConnectionArgs, one_line};
use celeriac_common::shutdown::stop_signal;
use celeriac_common::{Config, ConfigError};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

mod schedule;

use self::schedule::EntryArgs;
use crate::error::BeatError;
use crate::runner::Service;
use crate::schedule::entry::EntryError;
use crate::schedule::store::StoreError;
use crate::schedule::trigger_input::TriggerInput;
use crate::trigger::preview;

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
    },
    /// List or change the schedule; a running beat picks changes up within a second.
    Schedule {
        /// The TOML schedule file, to list its entries and check names against it.
        #[arg(long, env = "CELERIAC_BEAT_SCHEDULE", global = true)]
        schedule: Option<PathBuf>,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Print the next fire times of a trigger, one RFC 3339 timestamp per line.
    Preview(PreviewArgs),
    /// Measure beat with many entries (see README, "Schedules (beat)").
    #[command(hide = true)]
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum ScheduleCommand {
    /// List file and database entries with their run state.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a database entry.
    Add {
        /// Unique entry name.
        name: String,
        /// Task name, e.g. tasks.report.
        task: String,
        #[command(flatten)]
        trigger: TriggerArgs,
        #[command(flatten)]
        entry: EntryArgs,
        /// Add it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Change a database entry; only what is given changes.
    Modify {
        /// Entry name.
        name: String,
        /// New task name.
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        trigger: TriggerArgs,
        #[command(flatten)]
        entry: EntryArgs,
    },
    /// Remove a database entry and its run state.
    Remove {
        /// Entry name.
        name: String,
    },
    /// Pause a database entry: it does not fire until resumed.
    Pause {
        /// Entry name.
        name: String,
    },
    /// Resume a paused entry; it fires from now on (runs while paused are not sent).
    Resume {
        /// Entry name.
        name: String,
    },
    /// Send one run of an entry now (file or database), besides its schedule.
    RunNow {
        /// Entry name.
        name: String,
    },
}

/// The trigger flags shared by `schedule add`, `schedule modify` and `preview`.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct TriggerArgs {
    /// Crontab string: 5, 6 (seconds first) or 7 (plus year) fields, or @daily etc.
    #[arg(long)]
    cron: Option<String>,
    /// APScheduler-style fields as JSON, e.g. '{"day_of_week": "mon-fri", "hour": 9}'.
    #[arg(long)]
    fields: Option<String>,
    /// Interval, e.g. 30s, 1h30m, 2d.
    #[arg(long)]
    every: Option<String>,
    /// Run once at this RFC 3339 instant.
    #[arg(long)]
    at: Option<String>,
    /// IANA time zone the trigger is evaluated in [default: UTC].
    #[arg(long)]
    tz: Option<String>,
    /// No fire before this (RFC 3339, or a date-time in --tz).
    #[arg(long)]
    start: Option<String>,
    /// No fire after this (RFC 3339, or a date-time in --tz).
    #[arg(long)]
    end: Option<String>,
    /// Random delay of interval runs, up to this duration.
    #[arg(long)]
    jitter: Option<String>,
}

impl TriggerArgs {
    pub(crate) fn input(&self) -> Result<TriggerInput, CliError> {
        let fields = self
            .fields
            .as_deref()
            .map(|f| {
                serde_json::from_str(f)
                    .map_err(|e| EntryError::invalid("fields", format!("invalid JSON: {e}")))
            })
            .transpose()?;
        Ok(TriggerInput {
            cron: self.cron.clone(),
            fields,
            every: self.every.clone(),
            at: self.at.clone(),
            trigger: None,
            timezone: self.tz.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            jitter: self.jitter.clone(),
        })
    }
}

#[derive(Debug, Args)]
struct PreviewArgs {
    #[command(flatten)]
    trigger: TriggerArgs,
    /// Fire times strictly after this instant (RFC 3339) [default: now].
    #[arg(long)]
    from: Option<String>,
    /// How many fire times.
    #[arg(long, default_value_t = 10)]
    count: usize,
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Bad input about an entry or trigger.
    #[error(transparent)]
    Input(#[from] EntryError),
    /// Other bad input.
    #[error("{0}")]
    Usage(String),
    /// A schedule operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The service failed.
    #[error(transparent)]
    Beat(Box<BeatError>),
}

impl From<BeatError> for CliError {
    fn from(e: BeatError) -> Self {
        CliError::Beat(Box::new(e))
    }
}

impl From<sea_orm::DbErr> for CliError {
    fn from(e: sea_orm::DbErr) -> Self {
        BeatError::Db(e).into()
    }
}

impl From<celeriac_common::BackendError> for CliError {
    fn from(e: celeriac_common::BackendError) -> Self {
        BeatError::Backend(e).into()
    }
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::Usage(_) => 2,
            CliError::Store(StoreError::Exists(_) | StoreError::Unknown(_)) => 2,
            CliError::Beat(e) if matches!(**e, BeatError::File(_)) => 2,
            _ => 1,
        }
    }
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
        return match preview_cmd(args) {
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
        } => {
            config.migrate_on_start &= !no_migrate;
            let stop = async {
                stop_signal().await;
            };
            Service::new(config, schedule).run(stop).await?;
            Ok(())
        }
        Command::Schedule { schedule, command } => {
            let schedule = schedule.or_else(|| config.beat_schedule.clone().map(PathBuf::from));
            self::schedule::run(command, &config, schedule.as_deref()).await
        }
        Command::Bench(args) => crate::bench::run(args, config)
            .await
            .map_err(|e| CliError::Usage(one_line(&*e))),
        Command::Preview(_) => Ok(()),
    }
}

fn preview_cmd(args: &PreviewArgs) -> Result<(), CliError> {
    let from = match &args.from {
        Some(s) => parse_time("from", s)?,
        None => Utc::now(),
    };
    let spec = args.trigger.input()?.build()?;
    // An interval without --start is anchored where an entry added at --from would be.
    let trigger = spec.compile_with_anchor(from).map_err(EntryError::from)?;
    let times = preview(&trigger, from, args.count);
    if times.is_empty() && args.count > 0 {
        return Err(EntryError::invalid(
            "trigger",
            format!("never fires after {}", crate::clock::format_instant(from)),
        )
        .into());
    }
    let mut out = String::new();
    for t in times {
        out.push_str(&t.to_rfc3339());
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

pub(crate) fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| CliError::Usage(format!("{field}: invalid instant \"{s}\", expected RFC 3339 such as 2024-05-01T09:00:00+02:00")))
}

fn fail(err: &CliError) -> ExitCode {
    eprintln!("celeriac-beat: error: {}", one_line(err));
    ExitCode::from(err.exit_code())
}
