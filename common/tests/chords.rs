//! The chord counter on SQLite, PostgreSQL and MariaDB: concurrent reports
//! complete a chord exactly once, a duplicate counts once, a failure claims
//! the chord once, and 10,000 members are counted quickly.

use celeriac_common::TaskState;
use celeriac_common::backend::chord::{
    ChordAction, ChordMember, ChordProgress, ChordState, NewChord,
};
use celeriac_common::backend::{ResultBackend, TaskOutcome};
use celeriac_common::testing::{DbKind, TestDatabase, new_chord, unique};
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::time::{Duration, Instant};

async fn backend(kind: DbKind) -> (TestDatabase, ResultBackend) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    (db, backend)
}

fn member(chord: &NewChord, i: u32, ok: bool) -> ChordMember {
    ChordMember {
        group_id: chord.group_id.clone(),
        task_id: format!("{}-m{i}", chord.group_id),
        index: i,
        ok,
        result: None,
    }
}

/// The callback's arguments of the chord recorded under `group_id`.
async fn arguments(backend: &ResultBackend, group_id: &str) -> Vec<serde_json::Value> {
    let record = backend.chord(group_id).await.expect("read").expect("row");
    backend
        .callback_arguments(&record)
        .await
        .expect("arguments")
}

fn claims(progress: &[Option<ChordProgress>]) -> usize {
    progress
        .iter()
        .flatten()
        .filter(|p| p.action() != ChordAction::Nothing)
        .count()
}

