//! Whether a process is doing its job, as `/health` answers: a state that
//! the process sets when it changes (connected, lost the broker, stopping),
//! never polled.

use std::sync::Arc;
use tokio::sync::watch;

/// One answer of `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthStatus {
    /// 200 when true, 503 when false.
    pub ok: bool,
    /// What it is doing, or why it cannot, in a few words.
    pub detail: String,
}

/// The health of a process. Cheap to clone: clones share one state.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<watch::Sender<HealthStatus>>,
}

impl Health {
    /// Unavailable, `detail` saying why (e.g. "starting").
    pub fn new(detail: &str) -> Health {
        let (state, _) = watch::channel(HealthStatus {
            ok: false,
            detail: detail.to_owned(),
        });
        Health {
            state: Arc::new(state),
        }
    }

    /// Doing its job: `detail` says what (e.g. "consuming 2 queues").
    pub fn ok(&self, detail: impl Into<String>) {
        self.set(true, detail.into());
    }

    /// Not doing its job: `reason` says why.
    pub fn unavailable(&self, reason: impl Into<String>) {
        self.set(false, reason.into());
    }

    fn set(&self, ok: bool, detail: String) {
        self.state.send_if_modified(|s| {
            let changed = s.ok != ok || s.detail != detail;
            *s = HealthStatus { ok, detail };
            changed
        });
    }

    /// The current state.
    pub fn status(&self) -> HealthStatus {
        self.state.borrow().clone()
    }

    /// Whether it is doing its job.
    pub fn is_ok(&self) -> bool {
        self.state.borrow().ok
    }

    /// Resolves once the state is `ok` (tests, and callers that wait for
    /// a process to be ready).
    pub async fn wait_for(&self, ok: bool) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.ok == ok).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn states_change_and_are_awaited() {
        let h = Health::new("starting");
        assert_eq!(
            h.status(),
            HealthStatus {
                ok: false,
                detail: "starting".into()
            }
        );
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait_for(true).await })
        };
        h.ok("consuming");
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(h.is_ok());
        h.unavailable("lost the broker");
        assert_eq!(h.status().detail, "lost the broker");
    }
}
