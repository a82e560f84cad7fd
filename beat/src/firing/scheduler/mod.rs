//! The scheduling core, free of I/O and of the wall clock: entries, their
//! run state and a heap of wake-up times. [`Scheduler::take_due`] says what
//! is due at an instant; the caller (see [`crate::firing::beat`]) persists, sends,
//! and reports back with [`Scheduler::sent`], [`Scheduler::send_failed`] or
//! [`Scheduler::hold`], then [`Scheduler::finish`].
//!
//! Each entry has at most one live heap item, so 100,000 entries cost one
//! heap of 100,000 small items, and finding the next wake-up is `O(1)`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::firing::dispatch::{run_now_task_id, task_id};
use crate::firing::entry_def::EntryDef;
use crate::firing::misfire::decide;
use crate::firing::plan::{Planned, PlannedFire};
use crate::firing::run_state::RunState;
use crate::firing::slot::Slot;
use crate::schedule::entry::{Entry, Firing, Source};
use crate::trigger::{Calendars, Schedule, Trigger, TriggerError};

mod report;

type Item = Reverse<(DateTime<Utc>, Arc<str>, u64)>;

/// Entries, run state and wake-ups.
pub struct Scheduler {
    /// Boxed: a table of 100,000 slots grows by moving pointers, not slots.
    slots: HashMap<Arc<str>, Box<Slot>>,
    heap: BinaryHeap<Item>,
    defaults: Firing,
    dirty: HashSet<Arc<str>>,
    /// Entries with runs being sent: no wake-up until [`Scheduler::finish`].
    in_flight: HashSet<Arc<str>>,
    /// Source of heap item epochs, unique for the scheduler's lifetime, so
    /// an item left behind by a replaced or removed entry never matches.
    epochs: u64,
    /// Exclusion calendars entries may name (file and database together).
    calendars: Calendars,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("entries", &self.slots.len())
            .field("heap", &self.heap.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// An empty scheduler with these job defaults.
    pub fn new(defaults: Firing) -> Scheduler {
        Scheduler {
            slots: HashMap::new(),
            heap: BinaryHeap::new(),
            defaults,
            dirty: HashSet::new(),
            in_flight: HashSet::new(),
            epochs: 0,
            calendars: Calendars::new(),
        }
    }

    /// The exclusion calendars in force.
    pub fn calendars(&self) -> &Calendars {
        &self.calendars
    }

    /// Replaces the exclusion calendars; every entry naming one that changed
    /// (added, removed or with other dates) gets its trigger recompiled and
    /// its next fire time recomputed. Returns how many entries that was.
    pub fn set_calendars(&mut self, calendars: Calendars) -> usize {
        let changed = self.calendars.changed_names(&calendars);
        self.calendars = calendars;
        if changed.is_empty() {
            return 0;
        }
        let affected: Vec<(Arc<str>, Trigger)> = self
            .slots
            .iter()
            .filter_map(|(name, slot)| {
                let (spec, anchor) = slot.def.trigger_spec()?;
                if !spec.calendars().iter().any(|c| changed.contains(c)) {
                    return None;
                }
                let mut entry = Entry::new(&**name, "", spec);
                entry.anchor = anchor;
                let trigger = self.compile(&entry).ok()?;
                Some((name.clone(), trigger))
            })
            .collect();
        for (name, trigger) in &affected {
            if let Some(slot) = self.slots.get_mut(name) {
                slot.trigger = trigger.clone();
            }
            self.reschedule(name);
        }
        affected.len()
    }

    /// Compiles an entry's trigger with the calendars in force; a calendar
    /// that is not defined is logged and excludes nothing.
    fn compile(&self, entry: &Entry) -> Result<Trigger, TriggerError> {
        let (trigger, missing) = entry.compile_lenient(&self.calendars)?;
        if !missing.is_empty() {
            tracing::warn!(
                entry = %entry.name,
                calendars = %missing.join(","),
                "unknown exclusion calendar, treated as empty: the entry fires on every date"
            );
        }
        Ok(trigger)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// An entry by name (its compact form).
    pub fn entry(&self, name: &str) -> Option<&EntryDef> {
        self.slots.get(name).map(|s| &s.def)
    }

    /// Whether `entry` is held exactly as given (nothing to update).
    pub fn is_current(&self, entry: &Entry) -> bool {
        self.slots
            .get(entry.name.as_str())
            .is_some_and(|s| s.def == EntryDef::new(entry))
    }

    /// An entry's run state.
    pub fn state(&self, name: &str) -> Option<&RunState> {
        self.slots.get(name).map(|s| &s.state)
    }

    /// An entry's firing options, defaults applied.
    pub fn firing(&self, name: &str) -> Option<Firing> {
        self.slots.get(name).map(|s| s.firing)
    }

    /// Names of entries from `source`.
    pub fn names(&self, source: Source) -> Vec<Arc<str>> {
        self.slots
            .iter()
            .filter(|(_, s)| s.def.source == source)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Adds or replaces an entry. `stored` is its persisted run state, if
    /// any (used only for an entry new to this scheduler). A changed
    /// trigger, a resumed entry or a re-created one counts from `now`.
    pub fn upsert(
        &mut self,
        entry: Entry,
        stored: Option<RunState>,
        now: DateTime<Utc>,
    ) -> Result<(), TriggerError> {
        let trigger = self.compile(&entry)?;
        let firing = entry.firing.resolve(&self.defaults);
        let name: Arc<str> = Arc::from(entry.name.as_str());
        let def = EntryDef::new(&entry);
        drop(entry);
        let mut restart_from = None;
        let state = match self.slots.remove(&name) {
            Some(old) => {
                let mut state = old.state;
                if old.def.created_at != def.created_at && def.source == Source::Database {
                    state = RunState::default();
                    restart_from = Some(def.created_at.unwrap_or(now));
                } else if !old.def.same_schedule(&def) || (!old.def.enabled && def.enabled) {
                    restart_from = Some(now);
                }
                state
            }
            None => stored.unwrap_or_default(),
        };
        let mut slot = Slot {
            def,
            trigger,
            firing,
            state,
            next: None,
            epoch: 0,
            failures: 0,
            retry_at: None,
        };
        if slot.state.cursor_at.is_none() && restart_from.is_none() {
            match (slot.def.source, slot.def.created_at) {
                // A database entry counts from its creation: the same after any
                // restart, so there is nothing to write until it first fires.
                (Source::Database, Some(created)) => slot.state.cursor_at = Some(created),
                // A file entry counts from when a leader first saw it: recorded.
                _ => restart_from = Some(now),
            }
        }
        if let Some(from) = restart_from {
            slot.state.cursor_at = Some(from);
            self.dirty.insert(name.clone());
        }
        self.slots.insert(name.clone(), Box::new(slot));
        self.reschedule(&name);
        Ok(())
    }

    /// Removes an entry (its pending work is dropped).
    pub fn remove(&mut self, name: &str) -> bool {
        self.dirty.remove(name);
        self.slots.remove(name).is_some()
    }

    /// Records a run-now request for `name`; `false` if there is no such entry.
    pub fn request_run_now(&mut self, name: &str, at: DateTime<Utc>) -> bool {
        let Some(slot) = self.slots.get_mut(name) else {
            return false;
        };
        if slot.state.run_now_at != Some(at) {
            slot.state.run_now_at = Some(at);
            slot.retry_at = None;
            self.reschedule(name);
        }
        true
    }

    /// The earliest instant something is due, if anything is scheduled.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, name, epoch))) = self.heap.peek() {
            if self.slots.get(name).is_some_and(|s| s.epoch == *epoch) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Everything due at `now` or within `ahead` of it (prepared early so
    /// that recording it is done by the time it is due; the caller sends
    /// each run at its `due` time). Run state is updated in memory (cursor
    /// advanced; `sending_at` set for each run to send); the caller persists
    /// it (see [`Scheduler::take_dirty`]) before sending, then reports back
    /// and calls [`Scheduler::finish`] for every planned name.
    pub fn take_due(&mut self, now: DateTime<Utc>, ahead: TimeDelta) -> Vec<Planned> {
        let until = now + ahead;
        let mut out = Vec::new();
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((_, name, epoch))) = self.heap.pop() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            if slot.epoch != epoch {
                continue;
            }
            self.epochs += 1;
            slot.epoch = self.epochs;
            let mut planned = Planned {
                name: name.clone(),
                fire: None,
                run_now: slot
                    .state
                    .run_now_at
                    .map(|at| (at, run_now_task_id(&name, at))),
                missed: None,
                coalesced: None,
            };
            if let Some(at) = slot.state.sending_at {
                planned.fire = Some(PlannedFire {
                    at,
                    due: at,
                    task_id: task_id(&name, at),
                    resend: true,
                });
            } else if let Some(first) = slot.next.filter(|_| slot.def.enabled) {
                let due = first + slot.jitter(|| task_id(&name, first));
                if due <= until {
                    let decision = decide(&slot.trigger, &slot.firing, first, now.max(due));
                    slot.state.cursor_at = Some(decision.cursor);
                    planned.missed = decision.missed;
                    planned.coalesced = decision.coalesced;
                    if let Some(at) = decision.fire {
                        slot.state.sending_at = Some(at);
                        let id = task_id(&name, at);
                        let due = at + slot.jitter(|| id);
                        planned.fire = Some(PlannedFire {
                            at,
                            due,
                            task_id: id,
                            resend: false,
                        });
                    }
                    self.dirty.insert(name.clone());
                }
            }
            self.in_flight.insert(name.clone());
            out.push(planned);
        }
        out
    }

    /// Recomputes `name`'s next fire time and wake-up. Returns `true` if the
    /// entry has just run out of fire times.
    pub fn reschedule(&mut self, name: &str) -> bool {
        let Some(key) = self.slots.get_key_value(name).map(|(k, _)| k.clone()) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(&key) else {
            return false;
        };
        let had_next = slot.state.next_run_at.is_some();
        slot.next = if slot.def.enabled {
            slot.state
                .cursor_at
                .and_then(|c| slot.trigger.next_after(c))
        } else {
            None
        };
        // Informational: written with the entry's next state change.
        slot.state.next_run_at = slot.next;
        let wake = if slot.state.sending_at.is_some() || slot.state.run_now_at.is_some() {
            Some(slot.retry_at.unwrap_or(DateTime::<Utc>::MIN_UTC))
        } else {
            slot.next.map(|t| t + slot.jitter(|| task_id(&key, t)))
        };
        self.epochs += 1;
        slot.epoch = self.epochs;
        if self.in_flight.contains(&key) {
            // Its runs are being sent; `finish` schedules it again.
            return false;
        }
        if let Some(at) = wake {
            self.heap.push(Reverse((at, key.clone(), slot.epoch)));
        }
        if self.heap.len() > 2 * self.slots.len() + 1024 {
            self.compact();
        }
        had_next && self.slots.get(&key).is_some_and(|s| s.is_done())
    }

    fn compact(&mut self) {
        let slots = &self.slots;
        let items: Vec<Item> = std::mem::take(&mut self.heap)
            .into_iter()
            .filter(|Reverse((_, n, g))| slots.get(n).is_some_and(|s| s.epoch == *g))
            .collect();
        self.heap = BinaryHeap::from(items);
    }
}
