//! Results expire on SQLite, PostgreSQL and MariaDB: final task rows done
//! before the cutoff go, in batches; rows still running or waiting stay,
//! and so do recent ones; chords go once their callback is sent and every
//! member reported, never while they wait for members; a group with no
//! chord recorded keeps no rows.

use celeriac_common::TaskState;
use celeriac_common::backend::chord::{ChordMember, NewChord};
use celeriac_common::backend::{ResultBackend, TaskOutcome, statement};
use celeriac_common::testing::{DbKind, TestDatabase, new_chord, unique};
use chrono::{Duration, Utc};
use sea_orm::ConnectionTrait;
use serde_json::json;

fn row(id: String, state: TaskState, done_ago: Option<Duration>) -> TaskOutcome {
    let mut o = TaskOutcome::new(id, "tasks.t", state);
    o.done_at = done_ago.map(|ago| Utc::now() - ago);
    o
}

fn members(group_id: &str, n: u32) -> Vec<ChordMember> {
    (0..n)
        .map(|i| ChordMember {
            group_id: group_id.to_owned(),
            task_id: format!("{group_id}-m{i}"),
            index: i,
            ok: true,
            result: Some(json!(i).to_string()),
        })
        .collect()
}

/// Member rows and parts held for `group`.
async fn chord_rows(backend: &ResultBackend, group: &str) -> (i64, i64) {
    let db = backend.connection();
    let count = |table: &str| {
        statement(
            db.get_database_backend(),
            &format!("SELECT COUNT(*) AS n FROM {table} WHERE group_id = ?"),
            vec![group.into()],
        )
    };
    let mut out = [0i64; 2];
    for (n, table) in out
        .iter_mut()
        .zip(["celeriac_chord_members", "celeriac_chord_parts"])
    {
        let row = db.query_one_raw(count(table)).await.expect("count");
        *n = row.expect("a row").try_get("", "n").expect("n");
    }
    (out[0], out[1])
}

async fn exists(backend: &ResultBackend, id: &str) -> bool {
    backend.get(id).await.expect("read").is_some()
}

