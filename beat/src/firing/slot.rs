//! One entry as the [`Scheduler`](crate::firing::scheduler::Scheduler)
//! holds it: its compact definition, compiled trigger and run state, what
//! it waits for (its next fire time, a retry after a failed send), and what
//! the outcome of a run does to it.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::firing::entry_def::EntryDef;
use crate::firing::plan::{backoff, jitter_for};
use crate::firing::run_state::{RECENT_MAX, RecentRun, RunState};
use crate::trigger::Trigger;

pub(crate) struct Slot {
    /// The entry's name (shared with the scheduler's name table).
    pub(crate) name: Arc<str>,
    pub(crate) def: EntryDef,
    pub(crate) trigger: Trigger,
    pub(crate) state: RunState,
    pub(crate) next: Option<DateTime<Utc>>,
    /// Changed at every reschedule: a heap item with another epoch is stale.
    pub(crate) epoch: u32,
    pub(crate) failures: u32,
    pub(crate) retry_at: Option<DateTime<Utc>>,
}

impl Slot {
    /// How long after its scheduled time the run with task id `id` is
    /// sent: its fixed jitter, zero if the trigger has none (`id` is then
    /// not computed).
    pub(crate) fn jitter(&self, id: impl FnOnce() -> Uuid) -> TimeDelta {
        self.trigger
            .jitter()
            .map_or(TimeDelta::zero(), |j| jitter_for(id(), j))
    }

    /// Whether it is enabled and has run out of fire times, with nothing
    /// left to send.
    pub(crate) fn is_done(&self) -> bool {
        self.def.enabled
            && self.next.is_none()
            && self.state.sending_at.is_none()
            && self.state.run_now_at.is_none()
    }

    /// The planned run was not sent: `max_instances` runs are unfinished.
    pub(crate) fn hold(&mut self) {
        self.state.sending_at = None;
    }

    /// A run (scheduled at `at`, or a run-now request if `run_now`) was
    /// confirmed by the broker at `sent_at`; with a `max_instances` limit,
    /// it is remembered as running.
    pub(crate) fn sent(
        &mut self,
        max_instances: u32,
        at: DateTime<Utc>,
        id: Uuid,
        run_now: bool,
        sent_at: DateTime<Utc>,
    ) {
        let s = &mut self.state;
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
        if max_instances > 0 {
            s.recent.push(RecentRun { at, id });
            if s.recent.len() > RECENT_MAX {
                s.recent.remove(0);
            }
        }
        self.failures = 0;
        self.retry_at = None;
    }

    /// Sending failed (broker or database): retried later with backoff.
    pub(crate) fn send_failed(&mut self, now: DateTime<Utc>) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff(self.failures));
    }

    /// Keeps only the recent runs that are still unfinished; `true` if any
    /// was dropped.
    pub(crate) fn set_unfinished(&mut self, unfinished: &HashSet<Uuid>) -> bool {
        let before = self.state.recent.len();
        self.state.recent.retain(|r| unfinished.contains(&r.id));
        self.state.recent.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 entries hold 100,000 slots: a field added here costs
    /// memory in every one (the sizes on x86-64 today, in bytes).
    #[test]
    fn a_slot_stays_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<Option<Slot>>(), size_of::<Slot>());
        assert!(size_of::<Slot>() <= 304, "{}", size_of::<Slot>());
        assert!(size_of::<EntryDef>() <= 48, "{}", size_of::<EntryDef>());
        assert!(size_of::<Trigger>() <= 80, "{}", size_of::<Trigger>());
    }
}