/// 50 members reported at once from 50 tasks over two pools (two
/// processes' worth of connections): one of them completes the chord.
async fn concurrent_reports_fire_once(kind: DbKind) {
    let (db, first) = backend(kind).await;
    let second = ResultBackend::connect(&db.url).await.expect("second pool");
    let chord = new_chord(50);
    assert!(first.create_chord(&chord).await.expect("create"));
    assert!(
        !first.create_chord(&chord).await.expect("again"),
        "idempotent"
    );
    let tasks = (0..50u32).map(|i| {
        let backend = if i % 2 == 0 { &first } else { &second }.clone();
        let m = member(&chord, i, true);
        tokio::spawn(async move {
            // Half the members report twice, as after a redelivery.
            let mut out = vec![backend.member_done(m.clone()).await.expect("report")];
            if i % 2 == 0 {
                out.push(backend.member_done(m).await.expect("report again"));
            }
            out
        })
    });
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let claimants: Vec<_> = all
        .iter()
        .flatten()
        .filter(|p| p.action() == ChordAction::SendCallback)
        .map(|p| p.chord.fired_by.clone())
        .collect();
    assert!(!claimants.is_empty(), "someone completed the chord");
    assert!(
        claimants.windows(2).all(|w| w[0] == w[1]),
        "one member claimed it: {claimants:?}"
    );
    let record = first
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (50, ChordState::Complete));
    assert!(
        first
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    assert!(
        !first
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    let again = first
        .member_done(ChordMember {
            task_id: record.fired_by.clone().expect("fired_by"),
            ..member(&chord, 0, true)
        })
        .await
        .expect("report")
        .expect("chord");
    assert!(again.claimed, "the claimant is told again");
    assert_eq!(again.action(), ChordAction::Nothing, "but it was sent");
    let members = first.chord_members(&chord.group_id).await.expect("members");
    assert_eq!(members.len(), 50);
    assert!(members.iter().enumerate().all(|(i, m)| m.0 as usize == i));
    db.drop_database().await;
}

/// Duplicates, out of order, a failure, size 1 and an unknown chord.
async fn sequences(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    // Out of order, one duplicate: fires at the third distinct member.
    let chord = new_chord(3);
    backend.create_chord(&chord).await.expect("create");
    // Member 0 carries its result; 1 was reported without one and has a
    // task row (read from there); 2 has neither (null).
    let mut row = TaskOutcome::new(format!("{}-m1", chord.group_id), "t", TaskState::Success);
    row.result = Some(json!({"from": "row"}));
    backend.store(vec![row]).await.expect("store");
    let mut fired = Vec::new();
    for i in [2, 2, 0, 1] {
        let result = (i == 0).then(|| r#"{"from":"member"}"#.to_owned());
        let p = backend
            .member_done(ChordMember {
                result,
                ..member(&chord, i, true)
            })
            .await
            .expect("report")
            .expect("chord");
        fired.push(p.action());
    }
    use ChordAction::{FailCallback, Nothing, SendCallback};
    assert_eq!(fired, [Nothing, Nothing, Nothing, SendCallback]);
    let results = backend
        .chord_results(&chord.group_id)
        .await
        .expect("results");
    assert_eq!(
        results,
        [
            json!({"from": "member"}),
            json!({"from": "row"}),
            json!(null)
        ],
        "by index, from the member row, else the task row"
    );

    // Every member with its result (the common case, gathered in parts on
    // PostgreSQL and SQLite): by index, whatever the order of
    // the reports and of the task ids.
    let chord = new_chord(12);
    let reports = (0..12u32).rev().map(|i| ChordMember {
        task_id: format!("{}-{}", chord.group_id, (b'a' + (i * 7 % 12) as u8) as char),
        result: Some(json!({"i": i, "text": "a, b"}).to_string()),
        ..member(&chord, i, true)
    });
    backend.create_chord(&chord).await.expect("create");
    backend
        .members_done(reports.collect())
        .await
        .expect("report");
    let results = backend
        .chord_results(&chord.group_id)
        .await
        .expect("results");
    let expected: Vec<_> = (0..12).map(|i| json!({"i": i, "text": "a, b"})).collect();
    assert_eq!(results, expected);
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        arguments(&backend, &chord.group_id).await,
        expected,
        "from the parts too"
    );

    // Members that share an index (sent without a group_index): by task id.
    let tied = new_chord(3);
    backend.create_chord(&tied).await.expect("create");
    let reports = ["c", "a", "b"].map(|id| ChordMember {
        task_id: format!("{}-{id}", tied.group_id),
        result: Some(json!(id.to_uppercase()).to_string()),
        ..member(&tied, 0, true)
    });
    backend.members_done(reports.into()).await.expect("report");
    assert_eq!(
        arguments(&backend, &tied.group_id).await,
        [json!("A"), json!("B"), json!("C")]
    );
    // Expired once its callback is sent: the chord, its member rows and
    // its parts. The tied chord, complete but its callback not marked
    // sent, stays.
    assert!(
        backend
            .mark_callback_sent(&chord.group_id)
            .await
            .expect("mark")
    );
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let purged = backend.purge_expired(later).await.expect("purge");
    assert!(purged.chords >= 1, "{purged:?}");
    assert!(backend.chord(&tied.group_id).await.expect("read").is_some());
    assert!(
        backend
            .chord(&chord.group_id)
            .await
            .expect("read")
            .is_none()
    );
    let left = backend
        .callback_arguments(&record)
        .await
        .expect("arguments");
    assert!(left.is_empty(), "{left:?}");
    let none = backend.chord_results(&new_chord(1).group_id).await;
    assert_eq!(none.expect("results"), Vec::<serde_json::Value>::new());

    // A failed member fails the chord once; later successes do not complete it.
    let chord = new_chord(3);
    backend.create_chord(&chord).await.expect("create");
    let batch = vec![
        member(&chord, 0, true),
        member(&chord, 1, false),
        member(&chord, 2, true),
    ];
    let progress = backend.members_done(batch.clone()).await.expect("batch");
    let actions: Vec<_> = progress.iter().flatten().map(|p| p.action()).collect();
    assert_eq!(actions, [Nothing, FailCallback, Nothing]);
    let progress = backend.members_done(batch).await.expect("batch again");
    assert_eq!(claims(&progress), 1, "redelivered claimant is told again");
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (3, ChordState::Failed));

    // A failed copy of a member already counted as a success does not fail
    // the chord, also when it comes in one batch with new members; a
    // repeat within one batch counts once.
    let chord = new_chord(4);
    backend.create_chord(&chord).await.expect("create");
    backend
        .member_done(member(&chord, 0, true))
        .await
        .expect("report");
    let batch = vec![
        member(&chord, 1, true),
        member(&chord, 0, false),
        member(&chord, 2, true),
        member(&chord, 2, true),
    ];
    let progress = backend.members_done(batch).await.expect("batch");
    assert_eq!(claims(&progress), 0);
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (3, ChordState::Pending));

    // Size 1.
    let chord = new_chord(1);
    backend.create_chord(&chord).await.expect("create");
    let p = backend
        .member_done(member(&chord, 0, true))
        .await
        .expect("report")
        .expect("chord");
    assert_eq!(p.action(), SendCallback);

    // No chord recorded (a chord sent by a client that keeps no counter here).
    let unknown = new_chord(1);
    assert!(
        backend
            .member_done(member(&unknown, 0, true))
            .await
            .expect("report")
            .is_none()
    );
    // An empty header is refused.
    assert!(backend.create_chord(&new_chord(0)).await.is_err());
    db.drop_database().await;
}

