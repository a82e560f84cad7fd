//! `celeriac-beat preview`: the next fire times of a trigger.

use std::path::PathBuf;

use celeriac_common::Config;
use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::args::TriggerArgs;
use crate::cli::error::CliError;
use crate::clock::format_instant;
use crate::schedule::entry::EntryError;
use crate::schedule::file_source;
use crate::trigger::{Calendars, DateRange, ExcludedDates, preview};

/// The flags of `preview`.
#[derive(Debug, Args)]
pub(crate) struct PreviewArgs {
    #[command(flatten)]
    trigger: TriggerArgs,
    /// Fire times strictly after this instant (RFC 3339) [default: now].
    #[arg(long)]
    from: Option<String>,
    /// How many fire times.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Also skip this date or range (2026-12-25, 2026-12-24..2026-12-26), repeatable.
    #[arg(long = "exclude-date", value_name = "DATES")]
    exclude_date: Vec<String>,
    /// The TOML schedule file whose calendars --exclude-calendar may name
    /// (the database's calendars are read too, when one is configured).
    #[arg(long, env = "CELERIAC_BEAT_SCHEDULE")]
    schedule: Option<PathBuf>,
}

/// Prints the fire times, one RFC 3339 timestamp per line.
pub(crate) fn run(args: &PreviewArgs, config: &Config) -> Result<(), CliError> {
    let from = match &args.from {
        Some(s) => parse_time("from", s)?,
        None => Utc::now(),
    };
    let spec = args.trigger.input()?.build()?;
    let calendars = if spec.calendars().is_empty() {
        Calendars::new()
    } else {
        calendars(args, config, spec.calendars())?
    };
    // An interval without --start is anchored where an entry added at --from would be.
    let mut trigger = spec
        .compile_in(Some(from), &calendars)
        .map_err(EntryError::from)?;
    if !args.exclude_date.is_empty() {
        let ranges = args
            .exclude_date
            .iter()
            .map(|d| DateRange::parse(d).map(|r| (r.from, r.to)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EntryError::from)?;
        trigger = trigger.excluding(ExcludedDates::new(ranges));
    }
    let times = preview(&trigger, from, args.count);
    if times.is_empty() && args.count > 0 {
        return Err(EntryError::invalid(
            "trigger",
            format!("never fires after {}", format_instant(from)),
        )
        .into());
    }
    let mut out = String::new();
    for t in times {
        out.push_str(&t.to_rfc3339());
        out.push('\n');
    }
    celeriac_common::out!("{out}");
    Ok(())
}

/// The calendars `names` may refer to: the schedule file's, and the
/// database's when a name is not in the file.
fn calendars(args: &PreviewArgs, config: &Config, names: &[String]) -> Result<Calendars, CliError> {
    let file = match &args.schedule {
        Some(path) => file_source::load(path)
            .map_err(crate::error::BeatError::from)?
            .calendars(),
        None => Calendars::new(),
    };
    if file.missing(names).is_empty() || !config.results_enabled() {
        return Ok(file);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::error::BeatError::Setup)?;
    let db = runtime.block_on(async {
        let store = crate::cli::open_store(config).await?;
        Ok::<_, CliError>(store.calendars().await?)
    })?;
    Ok(db.overlaid(&file))
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| {
            CliError::Usage(format!(
                "{field}: invalid instant \"{s}\", \
                 expected RFC 3339 such as 2024-05-01T09:00:00+02:00"
            ))
        })
}
