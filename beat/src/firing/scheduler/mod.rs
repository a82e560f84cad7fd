//! The scheduling core, free of I/O and of the wall clock: entries, their
//! run state and a heap of wake-up times. [`Scheduler::take_due`] says what
//! is due at an instant; the caller (see [`crate::firing::beat`]) persists, sends,
//! and reports back with [`Scheduler::sent`], [`Scheduler::send_failed`] or
//! [`Scheduler::hold`], then [`Scheduler::finish`].
//!
//! Entries live in one `Vec`, addressed by index (a name table maps names
//! to indices); each has at most one live heap item of 20 bytes (wake-up
//! time, index, epoch), so 100,000 entries cost one heap of 100,000 small
//! items, and finding the next wake-up is `O(1)`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::firing::EntryName;
use crate::firing::dispatch::{run_now_task_id, task_id};
use crate::firing::entry_def::{EntryDef, TaskNames};
use crate::firing::misfire::decide;
use crate::firing::plan::{Planned, PlannedFire};
use crate::firing::run_state::{RecentRun, RunState};
use crate::firing::slot::{LastRun, Slot};
use crate::schedule::entry::{Entry, Firing, Source};
use crate::trigger::{Calendars, Schedule, SharedCalendars, Trigger, TriggerError};

mod names;
mod report;

use names::NameTable;

/// A wake-up: when, the slot's index, and the slot's epoch when it was
/// pushed (an item whose epoch is no longer the slot's is stale).
type Item = Reverse<(DateTime<Utc>, u32, u32)>;

