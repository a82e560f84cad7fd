//! Building the tree from a workflow's rows and chords (no I/O).
//!
//! Every task hangs under what it followed: a chord's callback follows its
//! header (not the member that happened to complete it, its `parent_id`);
//! a group's member sits in its group; any other task follows its
//! `parent_id`. A group follows the lowest step that every member descends
//! from (for a group of chains, the member is the chain's first task, whose
//! last step carries the group id). The stored ids are not trusted to form
//! a tree: a cycle or a missing parent never loops or loses a task (walks
//! are bounded; anything unreachable is shown at the top).

use super::{ChordInfo, GroupCounts, GroupNode, Node, Sequence, TaskNode, WorkflowTree, is_failed};
use celeriac_common::TaskState;
use celeriac_common::backend::TaskRecord;
use celeriac_common::backend::chord::{ChordRecord, ChordState};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Longest walk up the parents (a cycle in bad data ends there).
const WALK_MAX: usize = 10_000;
/// Deepest nesting of groups in branches rendered (deeper is cut).
const NEST_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Task(String),
    Group(String),
}

struct Graph<'a> {
    tasks: HashMap<String, TaskRecord>,
    chords: HashMap<&'a str, &'a ChordRecord>,
    /// Callback id → its chord's group id.
    callback_of: HashMap<String, String>,
    /// Group id → its members' ids.
    members: BTreeMap<String, Vec<String>>,
    anchors: HashMap<String, Option<Key>>,
    in_progress: HashSet<String>,
}

/// The tree of `rows` (one workflow's) and their `chords`; `asked` is the
/// id the user gave.
pub(super) fn build(
    asked: &str,
    root: &str,
    rows: Vec<TaskRecord>,
    chords: &[ChordRecord],
) -> WorkflowTree {
    let mut g = Graph::new(rows, chords);
    let place = g.placements();
    let mut followers: BTreeMap<Option<Key>, Vec<Key>> = BTreeMap::new();
    let mut entries: BTreeMap<String, Vec<(u32, Key)>> = BTreeMap::new();
    for (key, slot) in place {
        match slot {
            Slot::Member(group, index) => entries.entry(group).or_default().push((index, key)),
            Slot::After(parent) => followers.entry(parent).or_default().push(key),
        }
    }
    for list in entries.values_mut() {
        list.sort();
    }
    let mut out = Out {
        g: &g,
        followers,
        entries,
        done: HashSet::new(),
    };
    let mut steps = Vec::new();
    for key in out.followers.get(&None).cloned().unwrap_or_default() {
        steps.push(out.sequence(key, 0));
    }
    // Whatever a cycle kept out of reach of the top.
    let mut rest: Vec<Key> = g.tasks.keys().map(|id| Key::Task(id.clone())).collect();
    rest.sort();
    for key in rest {
        if !out.done.contains(&key) {
            steps.push(out.sequence(key, 0));
        }
    }
    let mut counts = BTreeMap::new();
    for t in g.tasks.values() {
        *counts.entry(t.state.as_str().to_owned()).or_default() += 1;
    }
    // The root first.
    steps.sort_by_key(|s| !s.iter().any(|n| matches!(n, Node::Task(t) if t.id == root)));
    WorkflowTree {
        asked: asked.to_owned(),
        root_id: root.to_owned(),
        steps,
        counts,
        truncated: false,
    }
}

/// Where a node is shown.
enum Slot {
    /// Among a group's members, at this index.
    Member(String, u32),
    /// After a node (a task's follower, a chord's callback), or at the top.
    After(Option<Key>),
}

