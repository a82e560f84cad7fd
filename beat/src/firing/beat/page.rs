//! Reading the database schedule at start, one page of entries at a time,
//! each entry with its stored run state.
//!
//! On SQLite a page is read as a single row: SQLite builds the page as one
//! JSON array (`json_group_array`) that beat then parses. The SQLite driver
//! copies every value of every row and hands each row from its own thread
//! to the caller's: read row by row, 100,000 entries took about 1 s of the
//! load; the whole load now takes about half a second. The row also names
//! the page's last entry, so the next page is read while this one is
//! parsed. A page SQLite cannot build as JSON, or beat cannot parse (over
//! SQLite's 1 GB string limit, a value edited by hand to infinity), is read
//! row by row. PostgreSQL and MySQL decode rows where they arrive and keep
//! the plain queries (MySQL's `JSON_ARRAYAGG` is also cut at
//! `group_concat_max_len`).

use sea_orm::{ConnectionTrait, DbBackend, DbErr};
use serde::Deserialize;

use celeriac_common::backend::beat::{entry, state};
use celeriac_common::backend::statement;

use crate::firing::run_state::{self, RunState};
use crate::schedule::entry::Entry;
use crate::schedule::store::{Store, to_entry};

/// One page as read: the last name in it (`None` when there were no more
/// rows), and its entries, parsed or not yet.
pub(super) struct Fetched {
    pub(super) last: Option<String>,
    body: Body,
}

enum Body {
    /// The page as JSON, and the range it was read from.
    Json {
        text: String,
        after: Option<String>,
        limit: u64,
    },
    Parsed(Vec<(Entry, Option<RunState>)>),
}

/// Up to `limit` live entries named after `after` (from the first if `None`).
pub(super) async fn fetch(
    store: &Store,
    after: Option<&str>,
    limit: u64,
) -> Result<Fetched, DbErr> {
    if store.db().get_database_backend() != DbBackend::Sqlite {
        return fetch_rows(store, after, limit).await;
    }
    match fetch_json(store, after, limit).await {
        Ok(page) => Ok(page),
        // SQLite caps a string at 1 GB: a page of entries with megabytes
        // of arguments each is read row by row instead.
        Err(e) => {
            tracing::warn!(error = %e, "schedule page not readable as JSON, read row by row");
            fetch_rows(store, after, limit).await
        }
    }
}

impl Fetched {
    /// The page's entries in name order, each with its stored run state
    /// (an entry whose row does not read back is logged and left out).
    pub(super) async fn entries(
        self,
        store: &Store,
    ) -> Result<Vec<(Entry, Option<RunState>)>, DbErr> {
        match self.body {
            Body::Parsed(entries) => Ok(entries),
            Body::Json { text, after, limit } => match parse_json(&text) {
                Ok(entries) => Ok(entries),
                // A value JSON cannot carry (a REAL edited to infinity
                // comes out as 9.0e+999): the same range row by row.
                Err(e) => {
                    tracing::warn!(error = %e, "schedule page not readable as JSON, read row by row");
                    Ok(read_rows(store, after.as_deref(), limit).await?.0)
                }
            },
        }
    }
}

/// Two queries in the same key range: entries, then their states.
async fn fetch_rows(store: &Store, after: Option<&str>, limit: u64) -> Result<Fetched, DbErr> {
    let (entries, last) = read_rows(store, after, limit).await?;
    Ok(Fetched {
        last,
        body: Body::Parsed(entries),
    })
}

/// The entries of [`fetch_rows`] and the last name read.
async fn read_rows(
    store: &Store,
    after: Option<&str>,
    limit: u64,
) -> Result<(Vec<(Entry, Option<RunState>)>, Option<String>), DbErr> {
    let (entries, last) = store.load_page(after, limit).await?;
    let Some(last) = last else {
        return Ok((Vec::new(), None));
    };
    let mut states = run_state::load_range(store.db(), after, &last).await?;
    let entries = entries
        .into_iter()
        .map(|e| {
            let state = states.remove(&e.name);
            (e, state)
        })
        .collect();
    Ok((entries, Some(last)))
}