/// Entries, run state and wake-ups.
pub struct Scheduler {
    /// Name to index in `slots`.
    index: NameTable,
    /// Entries; `None` where one was removed (its index is in `free`).
    slots: Vec<Option<Slot>>,
    /// Indices of removed entries, with the epoch they ended at (a new
    /// entry there counts on from it, so items left behind never match).
    free: Vec<(u32, u32)>,
    heap: BinaryHeap<Item>,
    defaults: Firing,
    dirty: HashSet<EntryName>,
    /// What runs sent since their state was last written say of the last
    /// run: kept only until then (see [`crate::firing::slot`]).
    last_runs: HashMap<EntryName, LastRun>,
    /// Entries with runs being sent: no wake-up until [`Scheduler::finish`].
    in_flight: HashSet<EntryName>,
    /// Exclusion calendars entries may name (file and database together).
    calendars: Calendars,
    /// Task names, shared between entries.
    tasks: TaskNames,
    /// Compiled calendar expressions, shared between entries.
    shared: SharedCalendars,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("entries", &self.index.len())
            .field("heap", &self.heap.len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// An empty scheduler with these job defaults.
    pub fn new(defaults: Firing) -> Scheduler {
        Scheduler {
            index: NameTable::default(),
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            defaults,
            dirty: HashSet::new(),
            last_runs: HashMap::new(),
            in_flight: HashSet::new(),
            calendars: Calendars::new(),
            tasks: TaskNames::default(),
            shared: SharedCalendars::default(),
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
        let affected: Vec<(u32, Trigger)> = (0u32..)
            .zip(&self.slots)
            .filter_map(|(i, slot)| {
                let slot = slot.as_ref()?;
                let (spec, anchor) = slot.def.trigger_spec()?;
                if !spec.calendars().iter().any(|c| changed.contains(c)) {
                    return None;
                }
                let mut entry = Entry::new(&*slot.name, "", spec);
                entry.anchor = anchor;
                let trigger = self.compile(&entry).ok()?;
                Some((i, trigger))
            })
            .collect();
        let count = affected.len();
        for (i, trigger) in affected {
            let trigger = self.shared.share(trigger);
            if let Some(slot) = self.slot_at_mut(i) {
                slot.trigger = trigger;
            }
            self.reschedule_at(i);
        }
        count
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
        self.index.len()
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    fn slot_at(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)?.as_ref()
    }

    fn slot_at_mut(&mut self, i: u32) -> Option<&mut Slot> {
        self.slots.get_mut(i as usize)?.as_mut()
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slot_at(self.index.get(&self.slots, name)?)
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Slot> {
        let i = self.index.get(&self.slots, name)?;
        self.slot_at_mut(i)
    }

    /// An entry by name (its compact form).
    pub fn entry(&self, name: &str) -> Option<&EntryDef> {
        self.slot(name).map(|s| &s.def)
    }

    /// Whether `entry` is held exactly as given (nothing to update).
    pub fn is_current(&self, entry: &Entry) -> bool {
        self.slot(entry.name.as_str())
            .is_some_and(|s| s.def == EntryDef::new(entry))
    }

    /// An entry's run state as the next write would store it. Of the last
    /// run, only what is not written yet is held (`last_run_at`,
    /// `last_sent_at` and `last_task_id` are otherwise `None`, and the
    /// write keeps what the database holds: see [`run_state::save`]).
    ///
    /// [`run_state::save`]: crate::firing::run_state::save
    pub fn row(&self, name: &str) -> Option<RunState> {
        let slot = self.slot(name)?;
        Some(slot.row(self.last_runs.get(name).copied()))
    }

    /// An entry's recent runs not known to be finished (for `max_instances`).
    pub fn recent(&self, name: &str) -> &[RecentRun] {
        self.slot(name).map_or(&[], Slot::recent)
    }

    /// An entry's firing options, defaults applied.
    pub fn firing(&self, name: &str) -> Option<Firing> {
        self.slot(name).map(|s| s.def.firing_over(&self.defaults))
    }

    /// Names of entries from `source`.
    pub fn names(&self, source: Source) -> Vec<EntryName> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.def.source == source)
            .map(|s| s.name.clone())
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
        let trigger = self.shared.share(trigger);
        let def = EntryDef::shared(&entry, &mut self.tasks);
        let old = self
            .index
            .get(&self.slots, entry.name.as_str())
            .and_then(|i| Some((i, self.slots.get_mut(i as usize)?.take()?)));
        let (name, i, epoch, old) = match old {
            Some((i, old)) => (old.name.clone(), i, old.epoch, Some(old)),
            None => {
                let (i, epoch) = self.vacant();
                (EntryName::from(entry.name.as_str()), i, epoch, None)
            }
        };
        let new = old.is_none();
        drop(entry);
        let mut restart_from = None;
        let mut slot = match old {
            Some(old) => {
                let reset = old.def.created_at != def.created_at && def.source == Source::Database;
                if reset {
                    restart_from = Some(def.created_at.unwrap_or(now));
                    self.last_runs.remove(&name);
                } else if !old.def.same_schedule(&def) || (!old.def.enabled && def.enabled) {
                    restart_from = Some(now);
                }
                old.renewed(def, trigger, reset)
            }
            None => Slot::new(
                name.clone(),
                def,
                trigger,
                stored.unwrap_or_default(),
                epoch,
            ),
        };
        if slot.cursor_at.is_none() && restart_from.is_none() {
            match (slot.def.source, slot.def.created_at) {
                // A database entry counts from its creation: the same after any
                // restart, so there is nothing to write until it first fires.
                (Source::Database, Some(created)) => slot.cursor_at = Some(created),
                // A file entry counts from when a leader first saw it: recorded.
                _ => restart_from = Some(now),
            }
        }
        if let Some(from) = restart_from {
            slot.cursor_at = Some(from);
            self.dirty.insert(name.clone());
        }
        if let Some(place) = self.slots.get_mut(i as usize) {
            *place = Some(slot);
        }
        if new {
            self.index.insert(&self.slots, i);
        }
        self.reschedule_at(i);
        Ok(())
    }

    /// An index for a new entry and the epoch it starts at: a freed one
    /// (counting on from the epoch it ended at) or a new one at the end.
    fn vacant(&mut self) -> (u32, u32) {
        if let Some(free) = self.free.pop() {
            return free;
        }
        self.slots.push(None);
        (u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX), 0)
    }

    /// Removes an entry (its pending work is dropped).
    pub fn remove(&mut self, name: &str) -> bool {
        self.dirty.remove(name);
        self.last_runs.remove(name);
        let Some(i) = self.index.remove(&self.slots, name) else {
            return false;
        };
        if let Some(old) = self.slots.get_mut(i as usize).and_then(Option::take) {
            self.free.push((i, old.epoch.wrapping_add(1)));
        }
        true
    }

