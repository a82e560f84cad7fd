//! One entry as the [`Scheduler`](crate::firing::scheduler::Scheduler)
//! holds it: its compact definition, compiled trigger and the part of its
//! run state that decides what it does next, what it waits for (its next
//! fire time, a retry after a failed send), and what the outcome of a run
//! does to it.
//!
//! Of the run state ([`RunState`]), a slot keeps the cursor and the count
//! of runs; what an entry holds only while a run is being sent, requested
//! or retried, or while `max_instances` counts its runs, is boxed apart
//! ([`Busy`]). The fields that only describe the last run (`last_run_at`,
//! `last_sent_at`, `last_task_id`) are kept by the scheduler until the run's
//! state is written, and the next fire time is the slot's own.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::firing::EntryName;
use crate::firing::entry_def::EntryDef;
use crate::firing::plan::{backoff, jitter_for};
use crate::firing::run_state::{RECENT_MAX, RecentRun, RunState};
use crate::trigger::Trigger;

pub(crate) struct Slot {
    /// The entry's name (shared with the scheduler's name table).
    pub(crate) name: EntryName,
    pub(crate) def: EntryDef,
    pub(crate) trigger: Trigger,
    pub(crate) next: Option<DateTime<Utc>>,
    /// Changed at every reschedule: a heap item with another epoch is stale.
    pub(crate) epoch: u32,
    /// Whether it had a next fire time at its last reschedule (or in its
    /// stored state): running out of fire times is reported once.
    pub(crate) had_next: bool,
    /// The last fire time decided ([`RunState::cursor_at`]).
    pub(crate) cursor_at: Option<DateTime<Utc>>,
    /// Runs sent so far.
    pub(crate) total_runs: i64,
    busy: Option<Box<Busy>>,
}

/// What an entry holds only now and then, boxed when any of it is set.
#[derive(Debug, Default, PartialEq)]
struct Busy {
    /// [`RunState::sending_at`].
    sending_at: Option<DateTime<Utc>>,
    /// [`RunState::run_now_at`].
    run_now_at: Option<DateTime<Utc>>,
    /// [`RunState::recent`].
    recent: Vec<RecentRun>,
    /// Sends failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
}

/// What a sent run leaves to write: the fields of [`RunState`] that only
/// describe the last run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LastRun {
    /// The scheduled time of the last scheduled run (a run-now leaves the
    /// one before).
    pub(crate) run_at: Option<DateTime<Utc>>,
    pub(crate) sent_at: DateTime<Utc>,
    pub(crate) task_id: Uuid,
}

impl LastRun {
    /// `self`, sent after `earlier`.
    pub(crate) fn after(self, earlier: LastRun) -> LastRun {
        LastRun {
            run_at: self.run_at.or(earlier.run_at),
            ..self
        }
    }

    /// What `state` says of its last run, if it says anything.
    pub(crate) fn of(state: &RunState) -> Option<LastRun> {
        Some(LastRun {
            run_at: state.last_run_at,
            sent_at: state.last_sent_at?,
            task_id: state.last_task_id?,
        })
    }
}

impl Slot {
    /// A slot with run state `state` (what it keeps of it).
    pub(crate) fn new(
        name: EntryName,
        def: EntryDef,
        trigger: Trigger,
        state: RunState,
        epoch: u32,
    ) -> Slot {
        let busy = Busy {
            sending_at: state.sending_at,
            run_now_at: state.run_now_at,
            recent: state.recent,
            ..Busy::default()
        };
        Slot {
            name,
            def,
            trigger,
            next: None,
            epoch,
            had_next: state.next_run_at.is_some(),
            cursor_at: state.cursor_at,
            total_runs: state.total_runs,
            busy: (busy != Busy::default()).then(|| Box::new(busy)),
        }
    }

    /// The same entry with a new definition and trigger: its run state
    /// kept (that of a fresh entry if `reset`), without a failed send's
    /// count and retry time, and no next fire time until rescheduled.
    pub(crate) fn renewed(self, def: EntryDef, trigger: Trigger, reset: bool) -> Slot {
        if reset {
            return Slot::new(self.name, def, trigger, RunState::default(), self.epoch);
        }
        let mut slot = Slot {
            def,
            trigger,
            next: None,
            ..self
        };
        slot.busy_mut(|b| {
            b.failures = 0;
            b.retry_at = None;
        });
        slot
    }