/// 10,000 members, reported in batches of 100 from 4 tasks at once.
async fn ten_thousand_members(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    let chord = new_chord(10_000);
    backend.create_chord(&chord).await.expect("create");
    let started = Instant::now();
    let workers = (0..4u32).map(|w| {
        let backend = backend.clone();
        let members: Vec<_> = (0..10_000u32)
            .filter(|i| i % 4 == w)
            .map(|i| ChordMember {
                result: Some(i.to_string()),
                ..member(&chord, i, true)
            })
            .collect();
        tokio::spawn(async move {
            let mut claimed = 0;
            for batch in members.chunks(100) {
                let p = backend.members_done(batch.to_vec()).await.expect("batch");
                claimed += claims(&p);
            }
            claimed
        })
    });
    let mut claimed = 0;
    for w in workers {
        claimed += w.await.expect("task");
    }
    let took = started.elapsed();
    eprintln!("{kind:?}: 10,000 members counted in {took:?}");
    assert_eq!(claimed, 1);
    let record = backend
        .chord(&chord.group_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!((record.done, record.state), (10_000, ChordState::Complete));
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // One part a report where the database names the rows it inserted.
    let parts = backend
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            backend.connection().get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM celeriac_chord_parts WHERE group_id = '{}'",
                chord.group_id
            ),
        ))
        .await
        .expect("count parts")
        .expect("a row");
    let parts: i64 = parts.try_get("", "n").expect("n");
    assert_eq!(parts, if kind == DbKind::Mysql { 0 } else { 100 });
    // The callback's arguments, by index, from the parts (PostgreSQL,
    // SQLite) or the member rows (MySQL): the same either way.
    let expected: Vec<_> = (0..10_000).map(|i| json!(i)).collect();
    let started = Instant::now();
    let arguments = backend
        .callback_arguments(&record)
        .await
        .expect("arguments");
    eprintln!(
        "{kind:?}: callback arguments read in {:?}",
        started.elapsed()
    );
    assert_eq!(arguments, expected);
    assert_eq!(
        backend.chord_results(&chord.group_id).await.expect("rows"),
        expected
    );
    db.drop_database().await;
}

/// Outcomes stored and members reported in one transaction where the
/// database allows it (not MySQL, not with a RETRY in the batch).
async fn stored_and_reported_together(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    let chord = new_chord(2);
    backend.create_chord(&chord).await.expect("create");
    let members = [member(&chord, 0, true), member(&chord, 1, true)];
    let outcomes: Vec<_> = members
        .iter()
        .map(|m| TaskOutcome::new(m.task_id.clone(), "t", TaskState::Success))
        .collect();
    let mut retry = TaskOutcome::new(unique("r"), "t", TaskState::Retry);
    retry.retries = 1;
    let with_retry = [outcomes.clone(), vec![retry]].concat();
    let apart = backend
        .store_and_report(&with_retry, &members)
        .await
        .expect("with a retry");
    assert!(apart.is_none(), "a RETRY goes apart");
    let together = backend
        .store_and_report(&outcomes, &members)
        .await
        .expect("together");
    if kind == DbKind::Mysql {
        assert!(together.is_none(), "MySQL goes apart");
        assert!(
            backend
                .get(&members[0].task_id)
                .await
                .expect("get")
                .is_none()
        );
    } else {
        let answers = together.expect("one transaction");
        assert_eq!(claims(&answers), 1);
        let ids = [members[0].task_id.clone(), members[1].task_id.clone()];
        let stored = backend.get_many(&ids).await.expect("get");
        assert!(
            stored
                .iter()
                .all(|r| r.as_ref().is_some_and(|r| r.state == TaskState::Success))
        );
        let record = backend
            .chord(&chord.group_id)
            .await
            .expect("read")
            .expect("row");
        assert_eq!((record.done, record.state), (2, ChordState::Complete));
    }
    db.drop_database().await;
}

/// Two copies of the last member in one batch (a retry or chain step
/// published twice, a redelivery): one claimant, so one callback.
async fn two_copies_of_the_claimant_in_one_batch_claim_once(kind: DbKind) {
    let (db, backend) = backend(kind).await;
    let chord = new_chord(1);
    backend.create_chord(&chord).await.expect("create");
    let m = member(&chord, 0, true);
    let answers = backend
        .members_done(vec![m.clone(), m])
        .await
        .expect("report");
    let actions: Vec<ChordAction> = answers.iter().flatten().map(|p| p.action()).collect();
    assert_eq!(
        actions,
        [ChordAction::SendCallback, ChordAction::Nothing],
        "{kind:?}"
    );
    db.drop_database().await;
}

celeriac_common::on_each_database!(
    two_copies_of_the_claimant_in_one_batch_claim_once,
    concurrent_reports_fire_once,
    sequences,
    stored_and_reported_together,
    ten_thousand_members
);
