//! What only the workers themselves can say (their pool size, the queues
//! they consume, their peak memory), asked every few seconds over Celery's
//! remote control (`stats` and `active_queues`, as `celeriac inspect` and
//! Flower ask) and kept for the workers page. Works with Celery's workers
//! too.

use crate::state::AppState;
use celeriac::mailbox::{self, Ask};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Between two rounds of questions.
const EVERY: Duration = Duration::from_secs(10);
/// How long replies are awaited.
const REPLY_WITHIN: Duration = Duration::from_secs(1);

/// One worker's facts: `{pid, concurrency, queues, rss_kb}`.
#[derive(Default)]
pub(crate) struct Facts(Mutex<HashMap<String, Value>>);

impl Facts {
    /// The facts of `hostname`, if it answered lately and is process `pid`.
    pub(crate) fn of(&self, hostname: &str, pid: Option<i64>) -> Option<Value> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let f = map.get(hostname)?;
        let same = match (pid, f["pid"].as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same.then(|| f.clone())
    }

    fn set(&self, all: HashMap<String, Value>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = all;
    }
}

fn ask(method: &str) -> Ask {
    Ask {
        method: method.to_owned(),
        arguments: json!({}),
        destination: Vec::new(),
        timeout: REPLY_WITHIN,
    }
}

/// A worker's facts from its `stats` and `active_queues` replies.
fn facts(stats: &Value, queues: Option<&Value>) -> Value {
    let ok = |v: &Value| v.get("ok").cloned().unwrap_or_else(|| v.clone());
    let stats = ok(stats);
    let queues: Vec<Value> = queues
        .map(ok)
        .and_then(|q| q.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|q| q.get("name").cloned())
        .collect();
    json!({
        "pid": stats["pid"],
        "concurrency": stats["pool"]["max-concurrency"],
        "queues": queues,
        "rss_kb": stats["rusage"]["maxrss"],
    })
}

/// Asks the workers every [`EVERY`] for as long as the dashboard runs.
pub(crate) async fn poll(state: Arc<AppState>) {
    loop {
        let asked = async {
            let stats = mailbox::ask(&state.config, &ask("stats")).await?;
            let queues = mailbox::ask(&state.config, &ask("active_queues")).await?;
            Ok::<_, celeriac_common::broker::BrokerError>((stats, queues))
        };
        match asked.await {
            Ok((stats, queues)) => {
                let queues: HashMap<String, Value> = queues.into_iter().collect();
                let all = stats
                    .into_iter()
                    .map(|(host, s)| {
                        let f = facts(&s, queues.get(&host));
                        (host, f)
                    })
                    .collect();
                state.live.facts.set(all);
            }
            Err(e) => {
                tracing::debug!(error = %celeriac_common::cli::one_line(&e), "cannot ask workers")
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::facts;
    use serde_json::json;

    #[test]
    fn facts_from_stats_and_active_queues_replies() {
        let stats = json!({"ok": {"pid": 42, "pool": {"max-concurrency": 8},
            "rusage": {"maxrss": 51200}}});
        let queues = json!([{"name": "celery", "exchange": {}}, {"name": "mail"}]);
        assert_eq!(
            facts(&stats, Some(&queues)),
            json!({"pid": 42, "concurrency": 8, "queues": ["celery", "mail"], "rss_kb": 51200})
        );
        assert_eq!(facts(&json!({}), None)["queues"], json!([]));
    }
}
