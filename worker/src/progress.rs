//! Task progress: [`TaskContext::progress`](crate::TaskContext::progress)
//! hands the latest value over without waiting; the worker writes it to
//! the task's row as state PROGRESS (Celery's custom-state form, the result
//! holding `{"done", "total", ...meta}`), at most once per [`THROTTLE`],
//! always writes the last value before the task's outcome is recorded, and
//! writes nothing after (the backend also refuses a PROGRESS over a final
//! state).

use serde_json::{Map, Value, json};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// At most one progress write per task in this time.
pub(crate) const THROTTLE: Duration = Duration::from_millis(250);
/// How long one progress write may take before it is given up.
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Where a task reports progress. The default one records nothing (no
/// result backend, or the task's result is ignored).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    tx: Option<watch::Sender<Option<Value>>>,
}

impl Progress {
    /// Reports `done` out of `total`, with `meta` (an object's keys are
    /// merged in; any other value but null goes under `"meta"`). Never waits.
    pub fn report(&self, done: u64, total: u64, meta: Value) {
        if let Some(tx) = &self.tx {
            tx.send_replace(Some(progress_value(done, total, meta)));
        }
    }
}

/// The stored form: `{"done": 3, "total": 10, ...meta}`.
pub(crate) fn progress_value(done: u64, total: u64, meta: Value) -> Value {
    let mut out = Map::new();
    match meta {
        Value::Object(m) => out.extend(m),
        Value::Null => {}
        other => {
            out.insert("meta".into(), other);
        }
    }
    out.insert("done".into(), json!(done));
    out.insert("total".into(), json!(total));
    Value::Object(out)
}

/// The worker's end of a task's [`Progress`].
pub(crate) struct Watcher {
    rx: watch::Receiver<Option<Value>>,
    // Keeps the channel open however the task's handles are dropped.
    _tx: watch::Sender<Option<Value>>,
}

impl Watcher {
    /// The next value reported, no sooner than `not_before`.
    async fn next(&mut self, not_before: Instant) -> Value {
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(not_before).await;
            if let Some(v) = self.rx.borrow_and_update().clone() {
                return v;
            }
        }
    }

    /// The value reported and not yet taken, if any.
    fn pending(&mut self) -> Option<Value> {
        if self.rx.has_changed().unwrap_or(false) {
            self.rx.borrow_and_update().clone()
        } else {
            None
        }
    }
}

/// A task's [`Progress`] and the worker's end of it; without `on`, a
/// [`Progress`] that records nothing.
pub(crate) fn channel(on: bool) -> (Progress, Option<Watcher>) {
    if !on {
        return (Progress::default(), None);
    }
    let (tx, rx) = watch::channel(None);
    let progress = Progress {
        tx: Some(tx.clone()),
    };
    (progress, Some(Watcher { rx, _tx: tx }))
}

/// Awaits `task`, meanwhile writing the progress it reports with `write`
/// (one write at a time, the next no sooner than [`THROTTLE`] after the
/// last ended); once `task` is done, finishes a write under way and writes
/// the last value not yet written, then returns `task`'s output.
pub(crate) async fn drive<T, W, F>(
    task: impl Future<Output = T>,
    watcher: Option<Watcher>,
    mut write: W,
) -> T
where
    W: FnMut(Value) -> F,
    F: Future<Output = ()>,
{
    let Some(mut w) = watcher else {
        return task.await;
    };
    let bounded = |f: F| async move {
        if tokio::time::timeout(WRITE_LIMIT, f).await.is_err() {
            tracing::warn!("a progress write took over {WRITE_LIMIT:?}; given up");
        }
    };
    tokio::pin!(task);
    let mut writing = std::pin::pin!(None);
    let mut not_before = Instant::now();
    let output = loop {
        tokio::select! {
            biased;
            output = &mut task => break output,
            _ = async { writing.as_mut().as_pin_mut().expect("checked").await },
                if writing.is_some() => {
                writing.set(None);
                not_before = Instant::now() + THROTTLE;
            }
            value = w.next(not_before), if writing.is_none() => {
                writing.set(Some(bounded(write(value))));
            }
        }
    };
    if let Some(under_way) = writing.as_mut().as_pin_mut() {
        under_way.await;
    }
    if let Some(last) = w.pending() {
        bounded(write(last)).await;
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn meta_is_merged_with_done_and_total() {
        let v = progress_value(3, 10, json!({"step": "resize", "done": 99}));
        assert_eq!(v, json!({"step": "resize", "done": 3, "total": 10}));
        assert_eq!(
            progress_value(1, 2, Value::Null),
            json!({"done": 1, "total": 2})
        );
        assert_eq!(
            progress_value(1, 2, json!("x")),
            json!({"meta": "x", "done": 1, "total": 2})
        );
    }

    #[tokio::test]
    async fn writes_are_throttled_and_the_last_is_always_written() {
        let (progress, watcher) = channel(true);
        let written = Arc::new(Mutex::new(Vec::new()));
        let task = async move {
            for i in 1..=50u64 {
                progress.report(i, 50, Value::Null);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            "done"
        };
        let log = written.clone();
        let out = drive(task, watcher, |v| {
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                log.lock()
                    .expect("lock")
                    .push(v["done"].as_u64().unwrap_or(0));
            }
        })
        .await;
        assert_eq!(out, "done");
        let written = written.lock().expect("lock").clone();
        // 0.5 s of reports, one write per 250 ms at most (+ the last).
        assert!(written.len() <= 4, "{written:?}");
        assert!(written.len() >= 2, "{written:?}");
        assert_eq!(written.last(), Some(&50), "{written:?}");
        assert!(written.windows(2).all(|w| w[0] < w[1]), "{written:?}");
    }

    #[tokio::test]
    async fn off_writes_nothing() {
        let (progress, watcher) = channel(false);
        progress.report(1, 1, Value::Null);
        let out = drive(async { 7 }, watcher, |_| async {
            panic!("no write expected")
        })
        .await;
        assert_eq!(out, 7);
    }
}
