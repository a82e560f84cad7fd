//! Following the schedule's changes between ticks: database changes polled
//! by schedule version, schedule file reloads, and the calendars both bring.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};

use super::Beat;
use crate::error::BeatError;
use crate::firing::EntryName;
use crate::firing::dispatch::Publisher;
use crate::firing::run_state::{self, RunState};
use crate::schedule::entry::{Entry, Source};
use crate::schedule::file_source::ScheduleFile;
use crate::schedule::store::EntryChange;

/// How far before a poll a change it picks up may count from.
const CHANGE_SLACK: TimeDelta = TimeDelta::seconds(10);

impl<P: Publisher> Beat<P> {
    pub(super) fn upsert(&mut self, entry: Entry, state: Option<RunState>, now: DateTime<Utc>) {
        let name = entry.name.clone();
        if let Err(e) = self.scheduler.upsert(entry, state, now) {
            tracing::error!(entry = %name, "invalid trigger, entry ignored: {e}");
        }
    }

    /// Gives the scheduler the database calendars overlaid by the file's.
    pub(super) fn apply_calendars(&mut self) {
        for name in self.db_calendars.names() {
            if self.file_calendars.get(name).is_some() {
                tracing::warn!(
                    calendar = %name,
                    "a schedule file calendar has the same name: the database calendar is ignored"
                );
            }
        }
        let merged = self.db_calendars.overlaid(&self.file_calendars);
        let affected = self.scheduler.set_calendars(merged);
        if affected > 0 {
            tracing::info!(
                entries = affected,
                "exclusion calendars changed; next fire times recomputed"
            );
        }
    }

    /// Reads and applies database changes if the schedule version moved
    /// (one cheap query when nothing changed). Returns whether it did.
    pub async fn poll_changes(&mut self, now: DateTime<Utc>) -> Result<bool, BeatError> {
        let version = self.store.version().await?;
        if version == self.revision {
            return Ok(false);
        }
        let changes = self.store.changes_since(self.revision).await?;
        let db_calendars = self.store.calendars().await?;
        if db_calendars != self.db_calendars {
            self.db_calendars = db_calendars;
            self.apply_calendars();
        }
        let file_names: HashSet<EntryName> =
            self.scheduler.names(Source::File).into_iter().collect();
        let new_names: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                EntryChange::Upsert(e, _) if self.scheduler.entry(&e.name).is_none() => {
                    Some(e.name.clone())
                }
                _ => None,
            })
            .collect();
        let mut states = run_state::load_some(self.store.db(), &new_names).await?;
        for change in changes {
            match change {
                EntryChange::Upsert(entry, changed_at) => {
                    if file_names.contains(entry.name.as_str()) {
                        tracing::warn!(
                            entry = %entry.name,
                            "a file entry has the same name: the database entry is ignored"
                        );
                        continue;
                    }
                    tracing::info!(
                        entry = %entry.name,
                        enabled = entry.enabled,
                        "schedule change picked up"
                    );
                    let state = states.remove(&entry.name);
                    // A changed trigger or a resume counts from when it was
                    // made, not from this poll: a resume a moment before a
                    // fire time keeps that fire. Within the last
                    // CHANGE_SLACK only, so a writer's slow clock cannot
                    // bring back runs from a paused stretch.
                    let made = changed_at.map_or(now, |c| c.clamp(now - CHANGE_SLACK, now));
                    self.upsert(*entry, state, made);
                }
                EntryChange::Removed(name) => {
                    if !file_names.contains(name.as_str()) && self.scheduler.remove(&name) {
                        tracing::info!(entry = %name, "entry removed");
                    }
                }
            }
        }
        for (name, at) in run_state::run_now_requests(self.store.db()).await? {
            if !self.scheduler.request_run_now(&name, at) {
                tracing::warn!(entry = %name, "run-now requested for an unknown entry");
            }
        }
        self.revision = version;
        self.flush(now).await?;
        Ok(true)
    }

    /// Replaces the file entries and calendars (a reloaded schedule file).
    pub async fn apply_file(
        &mut self,
        file: impl Into<ScheduleFile>,
        now: DateTime<Utc>,
    ) -> Result<(), BeatError> {
        let file: ScheduleFile = file.into();
        let calendars = file.calendars();
        if calendars != self.file_calendars {
            self.file_calendars = calendars;
            self.apply_calendars();
        }
        let entries = file.entries;
        let keep: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let removed: Vec<EntryName> = self
            .scheduler
            .names(Source::File)
            .into_iter()
            .filter(|name| !keep.contains(&**name))
            .collect();
        // A database entry the removed file entry hid takes its place. Read
        // before anything changes, so a failed read leaves all as it was
        // for the next try.
        let mut hidden = Vec::new();
        for name in &removed {
            if let Some(entry) = self.store.get(name).await? {
                hidden.push((entry, run_state::load_one(self.store.db(), name).await?));
            }
        }
        for name in removed {
            self.scheduler.remove(&name);
            tracing::info!(entry = %name, "entry removed from the schedule file");
        }
        for (entry, stored) in hidden {
            tracing::info!(entry = %entry.name, "database entry of the same name loaded");
            self.upsert(entry, stored, now);
        }
        for entry in entries {
            if self.scheduler.is_current(&entry) {
                continue;
            }
            tracing::info!(entry = %entry.name, "schedule file entry loaded");
            let stored = run_state::load_one(self.store.db(), &entry.name).await?;
            self.upsert(entry, stored, now);
        }
        self.flush(now).await
    }
}
