//! `celeriac-beat preview`: the next fire times of a trigger.

use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::args::TriggerArgs;
use crate::cli::error::CliError;
use crate::clock::format_instant;
use crate::schedule::entry::EntryError;
use crate::trigger::preview;

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
}

/// Prints the fire times, one RFC 3339 timestamp per line.
pub(crate) fn run(args: &PreviewArgs) -> Result<(), CliError> {
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
            format!("never fires after {}", format_instant(from)),
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

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| CliError::Usage(format!("{field}: invalid instant \"{s}\", expected RFC 3339 such as 2024-05-01T09:00:00+02:00")))
}
