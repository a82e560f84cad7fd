//! Keeping a leader's schedule current: database changes (polled by
//! schedule version) and schedule file reloads.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::BeatError;
use crate::firing::beat::Beat;
use crate::firing::dispatch::Publisher;
use crate::firing::run_state;
use crate::schedule::entry::{Entry, Source};
use crate::schedule::store::EntryChange;

impl<P: Publisher> Beat<P> {
    /// Reads and applies database changes if the schedule version moved
    /// (one cheap query when nothing changed). Returns whether it did.
    pub async fn poll_changes(&mut self, now: DateTime<Utc>) -> Result<bool, BeatError> {
        let version = self.store.version().await?;
        if version == self.revision {
            return Ok(false);
        }
        let changes = self.store.changes_since(self.revision).await?;
        let file_names: HashSet<Arc<str>> =
            self.scheduler.names(Source::File).into_iter().collect();
        let new_names: Vec<String> = changes
            .iter()
            .filter_map(|c| match c {
                EntryChange::Upsert(e) if self.scheduler.entry(&e.name).is_none() => {
                    Some(e.name.clone())
                }
                _ => None,
            })
            .collect();
        let mut states = run_state::load_some(self.store.db(), &new_names).await?;
        for change in changes {
            match change {
                EntryChange::Upsert(entry) => {
                    if file_names.contains(entry.name.as_str()) {
                        tracing::warn!(entry = %entry.name, "a file entry has the same name: the database entry is ignored");
                        continue;
                    }
                    tracing::info!(entry = %entry.name, enabled = entry.enabled, "schedule change picked up");
                    let state = states.remove(&entry.name);
                    self.upsert(*entry, state, now);
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

    /// Replaces the file entries with `entries` (a reloaded schedule file).
    pub async fn apply_file(
        &mut self,
        entries: Vec<Entry>,
        now: DateTime<Utc>,
    ) -> Result<(), BeatError> {
        let keep: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        for name in self.scheduler.names(Source::File) {
            if !keep.contains(&*name) {
                self.scheduler.remove(&name);
                tracing::info!(entry = %name, "entry removed from the schedule file");
            }
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
