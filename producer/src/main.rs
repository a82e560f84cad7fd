//! `celeriac`: the admin command line. Call and revoke tasks, read
//! results, purge queues, inspect and replay the dead-letter queue, check
//! a worker's or beat's health, run migrations.

mod admin;
#[cfg(feature = "dashboard")]
mod dashboard;
mod follow;
mod health;
mod workflow_cli;

use celeriac::{ApplyOptions, Client, ClientError, ResultError};
use celeriac_common::backend::{ResultBackend, TaskRecord};
use celeriac_common::cli::{BackendArgs, BrokerArgs, one_line};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::process::ExitCode;
use std::time::Duration;

/// celeriac admin: call and revoke tasks, read results, purge queues,
/// manage the dead-letter queue, check health, migrate the database.
#[derive(Debug, Parser)]
#[command(name = "celeriac", version)]
struct Cli {
    #[command(flatten)]
    conn: BrokerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send a task by name and print its id (or, with --wait, its outcome as JSON).
    Call {
        /// Task name, e.g. celeriac.echo.
        task: String,
        /// Positional arguments as a JSON list.
        #[arg(long, default_value = "[]")]
        args: String,
        /// Keyword arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        kwargs: String,
        /// Run no earlier than this many seconds from now.
        #[arg(long, conflicts_with = "eta", allow_negative_numbers = true)]
        countdown: Option<f64>,
        /// Run no earlier than this instant (RFC 3339).
        #[arg(long)]
        eta: Option<String>,
        /// Do not run after this many seconds from now.
        #[arg(long)]
        expires: Option<f64>,
        /// Queue to send to [default: celery].
        #[arg(long)]
        queue: Option<String>,
        /// Wait for the outcome, up to SECS seconds (default 30).
        #[arg(long, num_args = 0..=1, default_missing_value = "30")]
        wait: Option<f64>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Print a task's outcome as JSON: {"id","state","result","error"}, and its
    /// workflow's tree ("workflow") when it is part of one.
    Result {
        /// Task id.
        id: String,
        /// Wait up to SECS seconds for a final state.
        #[arg(long)]
        wait: Option<f64>,
        /// Show state and progress until the task is final (a progress bar on
        /// a terminal, plain lines otherwise), then its outcome.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Draw a workflow (chain, group, chord) as a tree, each task with its state.
    Workflow(workflow_cli::WorkflowArgs),
    /// Revoke a task by id: a scheduled or redelivered task is then never started.
    Revoke {
        /// Task id.
        id: String,
        /// Also stop it if a worker is running it (async tasks only).
        #[arg(long)]
        terminate: bool,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Delete every waiting message in a queue.
    Purge {
        /// Queue [default: celery].
        #[arg(long)]
        queue: Option<String>,
    },
    /// Manage stored results: `results purge` deletes expired ones now.
    Results {
        #[command(subcommand)]
        action: ResultsAction,
    },
    /// Inspect, replay or drop dead-lettered messages.
    Dlq {
        /// The dead-letter queue [default: celeriac.dlq].
        #[arg(long, env = "CELERIAC_DEAD_LETTER_QUEUE", global = true)]
        dead_letter_queue: Option<String>,
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Exit 0 if this host's worker, or a beat, is alive (for container health checks).
    Health {
        /// What to check.
        #[arg(value_enum, value_name = "WHAT")]
        of: health::Of,
        /// The worker's host name [default: celeriac@HOST, as a worker on this host names itself].
        #[arg(short = 'n', long, env = "CELERIAC_HOSTNAME")]
        hostname: Option<String>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Ask workers (celeriac's or Celery's) what they run and hold: ping, stats, active, ...
    Inspect(admin::inspect::InspectArgs),
    /// Change workers at run time: rate and time limits, queues consumed, events, shutdown.
    Control(admin::inspect::ControlArgs),
    /// Print Celery's events as they happen (tail -f style) until Ctrl-C.
    Events(admin::events::EventsArgs),
    /// Serve the web dashboard: workers, queues, tasks, schedules, live
    /// (runs celeriac-dashboard; see its --help).
    #[cfg(feature = "dashboard")]
    #[command(disable_help_flag = true)]
    Dashboard {
        /// celeriac-dashboard's flags: --bind ADDR (127.0.0.1:5555), --token T, ...
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Create or upgrade every table celeriac uses (results and beat).
    Migrate {
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ResultsAction {
    /// Delete results finished more than --older-than seconds ago, and
    /// chords whose callback was sent before then and whose members all
    /// reported (as workers do every hour); rows still running or waiting stay.
    Purge {
        /// Age in seconds [default: result_expires_secs, one day].
        #[arg(long, allow_negative_numbers = true)]
        older_than: Option<f64>,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// List dead-lettered messages (id, task, reason, origin queue) as JSON lines.
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead-lettered messages back to their queue: the given ids, or --all.
    Replay {
        /// Task ids to replay.
        ids: Vec<String>,
        /// Replay every message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete every dead-lettered message.
    Purge,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Config(#[from] celeriac_common::ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Backend(#[from] celeriac_common::BackendError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot print JSON")]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[cfg(feature = "dashboard")]
    #[error(transparent)]
    Dashboard(#[from] dashboard::DashboardError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<ExitCode, CliError> {
        let config = cli.conn.load()?;
        celeriac_common::telemetry::init(config.log_format, "warn");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        runtime.block_on(execute(cli.command, config))
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("celeriac: error: {}", one_line(&e));
            match e {
                CliError::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn secs(value: f64, what: &str) -> Result<Duration, CliError> {
    let within = value <= celeriac_common::seconds::MAX_SECONDS;
    celeriac_common::seconds::capped(value)
        .filter(|_| within)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--{what} must be a non-negative number of seconds, at most 1000 years, got {value}"
            ))
        })
}

async fn execute(command: Command, mut config: celeriac::Config) -> Result<ExitCode, CliError> {
    match command {
        Command::Call {
            task,
            args,
            kwargs,
            countdown,
            eta,
            expires,
            queue,
            wait,
            backend,
        } => {
            backend.apply(&mut config);
            let args: Vec<Value> = serde_json::from_str(&args)
                .map_err(|e| CliError::Usage(format!("--args must be a JSON list: {e}")))?;
            let kwargs: Map<String, Value> = serde_json::from_str(&kwargs)
                .map_err(|e| CliError::Usage(format!("--kwargs must be a JSON object: {e}")))?;
            let mut opts = ApplyOptions::new();
            if let Some(c) = countdown {
                opts = opts.countdown(secs(c, "countdown")?);
            }
            if let Some(e) = eta {
                let at = celeriac_common::protocol::parse_time(&e).ok_or_else(|| {
                    CliError::Usage(format!("--eta {e:?} is not an RFC 3339 instant"))
                })?;
                opts = opts.eta(at.with_timezone(&chrono::Utc));
            }
            if let Some(x) = expires {
                opts = opts.expires_in(secs(x, "expires")?);
            }
            if let Some(q) = queue {
                opts = opts.queue(q);
            }
            let wait = wait.map(|w| secs(w, "wait")).transpose()?;
            let client = Client::connect(config).await?;
            let result = client.send_task(&task, args, kwargs, opts).await?;
            let Some(wait) = wait else {
                celeriac_common::outln!("{}", result.id());
                return Ok(ExitCode::SUCCESS);
            };
            print_outcome(result.id(), result.wait(wait).await)
        }
        Command::Result {
            id,
            wait,
            follow,
            backend,
        } => {
            backend.apply(&mut config);
            let backend = ResultBackend::connect(&config.result_backend).await?;
            if config.migrate_on_start {
                backend.migrate().await?;
            }
            let record = match wait {
                _ if follow => {
                    let wait = wait.map(|w| secs(w, "wait")).transpose()?;
                    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
                    follow::follow(&backend, &id, deadline).await?
                }
                Some(w) => {
                    let deadline = tokio::time::Instant::now() + secs(w, "wait")?;
                    loop {
                        let r = backend.get(&id).await?;
                        if r.as_ref().is_some_and(|r| r.state.is_ready())
                            || tokio::time::Instant::now() >= deadline
                        {
                            break r;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                None => backend.get(&id).await?,
            };
            let tree = celeriac::workflow::load(&backend, &id)
                .await?
                .filter(|t| t.is_workflow())
                .map(|t| serde_json::to_value(t).map_err(CliError::Json))
                .transpose()?;
            print_record(&id, record.as_ref(), tree)
        }
        Command::Workflow(args) => args.run(config).await,
        Command::Revoke {
            id,
            terminate,
            backend,
        } => {
            backend.apply(&mut config);
            let client = Client::connect(config).await?;
            if client.revoke_with(&id, terminate).await? {
                celeriac_common::outln!("revoked {id}");
            } else {
                celeriac_common::outln!("{id} already finished; nothing to revoke");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { queue } => {
            let queue = queue.unwrap_or_else(|| config.default_queue.clone());
            let client = Client::connect(config).await?;
            let n = client.purge(&queue).await?;
            celeriac_common::outln!("purged {n} messages from {queue}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Results {
            action:
                ResultsAction::Purge {
                    older_than,
                    backend,
                },
        } => {
            backend.apply(&mut config);
            let age = match older_than {
                Some(s) => secs(s, "older-than")?,
                None if config.result_expires_secs == 0 => {
                    return Err(CliError::Usage(
                        "result_expires_secs is 0 (results never expire): give --older-than SECS"
                            .into(),
                    ));
                }
                None => Duration::from_secs(config.result_expires_secs),
            };
            let cutoff = celeriac_common::backend::expiry::cutoff(age).ok_or_else(|| {
                CliError::Usage(format!(
                    "--older-than {} s reaches before year 1",
                    age.as_secs()
                ))
            })?;
            let backend = ResultBackend::connect(&config.result_backend).await?;
            if config.migrate_on_start {
                backend.migrate().await?;
            }
            let purged = backend.purge_expired(cutoff).await?;
            celeriac_common::outln!(
                "deleted {} task results and {} chords finished before {}",
                purged.tasks,
                purged.chords,
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            dead_letter_queue,
            action,
        } => {
            if let Some(q) = dead_letter_queue {
                config.dead_letter_queue = q;
                config.check("command line")?;
            }
            let client = Client::connect(config).await?;
            match action {
                DlqAction::List { limit } => {
                    for letter in client.dead_letters(limit).await? {
                        // Serialized from the struct: its fields in their order.
                        celeriac_common::outln!(
                            "{}",
                            serde_json::to_string(&letter).map_err(CliError::Json)?
                        );
                    }
                }
                DlqAction::Replay { ids, all } => {
                    if ids.is_empty() && !all {
                        return Err(CliError::Usage("give task ids to replay, or --all".into()));
                    }
                    celeriac_common::outln!(
                        "replayed {} messages",
                        client.replay_dead_letters(&ids).await?
                    );
                }
                DlqAction::Purge => {
                    celeriac_common::outln!(
                        "purged {} messages",
                        client.purge_dead_letters().await?
                    )
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Health {
            of,
            hostname,
            backend,
        } => {
            backend.apply(&mut config);
            Ok(health::check(of, hostname, &config).await?)
        }
        Command::Inspect(args) => Ok(args.run(&config).await?),
        Command::Control(args) => Ok(args.run(&config).await?),
        Command::Events(args) => Ok(args.run(&config).await?),
        #[cfg(feature = "dashboard")]
        Command::Dashboard { args } => Ok(dashboard::run(&config, &args)?),
        Command::Migrate { backend } => {
            backend.apply(&mut config);
            let backend = ResultBackend::connect(&config.result_backend).await?;
            backend.migrate().await?;
            celeriac_common::outln!(
                "migrated {}",
                celeriac_common::mask_url(&config.result_backend)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_outcome(id: &str, waited: Result<TaskRecord, ResultError>) -> Result<ExitCode, CliError> {
    match waited {
        Ok(record) => print_record(id, Some(&record), None),
        Err(ResultError::Timeout { state, .. }) => {
            print_json(&Outcome {
                id,
                state,
                result: Value::Null,
                error: json!({"type": "Timeout", "message": "no final state before --wait ran out"}),
                workflow: None,
            })?;
            Ok(ExitCode::FAILURE)
        }
        Err(ResultError::Client(e)) => Err(e.into()),
        Err(other) => Err(CliError::Usage(other.to_string())),
    }
}

/// A task's outcome as printed: the keys in this order (a derived
/// `Serialize` keeps the fields' order; a `json!` map would sort them).
#[derive(Serialize)]
struct Outcome<'a> {
    id: &'a str,
    state: celeriac::TaskState,
    result: Value,
    error: Value,
    /// The workflow's tree, when the task is part of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow: Option<Value>,
}

pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    celeriac_common::outln!("{}", serde_json::to_string(value).map_err(CliError::Json)?);
    Ok(())
}

/// Prints `{"id","state","result","error"}` (and `"workflow"`, the tree of
/// the workflow it is part of); exit 0 only on SUCCESS.
fn print_record(
    id: &str,
    record: Option<&TaskRecord>,
    workflow: Option<Value>,
) -> Result<ExitCode, CliError> {
    let (state, result, error) = match record {
        Some(r) => (
            r.state,
            r.result.clone().unwrap_or(Value::Null),
            r.error.as_ref().map_or(Value::Null, |e| json!(e)),
        ),
        None => (celeriac::TaskState::Pending, Value::Null, Value::Null),
    };
    print_json(&Outcome {
        id,
        state,
        result,
        error,
        workflow,
    })?;
    Ok(if state == celeriac::TaskState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
