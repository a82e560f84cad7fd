//! What happens to a delivery, decided without acting: [`decide`] maps what
//! is known about a delivery (the message, [`DeliveryFacts`], the worker's
//! [`WorkerView`]) to a [`Disposition`]. It is pure, so every branch is
//! tested without a broker; `carry_out` acts on what it decides.
//!
//! A delivery is decided at three [`Stage`]s, since some facts change while
//! it waits: a revoke can arrive while it waits for its eta or for a slot,
//! and whether it already ran is looked up in the result backend only when
//! the decision asks for it ([`Disposition::CheckDone`]). A message that
//! may come twice with one id (a chord callback, a beat run) takes its row
//! in the result backend before it runs ([`Disposition::Claim`]), so two
//! copies never run at once.

use crate::registry::Registry;
use crate::revoke::Revocations;
use celeriac_common::backend::workers::Claim;
use celeriac_common::delay;
use celeriac_common::protocol::TaskMessage;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use std::time::Duration;

/// Header beat puts on the runs it sends (their ids are deterministic).
const BEAT_ENTRY_HEADER: &str = "beat_entry";

/// Header on the messages of a chord's callback (its value: the chord's
/// group id). The callback may be published twice (its claimant's worker
/// died between the broker's confirm and recording it sent), with one id:
/// so each copy claims its row before it runs ([`Disposition::Claim`]).
pub(crate) const CHORD_CALLBACK_HEADER: &str = "celeriac_chord_callback";

/// How long a copy whose row another copy holds waits before it asks
/// again.
pub(crate) const CLAIM_RECHECK: Duration = Duration::from_secs(1);

/// Header counting deliveries that did not finish (classic queues, which
/// keep no count of their own).
pub(crate) const DELIVERIES_HEADER: &str = "x-celeriac-deliveries";

/// The count a quorum queue keeps itself: earlier deliveries of this message
/// that ended without an ack.
pub(crate) const BROKER_DELIVERIES_HEADER: &str = "x-delivery-count";

/// Where a delivery is on its way to running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Just received and decoded.
    Received,
    /// Due (it waited for its eta, if it had one within one delay unit).
    Due,
    /// Holds a slot (and its rate limiter's turn): about to start.
    Admitted,
}

/// What is known about one delivery, apart from its message.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryFacts {
    /// When the worker received it.
    pub(crate) received: DateTime<Utc>,
    /// The broker flags it as delivered before.
    pub(crate) redelivered: bool,
    /// Earlier deliveries that did not finish.
    pub(crate) earlier: u32,
    /// Whether the broker counts those itself (a quorum queue) or only
    /// celeriac's header does.
    pub(crate) counted_by_broker: bool,
    /// Whether its task id already has a final outcome; `None` until looked
    /// up (only when [`decide`] asks for it).
    pub(crate) already_done: Option<bool>,
    /// What claiming its row found; `None` until claimed (only when
    /// [`decide`] asks for it).
    pub(crate) claim: Option<Claim>,
}

impl DeliveryFacts {
    /// The facts a delivery carries (its flags and headers).
    pub(crate) fn of(delivery: &Delivery, received: DateTime<Utc>) -> Self {
        let (earlier, counted_by_broker) =
            earlier_deliveries(&delivery.properties, delivery.redelivered);
        DeliveryFacts {
            received,
            redelivered: delivery.redelivered,
            earlier,
            counted_by_broker,
            already_done: None,
            claim: None,
        }
    }
}

/// What the worker knows that bears on a delivery.
pub(crate) struct WorkerView<'a> {
    /// Task ids revoked.
    pub(crate) revocations: &'a Revocations,
    /// The tasks this worker runs.
    pub(crate) registry: &'a Registry,
    /// Deliveries without finishing after which a message is poison.
    pub(crate) max_deliveries: u32,
    /// The queue the delivery came from.
    pub(crate) queue: &'a str,
    /// Whether outcomes are recorded (a result backend is configured).
    pub(crate) records: bool,
}

/// What to do with a delivery at a stage.
#[derive(Debug, PartialEq)]
pub(crate) enum Disposition {
    /// Nothing stops it at this stage: on to the next, or run it.
    Run,
    /// Due within one delay unit: wait in memory until its eta, then
    /// decide again at [`Stage::Due`].
    Hold(Duration),
    /// It may have run already: look its id up, then decide again with
    /// [`DeliveryFacts::already_done`] known.
    CheckDone,
    /// It may come twice with one id: take its row in the result backend,
    /// then decide again with [`DeliveryFacts::claim`] known.
    Claim,
    /// It ends here, without running.
    End(End),
}

