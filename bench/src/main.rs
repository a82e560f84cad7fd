//! `celeriac-bench`: celeriac's benchmarks, kept out of the libraries that
//! apps link. Every latency figure is reported with one percentile
//! definition, nearest rank ([`stats`]).
//!
//! * `celeriac-bench [OPTIONS]`: throughput, latency and worker footprint
//!   against RabbitMQ, next to plain lapin reference loops ([`throughput`]);
//! * `celeriac-bench beat`: one beat with many database entries ([`beat`]);
//! * `celeriac-bench delay`: delayed delivery, precision and memory ([`delay`]);
//! * `celeriac-bench latency`: the plain-lapin latency floor ([`latency`]);
//! * `celeriac-bench chord`: a chord of 10,000 no-ops against a plain group ([`chord`]);
//! * `celeriac-bench dashboard`: the dashboard's task search and task page
//!   over a million rows in PostgreSQL ([`dashboard`]).
//!
//! The benchmarks that run workers start the `celeriac-worker` binary built
//! next to this one (`cargo build --release -p celeriac-worker -p
//! celeriac-bench`), or the one `--worker-bin` names.

mod beat;
mod beat_floor;
mod chord;
mod cleanup;
mod dashboard;
mod delay;
mod error;
mod latency;
mod procfs;
mod stats;
mod throughput;

use celeriac_common::cli::ConnectionArgs;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Subcommand};
use error::BenchError;
use std::process::ExitCode;

/// celeriac benchmarks: without a subcommand, throughput, latency and worker
/// footprint against RabbitMQ, next to plain lapin reference loops.
///
/// The connection options apply to every benchmark, before or after the
/// subcommand; the others to the run without a subcommand only.
#[derive(Debug, clap::Parser)]
#[command(name = "celeriac-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: throughput::BenchArgs,
    #[command(flatten, next_help_heading = "Connection")]
    conn: ConnectionArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure beat with many entries: load time, memory, idle CPU, lateness.
    Beat(beat::BeatArgs),
    /// Measure delayed delivery: start − due precision, worker memory, publish rates.
    Delay(delay::DelayArgs),
    /// Measure the latency floor: plain lapin, publish to a consumer in another process.
    Latency(latency::LatencyArgs),
    /// Measure a chord of 10,000 no-ops end to end against a plain group, and the callback's delay.
    Chord(chord::ChordArgs),
    /// Measure the dashboard's task search and task page over --rows rows in PostgreSQL.
    Dashboard(dashboard::DashboardArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    refuse_run_options_with_a_subcommand(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match cli.conn.load() {
        Ok(c) => c,
        Err(e) => return fail(&BenchError::from(e)),
    };
    celeriac_common::telemetry::init(config.log_format, "warn");
    // The latency probe runs on one thread, as the stock worker does; the
    // others on the default multi-thread runtime.
    let runtime = match &cli.command {
        Some(Command::Latency(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            return fail(&BenchError::new(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            // It prints its own error line.
            None => return Ok(throughput::run(cli.bench, config).await),
            Some(Command::Beat(args)) => beat::run(args, config).await,
            Some(Command::Delay(args)) => delay::run(args, config).await,
            Some(Command::Latency(args)) => latency::run(args, config).await,
            Some(Command::Chord(args)) => chord::run(args, config).await,
            Some(Command::Dashboard(args)) => dashboard::run(args, config).await,
        }
        .map(|()| ExitCode::SUCCESS)
    });
    outcome.unwrap_or_else(|e| fail(&e))
}

/// Exits with a usage error (code 2) if a subcommand comes with an option
/// of the run without one (typed, not from the environment): it would be
/// ignored.
fn refuse_run_options_with_a_subcommand(matches: &ArgMatches) {
    let Some((name, _)) = matches.subcommand() else {
        return;
    };
    let run_options = <throughput::BenchArgs as clap::Args>::augment_args(clap::Command::new(""));
    for arg in run_options.get_arguments() {
        if matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            let flag = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--{flag} belongs to the run without a subcommand, not to '{name}' (see celeriac-bench {name} --help)"
                    ),
                )
                .exit();
        }
    }
}

/// Prints `e` as the one error line; exit code 1.
fn fail(e: &BenchError) -> ExitCode {
    eprintln!("celeriac-bench: error: {e}");
    ExitCode::FAILURE
}
