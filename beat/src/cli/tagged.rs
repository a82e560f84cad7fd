//! `schedule pause|resume|remove NAME` or `--tag T`: one entry by name, or
//! every database entry with a tag, changed in one transaction.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::error::CliError;
use crate::schedule::entry::Entry;
use crate::schedule::store::Store;
use crate::schedule::tags::no_entry_with;

/// Which entries a command acts on: one by name, or all with a tag.
#[derive(Debug, Clone, Args)]
pub(crate) struct Selector {
    /// Entry name.
    #[arg(required_unless_present = "tag")]
    pub(crate) name: Option<String>,
    /// Every database entry with this tag instead.
    #[arg(long, conflicts_with = "name")]
    pub(crate) tag: Option<String>,
}

/// What to do to the entries with a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagVerb {
    Pause,
    Resume,
    Remove,
}

impl TagVerb {
    fn past(self) -> &'static str {
        match self {
            TagVerb::Pause => "paused",
            TagVerb::Resume => "resumed",
            TagVerb::Remove => "removed",
        }
    }
}

/// Applies `verb` to every database entry tagged `tag`; prints one line per
/// entry. File entries with the tag cannot be changed from here: each is
/// named on stderr, and if only file entries have it, that is the error. A
/// tag no entry has is an error (exit 2).
pub(crate) async fn by_tag(
    store: &Store,
    verb: TagVerb,
    tag: &str,
    file_entries: &[Entry],
    schedule: Option<&Path>,
    now: DateTime<Utc>,
) -> Result<(), CliError> {
    let changed = match verb {
        TagVerb::Pause => store.set_enabled_tagged(tag, false, now).await?,
        TagVerb::Resume => store.set_enabled_tagged(tag, true, now).await?,
        TagVerb::Remove => store.remove_tagged(tag, now).await?,
    };
    let in_file: Vec<&str> = file_entries
        .iter()
        .filter(|e| e.tags.iter().any(|t| t == tag))
        .map(|e| e.name.as_str())
        .collect();
    let file = schedule
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if changed.is_empty() && !in_file.is_empty() {
        return Err(CliError::Usage(format!(
            "the entries with tag \"{tag}\" ({}) are defined in the schedule file {file}; \
             edit the file to change them",
            in_file.join(", ")
        )));
    }
    if changed.is_empty() {
        let mut known = store.tags().await?;
        known.extend(file_entries.iter().flat_map(|e| e.tags.iter().cloned()));
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        return Err(CliError::Usage(no_entry_with(
            tag,
            &known,
            schedule.is_some(),
        )));
    }
    for name in &changed {
        celeriac_common::outln!("{} {name}", verb.past());
    }
    for name in in_file.iter().filter(|n| !changed.iter().any(|c| c == *n)) {
        eprintln!(
            "celeriac-beat: warning: entry \"{name}\" (tag \"{tag}\") is defined in the \
             schedule file {file}; edit the file to change it"
        );
    }
    Ok(())
}
