//! What happens to a delivery, decided without acting: [`decide`] maps what
//! is known about a delivery (the message, [`DeliveryFacts`], the worker's
//! [`WorkerView`]) to a [`Disposition`]. It is pure, so every branch is
//! tested without a broker; `carry_out` acts on what it decides.
//!
//! A delivery is decided at three [`Stage`]s, since some facts change while
//! it waits: a revoke can arrive while it waits for its eta or for a slot,
//! and whether it already ran is looked up in the result backend only when
//! the decision asks for it ([`Disposition::CheckDone`]).

use crate::registry::Registry;
use crate::revoke::Revocations;
use celeriac_common::delay;
use celeriac_common::protocol::TaskMessage;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use std::time::Duration;

/// Header beat puts on the runs it sends (their ids are deterministic).
const BEAT_ENTRY_HEADER: &str = "beat_entry";

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
    /// Its id already has a final outcome (a redelivered copy, or a second
    /// beat run with the same id): acked, nothing recorded.
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
    use Disposition::{CheckDone, Hold, Run};
    let end = Disposition::End;
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
            // A redelivered message may have run already; a beat run may be
            // a second copy of one that already finished (two beats in a
            // split brain send the same task id).
            let beat_run = msg.extra_headers.contains_key(BEAT_ENTRY_HEADER);
            if facts.redelivered || beat_run {
                match facts.already_done {
                    None => return CheckDone,
                    Some(true) => return end(End::AlreadyDone),
                    Some(false) => {}
                }
            }
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
        Stage::Admitted => Run,
    }
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
mod tests {
    use super::*;
    use chrono::TimeZone;
    use lapin::types::FieldTable;
    use serde_json::Value;
    use std::convert::Infallible;

    const KNOWN: &str = "tasks.known";

    struct World {
        revocations: Revocations,
        registry: Registry,
    }

    impl World {
        fn new() -> Self {
            let mut registry = Registry::default();
            registry.insert_raw(KNOWN, |_, _, _| async { Ok::<_, Infallible>(Value::Null) });
            World {
                revocations: Revocations::default(),
                registry,
            }
        }

        fn view(&self) -> WorkerView<'_> {
            WorkerView {
                revocations: &self.revocations,
                registry: &self.registry,
                max_deliveries: 5,
                queue: "q",
            }
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn msg(task: &str) -> TaskMessage {
        TaskMessage::new(task, vec![], Default::default()).with_id("id-1")
    }

    fn due_in(ms: i64) -> TaskMessage {
        let mut m = msg(KNOWN);
        m.eta = Some((now() + chrono::Duration::milliseconds(ms)).fixed_offset());
        m
    }

    fn fresh() -> DeliveryFacts {
        DeliveryFacts {
            received: now(),
            redelivered: false,
            earlier: 0,
            counted_by_broker: false,
            already_done: None,
        }
    }

    fn redelivered(earlier: u32, counted_by_broker: bool) -> DeliveryFacts {
        DeliveryFacts {
            redelivered: true,
            earlier,
            counted_by_broker,
            ..fresh()
        }
    }

    fn end(e: End) -> Disposition {
        Disposition::End(e)
    }

    #[test]
    fn a_fresh_due_message_runs_at_every_stage() {
        let w = World::new();
        for stage in [Stage::Received, Stage::Due, Stage::Admitted] {
            assert_eq!(
                decide(&msg(KNOWN), stage, &fresh(), &w.view()),
                Disposition::Run
            );
        }
    }

    #[test]
    fn revoked_at_any_stage() {
        let w = World::new();
        w.revocations.revoke("id-1");
        for stage in [Stage::Received, Stage::Due, Stage::Admitted] {
            let d = decide(&msg(KNOWN), stage, &fresh(), &w.view());
            assert_eq!(d, end(End::Revoked(stage)));
        }
        // Before anything else: even a redelivered copy is not looked up.
        let d = decide(&msg(KNOWN), Stage::Due, &redelivered(9, false), &w.view());
        assert_eq!(d, end(End::Revoked(Stage::Due)));
    }

    #[test]
    fn expired_before_it_was_received() {
        let w = World::new();
        let mut m = msg(KNOWN);
        m.expires = Some((now() - chrono::Duration::seconds(1)).fixed_offset());
        assert_eq!(
            decide(&m, Stage::Received, &fresh(), &w.view()),
            end(End::Expired)
        );
        m.expires = Some((now() + chrono::Duration::seconds(1)).fixed_offset());
        assert_eq!(
            decide(&m, Stage::Received, &fresh(), &w.view()),
            Disposition::Run
        );
    }