impl<'a> Graph<'a> {
    fn new(rows: Vec<TaskRecord>, chords: &'a [ChordRecord]) -> Self {
        let mut tasks: HashMap<String, TaskRecord> =
            rows.into_iter().map(|r| (r.task_id.clone(), r)).collect();
        let mut callback_of = HashMap::new();
        for c in chords {
            callback_of.insert(c.callback_id.clone(), c.group_id.clone());
            // A callback not sent yet: known by its id and name.
            tasks.entry(c.callback_id.clone()).or_insert_with(|| {
                let name = c.callback.get("task").and_then(|t| t.as_str());
                pending(&c.callback_id, name)
            });
        }
        let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in tasks.values() {
            if let Some(gid) = &t.group_id
                && callback_of.get(&t.task_id) != Some(gid)
            {
                members
                    .entry(gid.clone())
                    .or_default()
                    .push(t.task_id.clone());
            }
        }
        for c in chords {
            members.entry(c.group_id.clone()).or_default();
        }
        Graph {
            tasks,
            chords: chords.iter().map(|c| (c.group_id.as_str(), c)).collect(),
            callback_of,
            members,
            anchors: HashMap::new(),
            in_progress: HashSet::new(),
        }
    }

    /// What `key` follows, ignoring group membership.
    fn up(&mut self, key: &Key) -> Option<Key> {
        match key {
            Key::Task(id) => {
                if let Some(gid) = self.callback_of.get(id) {
                    return Some(Key::Group(gid.clone()));
                }
                let parent = self.tasks.get(id)?.parent_id.as_ref()?;
                self.tasks
                    .contains_key(parent)
                    .then(|| Key::Task(parent.clone()))
            }
            Key::Group(gid) => self.anchor(&gid.clone()),
        }
    }

    /// The keys above `key`, nearest first (bounded).
    fn ancestors(&mut self, key: Key) -> Vec<Key> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut at = key;
        while let Some(next) = self.up(&at) {
            if out.len() >= WALK_MAX || !seen.insert(next.clone()) {
                break;
            }
            out.push(next.clone());
            at = next;
        }
        out
    }

    /// The lowest node every member of `gid` descends from.
    fn anchor(&mut self, gid: &str) -> Option<Key> {
        if let Some(a) = self.anchors.get(gid) {
            return a.clone();
        }
        if !self.in_progress.insert(gid.to_owned()) {
            return None; // a cycle through this group
        }
        let members = self.members.get(gid).cloned().unwrap_or_default();
        let mut chains = members
            .into_iter()
            .map(|m| self.ancestors(Key::Task(m)))
            .collect::<Vec<_>>()
            .into_iter();
        let anchor = chains.next().and_then(|first| {
            let others: Vec<HashSet<Key>> = chains.map(|c| c.into_iter().collect()).collect();
            first
                .into_iter()
                .find(|k| *k != Key::Group(gid.to_owned()) && others.iter().all(|o| o.contains(k)))
        });
        self.in_progress.remove(gid);
        self.anchors.insert(gid.to_owned(), anchor.clone());
        anchor
    }

    /// Where each task and group is shown.
    fn placements(&mut self) -> Vec<(Key, Slot)> {
        let mut placed: BTreeMap<Key, Slot> = BTreeMap::new();
        for (cb, gid) in self.callback_of.clone() {
            placed.insert(Key::Task(cb), Slot::After(Some(Key::Group(gid))));
        }
        for (gid, ids) in self.members.clone() {
            let anchor = self.anchor(&gid);
            for id in ids {
                let index = self.tasks.get(&id).and_then(|t| t.group_index);
                let entry = self.entry(Key::Task(id), &anchor, &gid);
                placed
                    .entry(entry)
                    .or_insert_with(|| Slot::Member(gid.clone(), index.unwrap_or(u32::MAX)));
            }
        }
        for gid in self.members.keys().cloned().collect::<Vec<_>>() {
            let key = Key::Group(gid.clone());
            if let Entry::Vacant(slot) = placed.entry(key) {
                slot.insert(Slot::After(self.anchor(&gid)));
            }
        }
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            let key = Key::Task(id);
            if !placed.contains_key(&key) {
                let up = self.up(&key);
                placed.entry(key).or_insert(Slot::After(up));
            }
        }
        placed.into_iter().collect()
    }

    /// The node that stands for member `key` in group `gid`: the highest
    /// one below the group's anchor (a chain's first task).
    fn entry(&mut self, key: Key, anchor: &Option<Key>, gid: &str) -> Key {
        let mut at = key;
        for _ in 0..WALK_MAX {
            let up = self.up(&at);
            if up == *anchor || up.is_none() || up == Some(Key::Group(gid.to_owned())) {
                break;
            }
            at = up.unwrap_or(at);
        }
        at
    }
}