/// The page's last name, and the page as one JSON array of arrays (no
/// keys: a row is read by position into [`JsonRow`]). Column values stay
/// strings (JSON text columns included), so that one unreadable row is
/// left out by [`to_entry`] as on the other databases, not a failed load.
/// `$range` restricts the names; it must stay a plain `name > ?` for
/// SQLite to read a range of the key (an `? IS NULL OR` scans the table
/// for each page).
macro_rules! page_json {
    ($range:literal) => {
        concat!(
            "SELECT max(e.name), json_group_array(json_array(",
            "e.name, e.task, e.args, e.kwargs, e.trigger, e.options, e.workflow, e.tags, ",
            "e.misfire_grace_secs, e.coalesce, e.max_instances, e.enabled, e.anchor_at, ",
            "e.created_at, s.name IS NOT NULL, s.cursor_at, s.sending_at, s.last_run_at, ",
            "s.last_sent_at, s.last_task_id, s.next_run_at, s.total_runs, s.recent, ",
            "s.run_now_at)) ",
            "FROM (SELECT * FROM celeriac_beat_entries WHERE deleted = 0 ",
            $range,
            " ORDER BY name LIMIT ?) AS e ",
            "LEFT JOIN celeriac_beat_state AS s ON s.name = e.name"
        )
    };
}

async fn fetch_json(store: &Store, after: Option<&str>, limit: u64) -> Result<Fetched, DbErr> {
    let after_name = after.map(str::to_owned);
    let stmt = match after {
        None => statement(DbBackend::Sqlite, page_json!(""), vec![limit.into()]),
        Some(after) => statement(
            DbBackend::Sqlite,
            page_json!("AND name > ?"),
            vec![after.into(), limit.into()],
        ),
    };
    let Some(row) = store.db().query_one_raw(stmt).await? else {
        return Err(DbErr::RecordNotFound("an aggregate gave no row".into()));
    };
    let last: Option<String> = row.try_get_by_index(0)?;
    let text: String = row.try_get_by_index(1)?;
    Ok(Fetched {
        last,
        body: Body::Json {
            text,
            after: after_name,
            limit,
        },
    })
}

fn parse_json(text: &str) -> Result<Vec<(Entry, Option<RunState>)>, DbErr> {
    let rows: Vec<JsonRow> =
        serde_json::from_str(text).map_err(|e| DbErr::Custom(format!("schedule page: {e}")))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (entry, state) = r.into_models();
            to_entry(entry).map(|e| (e, state.map(RunState::from_model)))
        })
        .collect())
}

/// An entry row and its run state's as `page_json!` gives them, by
/// position (SQLite keeps booleans as 0 and 1; the state's columns are all
/// null when there is none).
#[derive(Deserialize)]
struct JsonRow {
    name: String,
    task: String,
    args: String,
    kwargs: String,
    trigger: String,
    options: String,
    workflow: Option<String>,
    tags: Option<String>,
    misfire_grace_secs: Option<f64>,
    coalesce: Option<i64>,
    max_instances: Option<i32>,
    enabled: i64,
    anchor_at: String,
    created_at: String,
    has_state: i64,
    cursor_at: Option<String>,
    sending_at: Option<String>,
    last_run_at: Option<String>,
    last_sent_at: Option<String>,
    last_task_id: Option<String>,
    next_run_at: Option<String>,
    total_runs: Option<i64>,
    recent: Option<String>,
    run_now_at: Option<String>,
}

impl JsonRow {
    /// The rows as sea-orm reads them (columns load does not use left at
    /// their defaults).
    fn into_models(self) -> (entry::Model, Option<state::Model>) {
        let state = (self.has_state != 0).then(|| state::Model {
            name: self.name.clone(),
            cursor_at: self.cursor_at,
            sending_at: self.sending_at,
            last_run_at: self.last_run_at,
            last_sent_at: self.last_sent_at,
            last_task_id: self.last_task_id,
            next_run_at: self.next_run_at,
            total_runs: self.total_runs.unwrap_or(0),
            recent: self.recent,
            run_now_at: self.run_now_at,
            updated_at: String::new(),
        });
        let entry = entry::Model {
            name: self.name,
            task: self.task,
            args: self.args,
            kwargs: self.kwargs,
            trigger: self.trigger,
            options: self.options,
            workflow: self.workflow,
            tags: self.tags,
            misfire_grace_secs: self.misfire_grace_secs,
            coalesce: self.coalesce.map(|c| c != 0),
            max_instances: self.max_instances,
            enabled: self.enabled != 0,
            deleted: false,
            anchor_at: self.anchor_at,
            revision: 0,
            created_at: self.created_at,
            updated_at: String::new(),
        };
        (entry, state)
    }
}