    /// Its run state to write, with what `last` says of its last run.
    pub(crate) fn row(&self, last: Option<LastRun>) -> RunState {
        RunState {
            cursor_at: self.cursor_at,
            sending_at: self.sending_at(),
            last_run_at: last.and_then(|l| l.run_at),
            last_sent_at: last.map(|l| l.sent_at),
            last_task_id: last.map(|l| l.task_id),
            next_run_at: self.next,
            total_runs: self.total_runs,
            recent: self.recent().to_vec(),
            run_now_at: self.run_now_at(),
        }
    }

    /// A fire time being sent.
    pub(crate) fn sending_at(&self) -> Option<DateTime<Utc>> {
        self.busy.as_ref()?.sending_at
    }

    /// A pending run-now request.
    pub(crate) fn run_now_at(&self) -> Option<DateTime<Utc>> {
        self.busy.as_ref()?.run_now_at
    }

    /// Recent runs not known to be finished.
    pub(crate) fn recent(&self) -> &[RecentRun] {
        self.busy.as_ref().map_or(&[], |b| b.recent.as_slice())
    }

    /// When a failed send is tried again.
    pub(crate) fn retry_at(&self) -> Option<DateTime<Utc>> {
        self.busy.as_ref()?.retry_at
    }

    /// Changes what is boxed, boxing it again only if any of it is set.
    fn busy_mut(&mut self, change: impl FnOnce(&mut Busy)) {
        let mut busy = self.busy.take().map(|b| *b).unwrap_or_default();
        change(&mut busy);
        self.busy = (busy != Busy::default()).then(|| Box::new(busy));
    }

    pub(crate) fn set_sending_at(&mut self, at: Option<DateTime<Utc>>) {
        if self.sending_at() != at {
            self.busy_mut(|b| b.sending_at = at);
        }
    }

    /// Records a run-now request; a retry waiting for a failed send goes
    /// at once.
    pub(crate) fn request_run_now(&mut self, at: DateTime<Utc>) {
        self.busy_mut(|b| {
            b.run_now_at = Some(at);
            b.retry_at = None;
        });
    }

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
            && self.sending_at().is_none()
            && self.run_now_at().is_none()
    }

    /// The planned run was not sent: `max_instances` runs are unfinished.
    pub(crate) fn hold(&mut self) {
        self.set_sending_at(None);
    }

    /// A run (scheduled at `at`, or a run-now request if `run_now`) was
    /// confirmed by the broker at `sent_at`; with a `max_instances` limit,
    /// it is remembered as running. Returns what it leaves to write of the
    /// last run.
    pub(crate) fn sent(
        &mut self,
        max_instances: u32,
        at: DateTime<Utc>,
        id: Uuid,
        run_now: bool,
        sent_at: DateTime<Utc>,
    ) -> LastRun {
        self.busy_mut(|b| {
            if run_now {
                if b.run_now_at == Some(at) {
                    b.run_now_at = None;
                }
            } else if b.sending_at == Some(at) {
                b.sending_at = None;
            }
            if max_instances > 0 {
                b.recent.push(RecentRun { at, id });
                if b.recent.len() > RECENT_MAX {
                    b.recent.remove(0);
                }
            }
            b.failures = 0;
            b.retry_at = None;
        });
        self.total_runs += 1;
        LastRun {
            run_at: (!run_now).then_some(at),
            sent_at,
            task_id: id,
        }
    }

    /// Sending failed (broker or database): retried later with backoff.
    pub(crate) fn send_failed(&mut self, now: DateTime<Utc>) {
        self.busy_mut(|b| {
            b.failures = b.failures.saturating_add(1);
            b.retry_at = Some(now + backoff(b.failures));
        });
    }

    /// Keeps only the recent runs that are still unfinished; `true` if any
    /// was dropped.
    pub(crate) fn set_unfinished(&mut self, unfinished: &HashSet<Uuid>) -> bool {
        let before = self.recent().len();
        if before == 0 {
            return false;
        }
        self.busy_mut(|b| b.recent.retain(|r| unfinished.contains(&r.id)));
        self.recent().len() != before
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
        assert!(size_of::<Slot>() <= 168, "{}", size_of::<Slot>());
        assert!(size_of::<EntryDef>() <= 48, "{}", size_of::<EntryDef>());
        assert!(size_of::<Trigger>() <= 48, "{}", size_of::<Trigger>());
    }
}