fn pending(id: &str, name: Option<&str>) -> TaskRecord {
    TaskRecord {
        task_id: id.to_owned(),
        task_name: name.map(str::to_owned),
        state: TaskState::Pending,
        result: None,
        error: None,
        args: None,
        kwargs: None,
        worker: None,
        retries: 0,
        queue: None,
        parent_id: None,
        root_id: None,
        group_id: None,
        group_index: None,
        meta: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
        started_at: None,
        done_at: None,
    }
}

struct Out<'g, 'a> {
    g: &'g Graph<'a>,
    followers: BTreeMap<Option<Key>, Vec<Key>>,
    entries: BTreeMap<String, Vec<(u32, Key)>>,
    done: HashSet<Key>,
}

impl Out<'_, '_> {
    /// `key` and what follows it, one step after another while there is
    /// exactly one follower (a loop, so a long chain does not recurse).
    fn sequence(&mut self, key: Key, depth: usize) -> Sequence {
        let mut seq = Vec::new();
        let mut at = Some(key);
        while let Some(key) = at.take() {
            if !self.done.insert(key.clone()) {
                break;
            }
            let mut next: Vec<Key> = self
                .followers
                .get(&Some(key.clone()))
                .cloned()
                .unwrap_or_default();
            next.retain(|k| !self.done.contains(k));
            let mut node = self.node(&key, depth);
            if next.len() == 1 || matches!(node, Node::Group(_)) {
                // A group has one follower, its chord's callback (any
                // other is shown at the top).
                at = next.into_iter().next();
            } else if depth < NEST_MAX
                && let Node::Task(t) = &mut node
            {
                t.branches = next
                    .into_iter()
                    .map(|k| self.sequence(k, depth + 1))
                    .collect();
            }
            seq.push(node);
        }
        seq
    }

    fn node(&mut self, key: &Key, depth: usize) -> Node {
        match key {
            Key::Task(id) => Node::Task(self.task(id)),
            Key::Group(gid) => {
                let entries = self.entries.get(gid).cloned().unwrap_or_default();
                let members = if depth < NEST_MAX {
                    entries
                        .into_iter()
                        .map(|(_, k)| self.sequence(k, depth + 1))
                        .collect()
                } else {
                    Vec::new()
                };
                Node::Group(self.group(gid, members))
            }
        }
    }

    fn task(&self, id: &str) -> TaskNode {
        let t = self.g.tasks.get(id);
        TaskNode {
            id: id.to_owned(),
            name: t.and_then(|t| t.task_name.clone()),
            state: t.map_or(TaskState::Pending, |t| t.state),
            // A callback carries its own chord's group id: not a member.
            group_index: t
                .filter(|t| t.group_id.as_ref() != self.g.callback_of.get(id))
                .and_then(|t| t.group_index),
            error: t.and_then(|t| t.error.as_ref()).map(|e| {
                let line = e.message.lines().next().unwrap_or_default();
                format!("{}: {line}", e.kind)
            }),
            callback: self.g.callback_of.contains_key(id),
            branches: Vec::new(),
        }
    }

    fn group(&self, gid: &str, members: Vec<Sequence>) -> GroupNode {
        let mut counts = GroupCounts::default();
        let ids = self
            .g
            .members
            .get(gid)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for t in ids.iter().filter_map(|id| self.g.tasks.get(id)) {
            counts.total += 1;
            counts.finished += usize::from(t.state.is_ready());
            counts.succeeded += usize::from(t.state == TaskState::Success);
            counts.failed += usize::from(is_failed(t.state));
        }
        let chord = self.g.chords.get(gid).map(|c| {
            counts.total = counts
                .total
                .max(usize::try_from(c.size).unwrap_or(usize::MAX));
            ChordInfo {
                size: c.size,
                done: c.done,
                state: match c.state {
                    ChordState::Pending => "PENDING",
                    ChordState::Complete => "COMPLETE",
                    ChordState::Failed => "FAILED",
                },
                callback_id: c.callback_id.clone(),
            }
        });
        GroupNode {
            id: gid.to_owned(),
            chord,
            members,
            counts,
        }
    }
}
