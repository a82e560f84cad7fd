//! The tree built from rows as workers store them (no database).

use super::build::build;
use super::{Node, RenderOptions, Sequence};
use celeriac_common::TaskState;
use celeriac_common::backend::TaskRecord;
use celeriac_common::backend::chord::{ChordRecord, ChordState};
use serde_json::json;

fn row(id: &str, parent: Option<&str>, group: Option<(&str, u32)>) -> TaskRecord {
    TaskRecord {
        task_id: id.to_owned(),
        task_name: Some(format!("tasks.{id}")),
        state: TaskState::Success,
        result: None,
        error: None,
        args: None,
        kwargs: None,
        worker: None,
        retries: 0,
        queue: None,
        parent_id: parent.map(str::to_owned),
        root_id: Some("t1".to_owned()),
        group_id: group.map(|(g, _)| g.to_owned()),
        group_index: group.map(|(_, i)| i),
        meta: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
        started_at: None,
        done_at: None,
    }
}

fn chord(group: &str, callback: &str, size: u64, done: u64) -> ChordRecord {
    ChordRecord {
        group_id: group.to_owned(),
        size,
        done,
        state: if done == size {
            ChordState::Complete
        } else {
            ChordState::Pending
        },
        callback: json!({"task": format!("tasks.{callback}"), "args": [], "kwargs": {}}),
        callback_id: callback.to_owned(),
        fired_by: None,
        fired_at: None,
        callback_sent_at: None,
    }
}

/// A sequence as ids, groups as `G[...]` of their members' sequences.
fn shape(seq: &Sequence) -> String {
    let parts: Vec<String> = seq
        .iter()
        .map(|n| match n {
            Node::Task(t) if t.branches.is_empty() => t.id.clone(),
            Node::Task(t) => {
                let b: Vec<String> = t.branches.iter().map(shape).collect();
                format!("{}{{{}}}", t.id, b.join(" | "))
            }
            Node::Group(g) => {
                let m: Vec<String> = g.members.iter().map(shape).collect();
                format!("{}[{}]", g.id, m.join(", "))
            }
        })
        .collect();
    parts.join(" -> ")
}

#[test]
fn the_diamond_reads_top_down() {
    // T1 → (T2, T3) → T4; the callback's parent is the member that
    // completed the chord, and it carries the chord's group id (as stored).
    let rows = vec![
        row("t1", None, None),
        row("t3", Some("t1"), Some(("g", 1))),
        row("t2", Some("t1"), Some(("g", 0))),
        row("t4", Some("t3"), Some(("g", 0))),
    ];
    let tree = build("t2", "t1", rows, &[chord("g", "t4", 2, 2)]);
    assert_eq!(tree.steps.len(), 1);
    assert_eq!(shape(&tree.steps[0]), "t1 -> g[t2, t3] -> t4");
    let text = tree.render(RenderOptions::default());
    let expected = "\
workflow t1: 4 tasks (4 SUCCESS)
├── tasks.t1  SUCCESS  t1
├── chord g  2/2 done: 2 succeeded, 0 failed; chord COMPLETE (2/2 counted)
│   ├── [0] tasks.t2  SUCCESS  t2  ◀
│   └── [1] tasks.t3  SUCCESS  t3
└── tasks.t4  SUCCESS  t4  (chord callback)
";
    assert_eq!(text, expected);
    let colored = tree.render(RenderOptions {
        color: true,
        ..RenderOptions::default()
    });
    assert!(colored.contains("\u{1b}["), "colours when asked");
    let json = serde_json::to_value(&tree).expect("json");
    assert_eq!(json["steps"][0][1]["kind"], "group");
    assert_eq!(json["steps"][0][1]["chord"]["callback_id"], "t4");
    assert_eq!(json["steps"][0][2]["callback"], true);
}

#[test]
fn a_group_of_chains_and_a_pending_callback() {
    // chord(group(chain(a, b), c), d) at the root: only the chain's last
    // step carries the group id; d has not been sent yet.
    let rows = vec![
        row("a", None, None),
        row("b", Some("a"), Some(("g", 0))),
        row("c", None, Some(("g", 1))),
    ];
    let tree = build("a", "a", rows, &[chord("g", "d", 3, 2)]);
    assert_eq!(shape(&tree.steps[0]), "g[a -> b, c] -> d");
    let Some(Node::Task(d)) = tree.steps[0].last() else {
        panic!("the callback is last")
    };
    assert_eq!(
        (d.state, d.name.as_deref()),
        (TaskState::Pending, Some("tasks.d"))
    );
    let text = tree.render(RenderOptions::default());
    assert!(text.contains("[0] chain of 2"), "{text}");
    assert!(text.contains("… 1 more (1 not started)"), "{text}");
}

#[test]
fn links_branch_and_nested_chords_nest() {
    // x with a link l and a chain step y; y starts a chord whose header
    // holds a chord (h1, h2 → inner callback n) and m; outer callback z.
    let rows = vec![
        row("x", None, None),
        row("l", Some("x"), None),
        row("y", Some("x"), None),
        row("h1", Some("y"), Some(("inner", 0))),
        row("h2", Some("y"), Some(("inner", 1))),
        row("n", Some("h2"), Some(("outer", 0))),
        row("m", Some("y"), Some(("outer", 1))),
        row("z", Some("m"), Some(("outer", 0))),
    ];
    let chords = [chord("inner", "n", 2, 2), chord("outer", "z", 2, 2)];
    let tree = build("x", "x", rows, &chords);
    assert_eq!(
        shape(&tree.steps[0]),
        "x{l | y -> outer[inner[h1, h2] -> n, m] -> z}"
    );
}

#[test]
fn cycles_and_long_chains_end() {
    // Bad data: two rows that name each other as parent.
    let rows = vec![row("p", Some("q"), None), row("q", Some("p"), None)];
    let tree = build("p", "p", rows, &[]);
    let shown: usize = tree.steps.iter().map(Vec::len).sum();
    assert_eq!(shown, 2, "each shown once");

    // A chain of 100,000 steps: one sequence, built and drawn without
    // recursing per step.
    let n = 100_000;
    let rows: Vec<TaskRecord> = (0..n)
        .map(|i| {
            let parent = (i > 0).then(|| format!("s{}", i - 1));
            row(&format!("s{i}"), parent.as_deref(), None)
        })
        .collect();
    let tree = build("s0", "s0", rows, &[]);
    assert_eq!(tree.steps.len(), 1);
    assert_eq!(tree.steps[0].len(), n);
    let text = tree.render(RenderOptions::default());
    assert_eq!(text.lines().count(), n + 1);
}
