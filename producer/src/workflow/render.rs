//! The tree as text for a terminal (`├──` / `└──`), states coloured when
//! asked to.

use super::{GroupNode, Node, Sequence, TaskNode, WorkflowTree};
use anstyle::{AnsiColor, Style};
use celeriac_common::TaskState;
use std::fmt::Write;

/// How [`WorkflowTree::render`] draws the tree.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Colour the states (ANSI escapes). Default: off.
    pub color: bool,
    /// Members shown per group; the rest are summed up in one line
    /// (0: all). Default: 20.
    pub members: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            color: false,
            members: 20,
        }
    }
}

/// One line's worth of a child: a node, or a chain of several.
enum Item<'a> {
    Node(&'a Node, Option<u32>),
    Chain(&'a [Node], Option<u32>),
    More(String),
}

impl WorkflowTree {
    /// The tree as lines of text, one node a line, ending in a newline.
    pub fn render(&self, opts: RenderOptions) -> String {
        let mut r = Renderer {
            out: String::new(),
            opts,
            asked: &self.asked,
        };
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(state, n)| format!("{n} {}", r.state_name(state)))
            .collect();
        let total: usize = self.counts.values().sum();
        let _ = writeln!(
            r.out,
            "workflow {}: {total} task{} ({}){}",
            self.root_id,
            if total == 1 { "" } else { "s" },
            counts.join(", "),
            if self.truncated {
                ", cut at the row limit"
            } else {
                ""
            }
        );
        let items: Vec<Item<'_>> = match self.steps.as_slice() {
            [only] => only.iter().map(|n| Item::Node(n, None)).collect(),
            many => many.iter().map(|s| seq_item(s, None)).collect(),
        };
        r.items(&items, "");
        r.out
    }
}

fn seq_item(seq: &Sequence, index: Option<u32>) -> Item<'_> {
    match seq.as_slice() {
        [one] => Item::Node(one, index),
        many => Item::Chain(many, index),
    }
}

struct Renderer<'a> {
    out: String,
    opts: RenderOptions,
    asked: &'a str,
}

impl Renderer<'_> {
    fn items(&mut self, items: &[Item<'_>], prefix: &str) {
        for (i, item) in items.iter().enumerate() {
            let last = i + 1 == items.len();
            let (branch, more) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            let label = self.label(item);
            let _ = writeln!(self.out, "{prefix}{branch}{label}");
            let children = self.children(item);
            if !children.is_empty() {
                self.items(&children, &format!("{prefix}{more}"));
            }
        }
    }

    fn children<'n>(&self, item: &Item<'n>) -> Vec<Item<'n>> {
        match item {
            Item::Node(Node::Task(t), _) => t.branches.iter().map(|b| seq_item(b, None)).collect(),
            Item::Node(Node::Group(g), _) => self.members(g),
            Item::Chain(nodes, _) => nodes.iter().map(|n| Item::Node(n, None)).collect(),
            Item::More(_) => Vec::new(),
        }
    }

    fn members<'n>(&self, g: &'n GroupNode) -> Vec<Item<'n>> {
        let shown = match self.opts.members {
            0 => g.members.len(),
            n => n.min(g.members.len()),
        };
        let mut items: Vec<Item<'n>> = g.members[..shown]
            .iter()
            .map(|m| seq_item(m, first_index(m)))
            .collect();
        let hidden = &g.members[shown..];
        let unseen = g.counts.total.saturating_sub(g.members.len());
        if !hidden.is_empty() || unseen > 0 {
            let mut states = std::collections::BTreeMap::<&str, usize>::new();
            for m in hidden {
                if let Some(Node::Task(t)) = m.first() {
                    *states.entry(t.state.as_str()).or_default() += 1;
                }
            }
            if unseen > 0 {
                *states.entry("not started").or_default() += unseen;
            }
            let parts: Vec<String> = states
                .iter()
                .map(|(s, n)| format!("{n} {}", self.state_name(s)))
                .collect();
            let n = hidden.len() + unseen;
            items.push(Item::More(format!("… {n} more ({})", parts.join(", "))));
        }
        items
    }

    fn label(&self, item: &Item<'_>) -> String {
        match item {
            Item::Node(Node::Task(t), index) => self.task(t, *index),
            Item::Node(Node::Group(g), index) => format!("{}{}", at(*index), self.group(g)),
            Item::Chain(nodes, index) => format!("{}chain of {}", at(*index), nodes.len()),
            Item::More(text) => text.clone(),
        }
    }

    fn task(&self, t: &TaskNode, index: Option<u32>) -> String {
        let mut s = at(index.or(t.group_index));
        s.push_str(t.name.as_deref().unwrap_or("?"));
        let _ = write!(s, "  {}  {}", self.state(t.state), t.id);
        if t.callback {
            s.push_str("  (chord callback)");
        }
        if let Some(e) = &t.error {
            let _ = write!(s, "  {}", clip(e, 100));
        }
        if t.id == self.asked {
            s.push_str("  ◀");
        }
        s
    }

    fn group(&self, g: &GroupNode) -> String {
        let c = g.counts;
        let kind = if g.chord.is_some() { "chord" } else { "group" };
        let mut s = format!(
            "{kind} {}  {}/{} done: {} succeeded, {} failed",
            g.id, c.finished, c.total, c.succeeded, c.failed
        );
        if let Some(ch) = &g.chord {
            let state = match ch.state {
                "COMPLETE" => self.paint(ch.state, AnsiColor::Green),
                "FAILED" => self.paint(ch.state, AnsiColor::Red),
                other => self.paint(other, AnsiColor::Blue),
            };
            let _ = write!(s, "; chord {state} ({}/{} counted)", ch.done, ch.size);
        }
        if g.id == self.asked {
            s.push_str("  ◀");
        }
        s
    }

    fn state(&self, state: TaskState) -> String {
        self.state_name(state.as_str())
    }

    fn state_name(&self, name: &str) -> String {
        let color = match name {
            "SUCCESS" => AnsiColor::Green,
            "FAILURE" => AnsiColor::Red,
            "REVOKED" | "REJECTED" => AnsiColor::Magenta,
            "RETRY" => AnsiColor::Yellow,
            "RECEIVED" | "STARTED" => AnsiColor::Blue,
            _ => AnsiColor::BrightBlack,
        };
        self.paint(name, color)
    }

    fn paint(&self, text: &str, color: AnsiColor) -> String {
        if !self.opts.color {
            return text.to_owned();
        }
        let style = Style::new().fg_color(Some(color.into())).bold();
        format!("{style}{text}{style:#}")
    }
}

/// The member index a sequence starts with.
fn first_index(seq: &Sequence) -> Option<u32> {
    seq.iter().find_map(|n| match n {
        Node::Task(t) => t.group_index,
        Node::Group(_) => None,
    })
}

fn at(index: Option<u32>) -> String {
    index.map(|i| format!("[{i}] ")).unwrap_or_default()
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}
