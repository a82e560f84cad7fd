//! The name table: entry names to indices in the scheduler's slots. The
//! names themselves stay in the slots, so that 100,000 entries cost
//! 100,000 four-byte indices here, not a second pointer to each name.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::firing::slot::Slot;

#[derive(Default)]
pub(super) struct NameTable {
    table: HashTable<u32>,
    hasher: RandomState,
}

/// The name of the entry at `i` ("" for an empty place, which the table
/// never holds).
fn name_at(slots: &[Option<Slot>], i: u32) -> &str {
    slots
        .get(i as usize)
        .and_then(Option::as_ref)
        .map_or("", |s| &s.name)
}

impl NameTable {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The index of the entry named `name`.
    pub(super) fn get(&self, slots: &[Option<Slot>], name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.table
            .find(hash, |&i| name_at(slots, i) == name)
            .copied()
    }

    /// Adds index `i`, whose slot holds an entry not in the table yet.
    pub(super) fn insert(&mut self, slots: &[Option<Slot>], i: u32) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(name_at(slots, i));
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(name_at(slots, j)));
    }

    /// Takes out the entry named `name` (its slot still holding it) and
    /// returns its index.
    pub(super) fn remove(&mut self, slots: &[Option<Slot>], name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let found = self
            .table
            .find_entry(hash, |&i| name_at(slots, i) == name)
            .ok()?;
        Some(found.remove().0)
    }
}