/// Every entry, read in pages of 7 by one reader or the other (tests
/// compare them).
#[cfg(test)]
pub(super) async fn read_all(
    store: &Store,
    json: bool,
) -> Result<std::collections::BTreeMap<String, (Entry, Option<RunState>)>, DbErr> {
    let mut out = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = if json {
            fetch_json(store, after.as_deref(), 7).await?
        } else {
            fetch_rows(store, after.as_deref(), 7).await?
        };
        let Some(last) = page.last.clone() else {
            return Ok(out);
        };
        for (e, s) in page.entries(store).await? {
            out.insert(e.name.clone(), (e, s));
        }
        after = Some(last);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use celeriac_common::testing::{DbKind, TestDatabase};
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::firing::run_state::RecentRun;
    use crate::leadership::lease::{Lease, LeaseStatus};
    use crate::schedule::entry::{Grace, SendOptions};
    use crate::trigger::TriggerSpec;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn trigger(spec: serde_json::Value) -> TriggerSpec {
        TriggerSpec::from_json(&spec).unwrap()
    }

    /// Entries using every column, states using every column, and rows
    /// the readers must leave out (removed, unreadable): the JSON page
    /// reads exactly what the row-by-row reader does, page after page.
    #[tokio::test]
    async fn a_json_page_reads_what_the_rows_hold() {
        let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
        let backend = db.migrated_backend().await.unwrap();
        let store = Store::new(backend.connection().clone());
        let now = t("2024-03-01T12:00:00Z");
        let mut entries = Vec::new();
        for i in 0..30 {
            let spec = match i % 3 {
                0 => json!({"type": "interval", "every": format!("{}s", i + 1)}),
                1 => json!({"type": "cron", "expr": "*/5 * * * *", "timezone": "Europe/Paris"}),
                _ => json!({"type": "date", "run_at": "2030-01-01T00:00:00+02:00"}),
            };
            let mut e = Entry::new(format!("e-{i:02}"), "tasks.t", trigger(spec));
            if i % 4 == 0 {
                e.args = vec![json!(i), json!("ünïcode \"quoted\"\n")];
                e.kwargs = json!({"k": [1, 2.5, null, true]})
                    .as_object()
                    .unwrap()
                    .clone();
            }
            if i % 5 == 0 {
                e.tags = vec!["nightly".into(), format!("t{i}")];
                e.options = SendOptions {
                    queue: Some("reports".into()),
                    ..SendOptions::default()
                };
            }
            e.firing.misfire_grace = (i % 6 == 0).then(|| Grace::from_secs_f64(2.5));
            e.firing.coalesce = [None, Some(true), Some(false)][i % 3];
            e.firing.max_instances = (i % 7 == 0).then_some(3);
            e.enabled = i % 8 != 0;
            entries.push(e);
        }
        let flow = crate::schedule::workflow::parse_json(
            &json!({
                "task": "tasks.a", "args": [1], "kwargs": {}, "options": {},
                "subtask_type": null, "immutable": false
            })
            .to_string(),
        )
        .unwrap();
        entries.push(Entry::with_workflow(
            "e-flow",
            flow,
            trigger(json!({"type": "interval", "every": "1h"})),
        ));
        store.add_many(&entries, now).await.unwrap();
        store.remove("e-03", now).await.unwrap();
        // Edited by hand into something that does not read back.
        backend
            .connection()
            .execute_unprepared(
                "UPDATE celeriac_beat_entries SET trigger = '{oops' WHERE name = 'e-04'",
            )
            .await
            .unwrap();
        let lease = Lease::new(
            backend.connection().clone(),
            "page-test",
            std::time::Duration::from_secs(60),
        );
        let LeaseStatus::Held(fence) = lease.try_acquire().await.unwrap() else {
            panic!("no lease");
        };
        let full = RunState {
            cursor_at: Some(t("2024-03-01T11:55:00Z")),
            sending_at: Some(t("2024-03-01T11:55:00.250Z")),
            last_run_at: Some(t("2024-03-01T11:50:00Z")),
            last_sent_at: Some(t("2024-03-01T11:50:00.012345Z")),
            last_task_id: Some(uuid::Uuid::new_v4()),
            next_run_at: Some(t("2024-03-01T12:00:00Z")),
            total_runs: 41,
            recent: vec![RecentRun {
                at: t("2024-03-01T11:50:00Z"),
                id: uuid::Uuid::new_v4(),
            }],
            run_now_at: None,
        };
        let sparse = RunState {
            total_runs: 2,
            ..RunState::default()
        };
        run_state::save(
            backend.connection(),
            &fence,
            &[
                ("e-01", &full),
                ("e-07", &sparse),
                ("e-29", &full),
                ("e-03", &full),
            ],
            &[],
            now,
        )
        .await
        .unwrap();
        store.request_run_now("e-07", now).await.unwrap();

        let json = read_all(&store, true).await.unwrap();
        let rows = read_all(&store, false).await.unwrap();
        assert_eq!(json, rows);
        assert_eq!(json.len(), 29, "all but the removed and the unreadable");
        assert!(!json.contains_key("e-03") && !json.contains_key("e-04"));
        assert_eq!(json["e-01"].1.as_ref(), Some(&full));
        assert_eq!(json["e-29"].1.as_ref(), Some(&full));
        let e07 = json["e-07"].1.as_ref().unwrap();
        assert_eq!((e07.total_runs, e07.run_now_at), (2, Some(now)));
        assert!(json["e-02"].1.is_none());
        assert!(json["e-flow"].0.workflow.is_some());
        let e00 = &json["e-00"].0;
        assert_eq!(e00, &{
            let mut e = entries[0].clone();
            e.created_at = Some(now);
            e.source = crate::schedule::entry::Source::Database;
            e
        });
    }

    /// A value JSON cannot carry (a grace edited by hand to infinity, which
    /// SQLite writes as 9.0e+999) sends that page to the row reader: every
    /// entry still loads, the edited one with an unlimited grace. A value
    /// neither reader can take (a BLOB in a text column) fails the read with
    /// the row reader's error, not a half-read page.
    #[tokio::test]
    async fn a_page_json_cannot_carry_is_read_row_by_row() {
        let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
        let backend = db.migrated_backend().await.unwrap();
        let store = Store::new(backend.connection().clone());
        let every = trigger(json!({"type": "interval", "every": "1h"}));
        let entries: Vec<Entry> = (0..12)
            .map(|i| Entry::new(format!("e-{i:02}"), "tasks.t", every.clone()))
            .collect();
        store
            .add_many(&entries, t("2024-03-01T12:00:00Z"))
            .await
            .unwrap();
        let db = backend.connection();
        db.execute_unprepared(
            "UPDATE celeriac_beat_entries SET misfire_grace_secs = 1e999 WHERE name = 'e-09'",
        )
        .await
        .unwrap();
        let all = read_all(&store, true).await.unwrap();
        assert_eq!(all.len(), 12);
        assert_eq!(all["e-09"].0.firing.misfire_grace, Some(Grace::Unlimited));

        db.execute_unprepared(
            "UPDATE celeriac_beat_entries SET args = X'5B315D' WHERE name = 'e-03'",
        )
        .await
        .unwrap();
        let err = match fetch(&store, None, 100).await {
            Ok(_) => panic!("a BLOB read as text"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("mismatched types"), "{err}");
    }

    /// Each page after the first reads a range of the key, not the whole
    /// table (an `? IS NULL OR name > ?` made the load quadratic: 1.1 s
    /// instead of 0.5 s at 100,000 entries), and each state is one lookup.
    #[tokio::test]
    async fn a_page_reads_a_range_of_the_key() {
        let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
        let backend = db.migrated_backend().await.unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", page_json!("AND name > ?"));
        let rows = backend
            .connection()
            .query_all_raw(statement(
                DbBackend::Sqlite,
                &sql,
                vec!["a".into(), 5u64.into()],
            ))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get_by_index::<String>(3).unwrap())
            .collect();
        let step = |prefix: &str| plan.iter().any(|d| d.starts_with(prefix));
        assert!(step("SEARCH celeriac_beat_entries"), "{plan:?}");
        assert!(!step("SCAN celeriac_beat_entries"), "{plan:?}");
        assert!(step("SEARCH s USING INDEX"), "{plan:?}");
    }
}
