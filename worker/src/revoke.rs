//! Revoked task ids and running tasks, per worker. Revokes arrive by
//! broadcast (`celery.pidbox`) and are loaded from the result backend at
//! start, so a worker started later still honours them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use tokio::task::AbortHandle;

/// Most revoked ids remembered (oldest forgotten first), as Celery's 50,000.
const MAX_REVOKED: usize = 50_000;

#[derive(Default)]
pub(crate) struct Revocations {
    revoked: Mutex<(HashSet<String>, VecDeque<String>)>,
    active: Mutex<HashMap<String, AbortHandle>>,
}

impl Revocations {
    pub(crate) fn revoke(&self, id: &str) {
        if let Ok(mut guard) = self.revoked.lock() {
            let (set, order) = &mut *guard;
            if set.insert(id.to_owned()) {
                order.push_back(id.to_owned());
                while order.len() > MAX_REVOKED {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        }
    }

    /// The revoked ids remembered, oldest first.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.revoked
            .lock()
            .map(|g| g.1.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .map(|g| g.0.contains(id))
            .unwrap_or(false)
    }

    /// Stops a running async task (blocking ones cannot be stopped); returns
    /// whether one was running.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        self.active
            .lock()
            .ok()
            .and_then(|a| a.get(id).map(AbortHandle::abort))
            .is_some()
    }

    pub(crate) fn started(&self, id: &str, handle: AbortHandle) {
        if let Ok(mut a) = self.active.lock() {
            a.insert(id.to_owned(), handle);
        }
    }

    pub(crate) fn finished(&self, id: &str) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(id);
        }
    }
}
