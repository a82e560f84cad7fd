//! Keeping the lease: a background task takes or renews it and says who
//! leads ([`Leadership`]) on a watch channel.
//!
//! The leader renews every third of the lease time and stops leading on its
//! own once a full lease time has passed without a successful renewal; a
//! standby tries to take the lease every second (or every third of the lease
//! time, if shorter). A beat that stops cleanly releases the lease, so a
//! standby takes over within a second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::leadership::lease::{Fence, Lease, LeaseStatus};

/// Who leads, as this process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Another beat leads (or nobody can be reached).
    Standby,
    /// This beat leads, with this fence.
    Leader(Fence),
}

/// Keeps taking or renewing the lease in the background and publishes the
/// result. `recheck` asks for an attempt at once (e.g. after a fenced write
/// failed); setting `shutdown` to `true` releases the lease and stops.
pub async fn keep(
    lease: Lease,
    tx: watch::Sender<Leadership>,
    recheck: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl = lease.ttl();
    let renew_every = ttl / 3;
    let standby_every = renew_every.min(Duration::from_secs(1));
    let mut until: Option<Instant> = None;
    let mut failing = false;
    loop {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            renew_every.max(Duration::from_millis(200)),
            lease.try_acquire(),
        )
        .await;
        let leading = matches!(&*tx.borrow(), Leadership::Leader(_));
        match outcome {
            Ok(Ok(LeaseStatus::Held(fence))) => {
                failing = false;
                until = Some(started + ttl.mul_f64(0.9));
                if *tx.borrow() != Leadership::Leader(fence.clone()) {
                    tracing::info!(
                        holder = %fence.holder,
                        token = fence.token,
                        "leading: holds the beat lease"
                    );
                    let _ = tx.send(Leadership::Leader(fence));
                }
            }
            Ok(Ok(LeaseStatus::HeldBy { holder, token, .. })) => {
                failing = false;
                until = None;
                if leading {
                    tracing::warn!(leader = %holder, token, "lost the beat lease; standing by");
                    let _ = tx.send(Leadership::Standby);
                }
            }
            Ok(Err(e)) => note_failure(&mut failing, &e.to_string()),
            Err(_) => note_failure(&mut failing, "no answer from the database"),
        }
        if leading && until.is_some_and(|u| Instant::now() >= u) {
            tracing::warn!("could not renew the beat lease in time; standing by");
            until = None;
            let _ = tx.send(Leadership::Standby);
        }
        let mut pause = if until.is_some() {
            renew_every
        } else {
            standby_every
        };
        if let Some(u) = until {
            pause = pause.min(u.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = recheck.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    if matches!(&*tx.borrow(), Leadership::Leader(_)) {
        let _ = tx.send(Leadership::Standby);
        match lease.release().await {
            Ok(_) => tracing::info!("released the beat lease"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the beat lease; it expires by itself")
            }
        }
    }
}

fn note_failure(failing: &mut bool, error: &str) {
    if *failing {
        tracing::debug!(error, "beat lease attempt failed");
    } else {
        tracing::warn!(error, "beat lease attempt failed; retrying");
        *failing = true;
    }
}
