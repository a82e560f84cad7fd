//! What the caller reports back after [`Scheduler::take_due`]: runs sent,
//! failed or held, settled ([`Scheduler::finish`]), and the run states to
//! persist.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Scheduler;
use crate::firing::run_state::RunState;

impl Scheduler {
    /// The runs planned for `name` are settled (sent, failed or held):
    /// recomputes its wake-up. Returns `true` if it has just run out of fire times.
    pub fn finish(&mut self, name: &str) -> bool {
        self.in_flight.remove(name);
        self.reschedule(name)
    }

    /// Run states changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> Vec<(Arc<str>, RunState)> {
        // Taken, not drained: the set held every name after the load and
        // would keep room for them all.
        let names: Vec<Arc<str>> = std::mem::take(&mut self.dirty).into_iter().collect();
        names
            .into_iter()
            .filter_map(|n| self.slot(&n).map(|s| (n.clone(), s.state.clone())))
            .collect()
    }

    /// Marks states as needing a write again (after a failed write).
    pub fn mark_dirty(&mut self, names: impl IntoIterator<Item = Arc<str>>) {
        self.dirty.extend(names);
    }

    /// A planned run was not sent because `max_instances` runs are unfinished.
    pub fn hold(&mut self, name: &str) {
        if let Some(slot) = self.slot_mut(name) {
            slot.hold();
            let name = slot.name.clone();
            self.dirty.insert(name);
        }
    }

    /// A run (scheduled at `at`, or a run-now request if `run_now`) was
    /// confirmed by the broker at `sent_at`.
    pub fn sent(
        &mut self,
        name: &str,
        at: DateTime<Utc>,
        id: Uuid,
        run_now: bool,
        sent_at: DateTime<Utc>,
    ) {
        let defaults = &self.defaults;
        let Some(max_instances) = self
            .slot(name)
            .map(|s| s.def.firing().resolve(defaults).max_instances)
        else {
            return;
        };
        if let Some(slot) = self.slot_mut(name) {
            slot.sent(max_instances, at, id, run_now, sent_at);
            let name = slot.name.clone();
            self.dirty.insert(name);
        }
    }

    /// Sending failed (broker or database); retry later with backoff.
    pub fn send_failed(&mut self, name: &str, now: DateTime<Utc>) {
        if let Some(slot) = self.slot_mut(name) {
            slot.send_failed(now);
        }
    }

    /// Keeps only the recent runs of `name` that are still unfinished.
    pub fn set_unfinished(&mut self, name: &str, unfinished: &HashSet<Uuid>) {
        if let Some(slot) = self.slot_mut(name)
            && slot.set_unfinished(unfinished)
        {
            let name = slot.name.clone();
            self.dirty.insert(name);
        }
    }
}
