//! Every branch of [`decide`], without a broker.

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
            records: true,
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
        claim: None,
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
    // A redelivered copy is looked up first: one that already ended keeps
    // its outcome.
    let mut facts = redelivered(9, false);
    let d = decide(&msg(KNOWN), Stage::Received, &facts, &w.view());
    assert_eq!(d, Disposition::CheckDone);
    facts.already_done = Some(true);
    let d = decide(&msg(KNOWN), Stage::Received, &facts, &w.view());
    assert_eq!(d, end(End::AlreadyDone));
    facts.already_done = Some(false);
    let d = decide(&msg(KNOWN), Stage::Received, &facts, &w.view());
    assert_eq!(d, end(End::Revoked(Stage::Received)));
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
    // A redelivered copy whose first delivery ran and stored its outcome
    // before its worker died: acked as done, not recorded REVOKED over it.
    let mut facts = redelivered(1, false);
    facts.already_done = Some(true);
    assert_eq!(
        decide(&m, Stage::Received, &facts, &w.view()),
        end(End::AlreadyDone)
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

#[test]
fn a_message_that_may_come_twice_takes_its_row_before_it_runs() {
    let w = World::new();
    let mut m = msg(KNOWN);
    m.extra_headers
        .insert(CHORD_CALLBACK_HEADER.into(), Value::String("g".into()));
    let mut facts = fresh();
    // Looked up by the claim, once it holds a slot, not before.
    for stage in [Stage::Received, Stage::Due] {
        assert_eq!(decide(&m, stage, &facts, &w.view()), Disposition::Run);
    }
    assert_eq!(
        decide(&m, Stage::Admitted, &facts, &w.view()),
        Disposition::Claim
    );
    facts.claim = Some(Claim::Taken);
    assert_eq!(
        decide(&m, Stage::Admitted, &facts, &w.view()),
        Disposition::Run
    );
    facts.claim = Some(Claim::Done);
    assert_eq!(
        decide(&m, Stage::Admitted, &facts, &w.view()),
        end(End::AlreadyDone),
        "a second copy of a callback that ran does not run"
    );
    facts.claim = Some(Claim::Held("w2".into()));
    assert_eq!(
        decide(&m, Stage::Admitted, &facts, &w.view()),
        Disposition::Hold(CLAIM_RECHECK)
    );
    // A beat run too.
    let mut beat = msg(KNOWN);
    beat.extra_headers
        .insert(BEAT_ENTRY_HEADER.into(), Value::String("e".into()));
    assert_eq!(
        decide(&beat, Stage::Admitted, &fresh(), &w.view()),
        Disposition::Claim
    );
    // Nothing to claim: no result backend, a result ignored (no row would
    // ever end the claim), an ordinary task.
    let mut view = w.view();
    view.records = false;
    assert_eq!(
        decide(&m, Stage::Admitted, &fresh(), &view),
        Disposition::Run
    );
    let mut ignored = m.clone();
    ignored.ignore_result = true;
    assert_eq!(
        decide(&ignored, Stage::Admitted, &fresh(), &w.view()),
        Disposition::Run
    );
    assert_eq!(
        decide(&msg(KNOWN), Stage::Admitted, &fresh(), &w.view()),
        Disposition::Run
    );
}
