//! What a tick is to do: the runs due for each entry, and the timing
//! helpers (jitter, retry backoff) that every beat computes the same way.

use std::time::Duration;

use celeriac_common::backoff::Backoff;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::firing::EntryName;
use crate::firing::misfire::Runs;

/// A run chosen to be sent now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedFire {
    /// Scheduled fire time.
    pub at: DateTime<Utc>,
    /// When it was due (`at` plus jitter).
    pub due: DateTime<Utc>,
    /// Its task id.
    pub task_id: Uuid,
    /// A run that an earlier leader started to send: sent again, same id.
    pub resend: bool,
}

/// What is due for one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Entry name.
    pub name: EntryName,
    /// A scheduled run to send.
    pub fire: Option<PlannedFire>,
    /// A run-now request to serve: request time and task id.
    pub run_now: Option<(DateTime<Utc>, Uuid)>,
    /// Runs skipped as missed (how many, the last one).
    pub missed: Option<(Runs, DateTime<Utc>)>,
    /// Runs folded into `fire`.
    pub coalesced: Option<Runs>,
}

/// Retries of a run that could not be sent: 1 s, doubling, at most 16 s;
/// no jitter, so every beat retries a run at the same time.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));

/// How long to wait before retrying a run that has failed `failures` times
/// in a row: 1, 1, 2, 4, 8, 16, 16, ... seconds for 0, 1, 2, ... failures.
pub(crate) fn backoff(failures: u32) -> TimeDelta {
    let delay = RETRY.delay_for(failures.saturating_sub(1));
    TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(16))
}

/// A run's jitter: a fixed pseudo-random delay in `0..=max` derived from its
/// task id, so every beat (and every restart) delays it by the same amount.
pub(crate) fn jitter_for(id: Uuid, max: Duration) -> TimeDelta {
    let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max_ns == 0 {
        return TimeDelta::zero();
    }
    let bits = id.as_u64_pair().0 ^ id.as_u64_pair().1;
    let ns = bits % max_ns.saturating_add(1);
    TimeDelta::nanoseconds(i64::try_from(ns).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_sixteen() {
        let secs: Vec<i64> = (0..8).map(|f| backoff(f).num_seconds()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(backoff(u32::MAX), TimeDelta::seconds(16));
    }

    #[test]
    fn jitter_is_fixed_per_task_id_and_within_its_maximum() {
        let max = Duration::from_secs(30);
        let ids: Vec<Uuid> = (0..200u128)
            .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        let jitters: Vec<TimeDelta> = ids.iter().map(|id| jitter_for(*id, max)).collect();
        for (id, j) in ids.iter().zip(&jitters) {
            assert_eq!(jitter_for(*id, max), *j, "same id, same jitter");
            assert!(
                *j >= TimeDelta::zero() && *j <= TimeDelta::seconds(30),
                "{j}"
            );
        }
        assert!(
            jitters.iter().any(|j| *j != jitters[0]),
            "different ids should not all get the same jitter"
        );
        assert_eq!(jitter_for(ids[1], Duration::ZERO), TimeDelta::zero());
    }
}