async fn expires(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let day = Duration::days(1);
    let old = Some(day + Duration::hours(1));
    let cutoff = Utc::now() - day;

    // 2,500 old successes: more than two batches.
    let tag = unique("t");
    let many: Vec<TaskOutcome> = (0..2_500)
        .map(|i| row(format!("{tag}-{i}"), TaskState::Success, old))
        .collect();
    for chunk in many.chunks(500) {
        backend.store(chunk.to_vec()).await.expect("store");
    }
    let keep = [
        ("recent", TaskState::Success, Some(Duration::hours(1))),
        ("started", TaskState::Started, None),
        ("retrying", TaskState::Retry, old),
        ("pending", TaskState::Pending, None),
    ];
    let gone = [
        ("failed", TaskState::Failure, old),
        ("revoked", TaskState::Revoked, old),
    ];
    let id = |name: &str| format!("{tag}-{name}");
    let rows = keep
        .iter()
        .chain(&gone)
        .map(|(name, state, ago)| row(id(name), *state, *ago))
        .collect();
    backend.store(rows).await.expect("store");

    // A settled chord (callback sent), a complete one not yet marked sent,
    // a pending one, a failed one with members still to report, and
    // members of a group no chord row names.
    let (settled, unsent, pending, failed) =
        (new_chord(3), new_chord(2), new_chord(5), new_chord(3));
    // Larger than a purge's batch of members: deleted a batch at a time.
    let big = new_chord(10_001);
    for c in [&settled, &unsent, &pending, &failed, &big] {
        backend.create_chord(c).await.expect("create");
    }
    for part in members(&big.group_id, 10_001).chunks(2_000) {
        backend.members_done(part.to_vec()).await.expect("report");
    }
    assert!(
        backend
            .mark_callback_sent(&big.group_id)
            .await
            .expect("mark")
    );
    let report = |group: &NewChord, n| backend.members_done(members(&group.group_id, n));
    report(&settled, 3).await.expect("report");
    report(&unsent, 2).await.expect("report");
    report(&pending, 2).await.expect("report");
    let mut first = members(&failed.group_id, 1);
    first[0].ok = false;
    backend.members_done(first).await.expect("report");
    for c in [&settled, &failed] {
        assert!(backend.mark_callback_sent(&c.group_id).await.expect("mark"));
    }
    let stray = unique("stray");
    let answers = backend
        .members_done(members(&stray, 2))
        .await
        .expect("report");
    assert_eq!(answers, [None, None], "no chord recorded");
    assert_eq!(
        chord_rows(&backend, &stray).await,
        (0, 0),
        "nothing kept for it"
    );
    if backend.connection().get_database_backend() != sea_orm::DbBackend::MySql {
        assert!(
            chord_rows(&backend, &settled.group_id).await.1 > 0,
            "parts written"
        );
    }

    // Nothing is old enough yet for the chords: their times are now.
    let first = backend.purge_expired(cutoff).await.expect("purge");
    assert_eq!((first.tasks, first.chords), (2_502, 0));
    for (name, _, _) in &keep {
        assert!(exists(&backend, &id(name)).await, "{name} must stay");
    }
    for (name, _, _) in &gone {
        assert!(!exists(&backend, &id(name)).await, "{name} must go");
    }
    assert!(!exists(&backend, &id("0")).await);
    assert!(!exists(&backend, &id("2499")).await);

    // A cutoff after them: the settled chord goes with its members and
    // parts; the unsent, pending and failed ones stay whole.
    let later = Utc::now() + Duration::seconds(1);
    let second = backend.purge_expired(later).await.expect("purge");
    assert_eq!(second.chords, 2, "{second:?}");
    assert_eq!(chord_rows(&backend, &big.group_id).await, (0, 0));
    assert!(
        second.tasks >= 1,
        "the recent success is older than `later`"
    );
    assert!(
        backend
            .chord(&settled.group_id)
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(chord_rows(&backend, &settled.group_id).await, (0, 0));
    for (c, n) in [(&unsent, 2), (&pending, 2)] {
        assert!(backend.chord(&c.group_id).await.expect("read").is_some());
        let results = backend.chord_results(&c.group_id).await.expect("results");
        assert_eq!(results, (0..n).map(|i| json!(i)).collect::<Vec<_>>());
    }
    for name in ["started", "retrying", "pending"] {
        assert!(exists(&backend, &id(name)).await, "{name} must stay");
    }
    // The failed chord's late members still find it; once all have
    // reported, it expires too.
    let late = backend
        .members_done(members(&failed.group_id, 3)[1..].to_vec())
        .await
        .expect("report");
    assert!(late.iter().all(Option::is_some), "{late:?}");
    let third = backend.purge_expired(later).await.expect("purge");
    assert_eq!(third.chords, 1, "{third:?}");
    assert_eq!(chord_rows(&backend, &failed.group_id).await, (0, 0));

    // Nothing left to do: a second run deletes nothing.
    assert!(
        backend
            .purge_expired(later)
            .await
            .expect("purge")
            .is_empty()
    );
    drop(backend);
    db.drop_database().await;
}

/// Members of a group no chord row names, reported at once from two
/// pools (two processes' worth of connections): every report succeeds
/// (none deadlocks on another's rows) and no row is kept.
async fn unrecorded_members_leave_nothing(kind: DbKind) {
    let db = TestDatabase::create(kind).await.expect("test database");
    let backend = db.migrated_backend().await.expect("migrated backend");
    let other = ResultBackend::connect(&db.url).await.expect("second pool");
    let group = unique("stray");
    let reports = members(&group, 40).into_iter().enumerate().map(|(i, m)| {
        let b = if i % 2 == 0 { &backend } else { &other }.clone();
        tokio::spawn(async move { b.member_done(m).await })
    });
    for r in futures_util::future::join_all(reports).await {
        assert_eq!(r.expect("task").expect("report"), None);
    }
    assert_eq!(chord_rows(&backend, &group).await, (0, 0));
    drop((backend, other));
    db.drop_database().await;
}

celeriac_common::on_each_database!(expires, unrecorded_members_leave_nothing);