    /// Records a run-now request for `name`; `false` if there is no such entry.
    pub fn request_run_now(&mut self, name: &str, at: DateTime<Utc>) -> bool {
        let Some(i) = self.index.get(&self.slots, name) else {
            return false;
        };
        let Some(slot) = self.slot_at_mut(i) else {
            return false;
        };
        if slot.run_now_at() != Some(at) {
            slot.request_run_now(at);
            self.reschedule_at(i);
        }
        true
    }

    /// The earliest instant something is due, if anything is scheduled.
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, i, epoch))) = self.heap.peek() {
            if self.slot_at(*i).is_some_and(|s| s.epoch == *epoch) {
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
        let mut out: Vec<(DateTime<Utc>, Planned)> = Vec::new();
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, i, epoch))) = self.heap.pop() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
                continue;
            };
            if slot.epoch != epoch {
                continue;
            }
            slot.epoch = slot.epoch.wrapping_add(1);
            let name = slot.name.clone();
            let mut planned = Planned {
                name: name.clone(),
                fire: None,
                run_now: slot.run_now_at().map(|at| (at, run_now_task_id(&name, at))),
                missed: None,
                coalesced: None,
            };
            if let Some(at) = slot.sending_at() {
                planned.fire = Some(PlannedFire {
                    at,
                    due: at,
                    task_id: task_id(&name, at),
                    resend: true,
                });
            } else if let Some(first) = slot.next.filter(|_| slot.def.enabled) {
                let due = first + slot.jitter(|| task_id(&name, first));
                if due <= until {
                    let firing = slot.def.firing_over(&self.defaults);
                    let decision = decide(&slot.trigger, &firing, first, now.max(due));
                    slot.cursor_at = Some(decision.cursor);
                    planned.missed = decision.missed;
                    planned.coalesced = decision.coalesced;
                    if let Some(at) = decision.fire {
                        slot.set_sending_at(Some(at));
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
            self.in_flight.insert(name);
            out.push((at, planned));
        }
        // In wake-up order, then by name (as a heap ordered by name did).
        out.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        out.into_iter().map(|(_, p)| p).collect()
    }

    /// Recomputes `name`'s next fire time and wake-up. Returns `true` if the
    /// entry has just run out of fire times.
    pub fn reschedule(&mut self, name: &str) -> bool {
        match self.index.get(&self.slots, name) {
            Some(i) => self.reschedule_at(i),
            None => false,
        }
    }

    /// [`Scheduler::reschedule`] for the entry at index `i`.
    fn reschedule_at(&mut self, i: u32) -> bool {
        let Some(slot) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
            return false;
        };
        let had_next = slot.had_next;
        slot.next = if slot.def.enabled {
            slot.cursor_at.and_then(|c| slot.trigger.next_after(c))
        } else {
            None
        };
        // The next fire time is written with the entry's next state change.
        slot.had_next = slot.next.is_some();
        let wake = if slot.sending_at().is_some() || slot.run_now_at().is_some() {
            Some(slot.retry_at().unwrap_or(DateTime::<Utc>::MIN_UTC))
        } else {
            slot.next
                .map(|t| t + slot.jitter(|| task_id(&slot.name, t)))
        };
        slot.epoch = slot.epoch.wrapping_add(1);
        let epoch = slot.epoch;
        let done = had_next && slot.is_done();
        if self.in_flight.contains(&slot.name) {
            // Its runs are being sent; `finish` schedules it again.
            return false;
        }
        if let Some(at) = wake {
            self.heap.push(Reverse((at, i, epoch)));
        }
        if self.heap.len() > 2 * self.index.len() + 1024 {
            self.compact();
        }
        done
    }

    fn compact(&mut self) {
        let slots = &self.slots;
        let items: Vec<Item> = std::mem::take(&mut self.heap)
            .into_iter()
            .filter(|Reverse((_, i, e))| {
                slots
                    .get(*i as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.epoch == *e)
            })
            .collect();
        self.heap = BinaryHeap::from(items);
    }
}
