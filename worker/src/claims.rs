//! The rows this worker process has claimed (see
//! [`Disposition::Claim`](crate::disposition::Disposition::Claim)): a chord
//! callback or beat run takes its row in the result backend before it runs,
//! so that two copies of one task id never run at once.
//!
//! The database knows a claim by its worker id only. This process keeps
//! the ids it holds, so that a second copy here waits for the first
//! without asking the database, and a row left under this worker's id that
//! no copy here holds (a claim whose answer timed out after it committed)
//! is known to be stale and taken again. A claim ends when its
//! [`ClaimGuard`] is dropped, after the outcome is stored, given up, or
//! the message went back to its queue: the row is then given back if it is
//! still running under this worker (RETRY, no worker; nothing happens to a
//! final or RETRY row), and only then forgotten here, so a copy here never
//! claims a row a late give-back could take away.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_common::backend::ResultBackend;

use crate::recorder;

/// How long between two tries to give a row back when the database does
/// not answer.
const RELEASE_RETRY: Duration = Duration::from_secs(5);

/// The task ids whose rows this process holds.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    held: Mutex<HashSet<String>>,
}

impl Claims {
    /// Reserves `id` for a claim; `None` if a copy here holds it already.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        id: &str,
        backend: &ResultBackend,
        worker_id: &str,
    ) -> Option<ClaimGuard> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.insert(id.to_owned()) {
            return None;
        }
        Some(ClaimGuard {
            claims: self.clone(),
            id: id.to_owned(),
            end: Some((backend.clone(), worker_id.to_owned())),
        })
    }

    fn forget(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// A claim held by this process: on drop, the row is given back (if it is
/// still running under this worker), then the id forgotten.
#[derive(Debug)]
pub(crate) struct ClaimGuard {
    claims: Arc<Claims>,
    id: String,
    /// Where to give the row back; `None` once nothing is to be given back.
    end: Option<(ResultBackend, String)>,
}

impl ClaimGuard {
    /// Ends a claim without giving the row back: it took none (another
    /// copy holds it, or it is final), or the row is about to be final (a
    /// revoke that came after the claim). Forgotten at once.
    pub(crate) fn forget(mut self) {
        self.end = None;
    }

    /// Gives the row back now (before the message goes back to its queue,
    /// so the copy that comes back finds it free); if the database does
    /// not answer, in the background as on drop.
    pub(crate) async fn give_back(mut self) {
        let Some((backend, worker_id)) = self.end.take() else {
            return;
        };
        let released = backend.release_run(&self.id, &worker_id);
        if recorder::bounded(&backend, released).await.is_err() {
            self.end = Some((backend, worker_id));
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some((backend, worker_id)) = self.end.take() else {
            self.claims.forget(&self.id);
            return;
        };
        let (claims, id) = (self.claims.clone(), std::mem::take(&mut self.id));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Shutting down: the worker's row goes with it, and with it
            // the hold on this one.
            return;
        };
        runtime.spawn(async move {
            loop {
                match recorder::bounded(&backend, backend.release_run(&id, &worker_id)).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(
                            task.id = %id,
                            error = %e,
                            "cannot give back the task's row; trying again (a copy on another worker waits)"
                        );
                        tokio::time::sleep(RELEASE_RETRY).await;
                    }
                }
            }
            claims.forget(&id);
        });
    }
}
