//! Reporting back to the scheduler what became of planned runs: sent,
//! failed (retried with backoff), held by `max_instances`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::firing::plan::backoff;
use crate::firing::run_state::{RECENT_MAX, RecentRun};
use crate::firing::scheduler::Scheduler;

impl Scheduler {
    /// A planned run was not sent because `max_instances` runs are unfinished.
    pub fn hold(&mut self, name: &str) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.state.sending_at = None;
            self.dirty.insert(Arc::from(name));
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
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let s = &mut slot.state;
        if run_now {
            if s.run_now_at == Some(at) {
                s.run_now_at = None;
            }
        } else {
            if s.sending_at == Some(at) {
                s.sending_at = None;
            }
            s.last_run_at = Some(at);
        }
        s.last_sent_at = Some(sent_at);
        s.last_task_id = Some(id);
        s.total_runs += 1;
        if slot.firing.max_instances > 0 {
            s.recent.push(RecentRun { at, id });
            if s.recent.len() > RECENT_MAX {
                s.recent.remove(0);
            }
        }
        slot.failures = 0;
        slot.retry_at = None;
        self.dirty.insert(Arc::from(name));
    }

    /// Sending failed (broker or database); retry later with backoff.
    pub fn send_failed(&mut self, name: &str, now: DateTime<Utc>) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.failures = slot.failures.saturating_add(1);
            slot.retry_at = Some(now + backoff(slot.failures));
        }
    }

    /// Keeps only the recent runs of `name` that are still unfinished.
    pub fn set_unfinished(&mut self, name: &str, unfinished: &HashSet<Uuid>) {
        if let Some(slot) = self.slots.get_mut(name) {
            let before = slot.state.recent.len();
            slot.state.recent.retain(|r| unfinished.contains(&r.id));
            if slot.state.recent.len() != before {
                self.dirty.insert(Arc::from(name));
            }
        }
    }
}