/// How a delivery ends without running.
#[derive(Debug, PartialEq)]
pub(crate) enum End {
    /// Revoked: REVOKED recorded, acked.
    Revoked(Stage),
    /// Expired before it ran: REVOKED recorded, acked.
    Expired,
    /// No handler for its task: FAILURE recorded, acked.
    UnknownTask,
    /// Not due yet: into the delay queues with this routing key, then acked.
    Redelay {
        /// How long it still waits.
        wait: Duration,
        /// Its routing key into the delay queues.
        routing_key: String,
    },
    /// Its id already has a final outcome (a redelivered copy, a second
    /// beat run or chord callback with the same id, found before it runs
    /// or while it waits for the copy that runs): acked, nothing recorded
    /// (a chord member's outcome is reported to its chord again).
    AlreadyDone,
    /// Redelivered from a classic queue: published again carrying the
    /// count of earlier deliveries, then acked; the copy runs.
    CountRedelivery {
        /// Earlier deliveries that did not finish.
        earlier: u32,
    },
    /// Delivered too often without finishing: FAILURE recorded,
    /// dead-lettered.
    Poison {
        /// Earlier deliveries that did not finish.
        earlier: u32,
    },
    /// Cannot be handled (a delay too long for the delay queues):
    /// dead-lettered with the reason. (A message that cannot be decoded
    /// never reaches [`decide`]: it is dead-lettered at once.)
    DeadLetter(String),
}

/// Decides what to do with the delivery of `msg` at `stage`.
pub(crate) fn decide(
    msg: &TaskMessage,
    stage: Stage,
    facts: &DeliveryFacts,
    view: &WorkerView<'_>,
) -> Disposition {
    use Disposition::{CheckDone, Claim as TakeRow, Hold, Run};
    let end = Disposition::End;
    // A redelivered copy may already have a final outcome (its worker died
    // after storing it, before the ack): looked up before anything that
    // would record another over it (a revoke, its expiry, a task unknown
    // here), which would also report a chord member that succeeded as
    // failed.
    if facts.redelivered {
        match facts.already_done {
            None => return CheckDone,
            Some(true) => return end(End::AlreadyDone),
            Some(false) => {}
        }
    }
    if view.revocations.is_revoked(&msg.id) {
        return end(End::Revoked(stage));
    }
    match stage {
        Stage::Received => {
            if msg.is_expired(facts.received) {
                return end(End::Expired);
            }
            let eta = msg.eta.map(|eta| eta.with_timezone(&Utc));
            if let Some(wait) = eta.and_then(|eta| delay::remaining(eta, facts.received)) {
                // Not due yet: back into the delay queues, not into memory.
                return end(match delay::routing_key(wait, view.queue) {
                    Ok(routing_key) => End::Redelay { wait, routing_key },
                    Err(e) => End::DeadLetter(e.to_string()),
                });
            }
            if view.registry.get(&msg.task).is_none() {
                return end(End::UnknownTask);
            }
            match eta.and_then(|eta| (eta - facts.received).to_std().ok()) {
                Some(wait) if !wait.is_zero() => Hold(wait),
                _ => Run,
            }
        }
        Stage::Due => {
            // (A redelivered message was looked up above. A beat run or a
            // chord's callback, which may come twice with one id, is looked
            // up when it claims its row, at `Stage::Admitted`.)
            if !facts.redelivered {
                return Run;
            }
            // A worker died (or lost its connection) holding it: counted, so
            // a message that kills every worker that runs it is
            // dead-lettered instead of looping forever.
            let earlier = facts.earlier;
            if earlier >= view.max_deliveries {
                end(End::Poison { earlier })
            } else if !facts.counted_by_broker {
                // A classic queue keeps no count: the copy carries it.
                end(End::CountRedelivery { earlier })
            } else {
                Run
            }
        }
        // Two copies that passed the look-up at once (a crash between
        // publishing a chord's callback and recording it sent; two beats
        // in a split brain): the one that takes the row runs, the other
        // waits, without its slot, until the row is final (then it ends
        // here) or free again (its holder died, or gave it back).
        Stage::Admitted if view.records && !msg.ignore_result && may_come_twice(msg) => {
            match &facts.claim {
                None => TakeRow,
                Some(Claim::Taken) => Run,
                Some(Claim::Done) => end(End::AlreadyDone),
                Some(Claim::Held(_)) => Hold(CLAIM_RECHECK),
            }
        }
        Stage::Admitted => Run,
    }
}

/// A message published again with the same id by design, not only
/// redelivered: a beat run (two beats in a split brain send the same
/// task id) or a chord's callback (published again after a crash).
fn may_come_twice(msg: &TaskMessage) -> bool {
    msg.extra_headers.contains_key(BEAT_ENTRY_HEADER)
        || msg.extra_headers.contains_key(CHORD_CALLBACK_HEADER)
}

fn count_header(props: &BasicProperties, name: &str) -> Option<u32> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

/// Earlier deliveries of a message that did not finish, and whether the
/// broker counts them itself (a quorum queue's `x-delivery-count`, added to
/// what earlier copies carried in celeriac's header) or only celeriac's
/// header does.
pub(crate) fn earlier_deliveries(props: &BasicProperties, redelivered: bool) -> (u32, bool) {
    let own = count_header(props, DELIVERIES_HEADER).unwrap_or(0);
    match count_header(props, BROKER_DELIVERIES_HEADER) {
        Some(n) if redelivered => (own.saturating_add(n), true),
        _ => (own + u32::from(redelivered), false),
    }
}

#[cfg(test)]
mod tests;