    #[test]
    fn not_due_goes_back_to_the_delay_queues() {
        let w = World::new();
        let wait = Duration::from_secs(10);
        let routing_key = delay::routing_key(wait, "q").expect("key");
        let d = decide(&due_in(10_000), Stage::Received, &fresh(), &w.view());
        assert_eq!(d, end(End::Redelay { wait, routing_key }));
        // Even for a task this worker does not know: a later one may.
        let mut unknown = due_in(10_000);
        unknown.task = "tasks.unknown".into();
        let d = decide(&unknown, Stage::Received, &fresh(), &w.view());
        assert!(matches!(d, Disposition::End(End::Redelay { .. })), "{d:?}");
    }

    #[test]
    fn a_delay_too_long_is_dead_lettered() {
        let w = World::new();
        let ten_years = 10 * 366 * 24 * 3600 * 1000;
        let d = decide(&due_in(ten_years), Stage::Received, &fresh(), &w.view());
        match d {
            Disposition::End(End::DeadLetter(reason)) => {
                assert!(
                    reason.contains("exceeds the longest supported delay"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn due_within_one_delay_unit_is_held_in_memory() {
        let w = World::new();
        let d = decide(&due_in(30), Stage::Received, &fresh(), &w.view());
        assert_eq!(d, Disposition::Hold(Duration::from_millis(30)));
        // Past its eta: runs now.
        let d = decide(&due_in(-30), Stage::Received, &fresh(), &w.view());
        assert_eq!(d, Disposition::Run);
    }

    #[test]
    fn an_unknown_task_fails() {
        let w = World::new();
        let d = decide(&msg("tasks.unknown"), Stage::Received, &fresh(), &w.view());
        assert_eq!(d, end(End::UnknownTask));
    }

    #[test]
    fn a_redelivery_is_looked_up_then_counted() {
        let w = World::new();
        let m = msg(KNOWN);
        let mut facts = redelivered(1, false);
        assert_eq!(
            decide(&m, Stage::Due, &facts, &w.view()),
            Disposition::CheckDone
        );
        facts.already_done = Some(true);
        assert_eq!(
            decide(&m, Stage::Due, &facts, &w.view()),
            end(End::AlreadyDone)
        );
        // Not done, from a classic queue: a copy carries the count.
        facts.already_done = Some(false);
        let counted = end(End::CountRedelivery { earlier: 1 });
        assert_eq!(decide(&m, Stage::Due, &facts, &w.view()), counted);
        // A quorum queue counts it itself: it runs.
        facts.counted_by_broker = true;
        assert_eq!(decide(&m, Stage::Due, &facts, &w.view()), Disposition::Run);
    }

    #[test]
    fn a_beat_run_is_looked_up_even_on_first_delivery() {
        let w = World::new();
        let mut m = msg(KNOWN);
        m.extra_headers
            .insert(BEAT_ENTRY_HEADER.into(), Value::String("nightly".into()));
        let mut facts = fresh();
        assert_eq!(
            decide(&m, Stage::Due, &facts, &w.view()),
            Disposition::CheckDone
        );
        facts.already_done = Some(false);
        assert_eq!(decide(&m, Stage::Due, &facts, &w.view()), Disposition::Run);
        facts.already_done = Some(true);
        assert_eq!(
            decide(&m, Stage::Due, &facts, &w.view()),
            end(End::AlreadyDone)
        );
    }

    #[test]
    fn poison_after_max_deliveries() {
        let w = World::new();
        for counted_by_broker in [false, true] {
            let facts = DeliveryFacts {
                already_done: Some(false),
                ..redelivered(5, counted_by_broker)
            };
            let d = decide(&msg(KNOWN), Stage::Due, &facts, &w.view());
            assert_eq!(d, end(End::Poison { earlier: 5 }));
        }
        let facts = DeliveryFacts {
            already_done: Some(false),
            ..redelivered(4, true)
        };
        let d = decide(&msg(KNOWN), Stage::Due, &facts, &w.view());
        assert_eq!(d, Disposition::Run);
    }

    #[test]
    fn earlier_deliveries_add_both_counts() {
        let props = |headers: &[(&str, i64)]| {
            let mut t = FieldTable::default();
            for (k, v) in headers {
                t.insert((*k).into(), AMQPValue::LongLongInt(*v));
            }
            BasicProperties::default().with_headers(t)
        };
        assert_eq!(earlier_deliveries(&props(&[]), false), (0, false));
        assert_eq!(earlier_deliveries(&props(&[]), true), (1, false));
        let classic = props(&[(DELIVERIES_HEADER, 2)]);
        assert_eq!(earlier_deliveries(&classic, true), (3, false));
        let quorum = props(&[(DELIVERIES_HEADER, 2), (BROKER_DELIVERIES_HEADER, 1)]);
        assert_eq!(earlier_deliveries(&quorum, true), (3, true));
        // Not redelivered: the broker's count is of no earlier failure.
        assert_eq!(earlier_deliveries(&quorum, false), (2, false));
    }
}
