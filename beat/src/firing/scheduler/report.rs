//! What the caller reports back after [`Scheduler::take_due`]: runs sent,
//! failed or held, settled ([`Scheduler::finish`]), and the run states to
//! persist.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Scheduler;
use crate::firing::EntryName;
use crate::firing::run_state::RunState;
use crate::firing::slot::LastRun;

impl Scheduler {
    /// The runs planned for `name` are settled (sent, failed or held):
    /// recomputes its wake-up. Returns `true` if it has just run out of fire times.
    pub fn finish(&mut self, name: &str) -> bool {
        self.in_flight.remove(name);
        self.reschedule(name)
    }

    /// Run states changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> Vec<(EntryName, RunState)> {
        // Taken, not drained: the set held every name after the load and
        // would keep room for them all.
        let names: Vec<EntryName> = std::mem::take(&mut self.dirty).into_iter().collect();
        let rows = names
            .into_iter()
            .filter_map(|n| {
                let last = self.last_runs.remove(&n);
                self.slot(&n).map(|s| (n.clone(), s.row(last)))
            })
            .collect();
        if self.last_runs.is_empty() {
            // Sized for the largest crowd of runs so far otherwise.
            self.last_runs = HashMap::new();
        }
        rows
    }

    /// Marks states taken by [`Scheduler::take_dirty`] as needing a write
    /// again (after a failed write).
    pub fn mark_dirty(&mut self, rows: Vec<(EntryName, RunState)>) {
        for (name, row) in rows {
            if let Some(taken) = LastRun::of(&row)
                && self.slot(&name).is_some()
            {
                let last = match self.last_runs.remove(&name) {
                    Some(newer) => newer.after(taken),
                    None => taken,
                };
                self.last_runs.insert(name.clone(), last);
            }
            self.dirty.insert(name);
        }
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
            let last = slot.sent(max_instances, at, id, run_now, sent_at);
            let name = slot.name.clone();
            let last = match self.last_runs.remove(&name) {
                Some(earlier) => last.after(earlier),
                None => last,
            };
            self.last_runs.insert(name.clone(), last);
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

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::json;

    use super::*;
    use crate::schedule::entry::{Entry, Firing};
    use crate::trigger::TriggerSpec;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("an instant")
    }

    /// What a sent run says of itself goes out with the next write only,
    /// and comes back if that write fails; a run-now keeps the scheduled
    /// run's time.
    #[test]
    fn the_last_run_is_written_once_and_kept_until_written() {
        let mut s = Scheduler::new(Firing::default());
        let every = TriggerSpec::from_json(&json!({"type": "interval", "every": "10s"}))
            .expect("a trigger");
        let now = t("2024-01-01T00:00:00Z");
        s.upsert(Entry::new("e", "tasks.t", every), None, now)
            .expect("an entry");
        let planned = s.take_due(t("2024-01-01T00:00:10Z"), TimeDelta::zero());
        let fire = planned[0].fire.expect("a run");
        let (id, sent_at) = (fire.task_id, t("2024-01-01T00:00:10.003Z"));
        s.sent("e", fire.at, id, false, sent_at);
        s.finish("e");
        let rows = s.take_dirty();
        assert_eq!(rows[0].1.last_task_id, Some(id));
        assert_eq!(rows[0].1.last_run_at, Some(fire.at));
        assert_eq!(rows[0].1.total_runs, 1);
        assert_eq!(rows[0].1.next_run_at, Some(t("2024-01-01T00:00:20Z")));
        // The write failed: a run-now is sent meanwhile.
        s.mark_dirty(rows);
        let other = Uuid::new_v4();
        s.sent("e", now, other, true, t("2024-01-01T00:00:11Z"));
        let rows = s.take_dirty();
        let row = &rows[0].1;
        assert_eq!(
            (
                row.last_run_at,
                row.last_sent_at,
                row.last_task_id,
                row.total_runs
            ),
            (
                Some(fire.at),
                Some(t("2024-01-01T00:00:11Z")),
                Some(other),
                2
            )
        );
        // Written: nothing of the last run is held any more.
        let row = s.row("e").expect("a state");
        assert_eq!((row.last_task_id, row.total_runs), (None, 2));
        // Removed with a run not written yet, and added again: nothing of
        // the old entry's last run is written for the new one.
        s.sent("e", now, Uuid::new_v4(), true, t("2024-01-01T00:00:13Z"));
        assert!(s.remove("e"));
        let every = TriggerSpec::from_json(&json!({"type": "interval", "every": "10s"}))
            .expect("a trigger");
        s.upsert(Entry::new("e", "tasks.t", every), None, now)
            .expect("an entry");
        let rows = s.take_dirty();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].1.last_task_id, rows[0].1.total_runs), (None, 0));
    }
}
