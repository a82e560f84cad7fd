//! `celeriac result ID --follow`: watches a task until it is final. On a
//! terminal, a progress bar (`indicatif`) moved by the task's PROGRESS
//! reports; otherwise one plain line per change, `STATE` or `PROGRESS
//! done/total {"done",...}`, for logs and scripts.

use celeriac::TaskState;
use celeriac_common::backend::{BackendError, ResultBackend, TaskRecord};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;

/// How often the result row is read.
const POLL: Duration = Duration::from_millis(200);

/// Reads task `id` until it is final or `deadline` passes, showing its
/// state and progress as they change; returns the last record read.
pub(crate) async fn follow(
    backend: &ResultBackend,
    id: &str,
    deadline: Option<Instant>,
) -> Result<Option<TaskRecord>, BackendError> {
    let mut view = if std::io::stdout().is_terminal() {
        View::Bar(bar())
    } else {
        View::Lines(None)
    };
    loop {
        let record = backend.get(id).await?;
        let state = record.as_ref().map_or(TaskState::Pending, |r| r.state);
        let result = record.as_ref().and_then(|r| r.result.clone());
        let done = state.is_ready();
        if !done {
            view.show(state, result.as_ref());
        }
        if done || deadline.is_some_and(|d| Instant::now() >= d) {
            view.finish();
            return Ok(record);
        }
        tokio::time::sleep(POLL).await;
    }
}

enum View {
    Bar(ProgressBar),
    /// The last line printed.
    Lines(Option<String>),
}

impl View {
    fn show(&mut self, state: TaskState, result: Option<&Value>) {
        let progress = (state == TaskState::Progress)
            .then(|| result.and_then(done_total))
            .flatten();
        match self {
            View::Bar(bar) => match progress {
                Some((done, total)) => {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(state.as_str());
                }
                None => bar.set_message(state.as_str()),
            },
            View::Lines(last) => {
                let line = match (progress, result) {
                    (Some((done, total)), Some(r)) => format!("{state} {done}/{total} {r}"),
                    _ => state.as_str().to_owned(),
                };
                if last.as_deref() != Some(line.as_str()) {
                    celeriac_common::outln!("{line}");
                    *last = Some(line);
                }
            }
        }
    }

    fn finish(&self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// A PROGRESS result's `done` and `total`.
fn done_total(result: &Value) -> Option<(u64, u64)> {
    Some((
        result.get("done")?.as_u64()?,
        result.get("total")?.as_u64()?,
    ))
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn done_and_total_are_read_from_progress() {
        assert_eq!(
            done_total(&json!({"done": 3, "total": 9, "x": 1})),
            Some((3, 9))
        );
        assert_eq!(done_total(&json!({"done": 3})), None);
        assert_eq!(done_total(&json!("text")), None);
    }
}
