//! The database schedule (`celeriac_beat_entries`) and its version counter.
//!
//! Every change runs in one transaction that first bumps the single row of
//! `celeriac_beat_meta` (`version = version + 1`) and stamps the changed
//! entry with the new version as its `revision`. The row lock makes changes
//! commit in version order, so a running beat that polls the version once
//! every half second and then reads `WHERE revision > last_seen` sees every
//! change exactly once, whatever the size of the schedule. Removed entries
//! stay as tombstones (`deleted = true`) so their removal is seen the same way.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::{Map, Value};

use celeriac_common::backend::beat::{entry, meta, state};

use crate::clock::{format_instant, parse_instant};
use crate::schedule::entry::{Entry, FiringOverrides, Grace, SendOptions, Source};
use crate::trigger::TriggerSpec;
use celeriac_common::backend::statement;

/// A change to the database schedule, as a running beat sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryChange {
    /// Added or modified (paused and resumed included), with when its row
    /// was last written (`None` if that does not read back).
    Upsert(Box<Entry>, Option<DateTime<Utc>>),
    /// Removed.
    Removed(String),
}

/// A schedule operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An add for a name that is taken.
    #[error("entry \"{0}\" already exists (use `schedule modify` to change it)")]
    Exists(String),
    /// An operation on a name that is not in the database schedule.
    #[error("unknown entry \"{0}\"")]
    Unknown(String),
    /// The database failed.
    #[error("schedule database query failed")]
    Db(#[from] DbErr),
}

/// The database schedule.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// A store on `db` (beat's tables must exist: `celeriac migrate`).
    pub fn new(db: DatabaseConnection) -> Store {
        Store { db }
    }

    /// The connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The schedule version: it changes whenever the database schedule does.
    pub async fn version(&self) -> Result<i64, DbErr> {
        Ok(meta::Entity::find_by_id(1)
            .one(&self.db)
            .await?
            .map_or(0, |m| m.version))
    }

    /// Every live entry, and the version they are current as of (read first,
    /// so later changes are all above it).
    pub async fn load(&self) -> Result<(i64, Vec<Entry>), DbErr> {
        let version = self.version().await?;
        let rows = entry::Entity::find()
            .filter(entry::Column::Deleted.eq(false))
            .all(&self.db)
            .await?;
        Ok((version, rows.into_iter().filter_map(to_entry).collect()))
    }

    /// One page of live entries in name order, after `after`: the entries
    /// and the last name read (`None` when there are no more rows).
    pub async fn load_page(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<Entry>, Option<String>), DbErr> {
        let mut query = entry::Entity::find()
            .filter(entry::Column::Deleted.eq(false))
            .order_by_asc(entry::Column::Name)
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(entry::Column::Name.gt(after));
        }
        let rows = query.all(&self.db).await?;
        let last = rows.last().map(|m| m.name.clone());
        Ok((rows.into_iter().filter_map(to_entry).collect(), last))
    }

    /// Every change with a revision above `revision`, oldest first.
    pub async fn changes_since(&self, revision: i64) -> Result<Vec<EntryChange>, DbErr> {
        let rows = entry::Entity::find()
            .filter(entry::Column::Revision.gt(revision))
            .order_by_asc(entry::Column::Revision)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|m| {
                if m.deleted {
                    Some(EntryChange::Removed(m.name))
                } else {
                    let changed_at = parse_instant(&m.updated_at);
                    to_entry(m).map(|e| EntryChange::Upsert(Box::new(e), changed_at))
                }
            })
            .collect())
    }

    /// One live entry.
    pub async fn get(&self, name: &str) -> Result<Option<Entry>, DbErr> {
        Ok(entry::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .filter(|m| !m.deleted)
            .and_then(to_entry))
    }

    /// Adds a new entry (its run state starts fresh). Its `created_at` and
    /// `anchor` are set to `now`.
    pub async fn add(&self, entry: &Entry, now: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let revision = bump(&txn).await?;
        let existing = entry::Entity::find_by_id(entry.name.clone())
            .one(&txn)
            .await?;
        if existing.as_ref().is_some_and(|m| !m.deleted) {
            return Err(StoreError::Exists(entry.name.clone()));
        }
        state::Entity::delete_by_id(entry.name.clone())
            .exec(&txn)
            .await?;
        let mut entry = entry.clone();
        entry.created_at = Some(now);
        entry.anchor = now.trunc_subsecs(0);
        let row = to_active(&entry, revision, now);
        if existing.is_some() {
            row.update(&txn).await?;
        } else {
            row.insert(&txn).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Adds many new entries in one transaction (an import); fails, adding
    /// none, if any name is taken. Each keeps its own `anchor`.
    pub async fn add_many(&self, entries: &[Entry], now: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let revision = bump(&txn).await?;
        for chunk in entries.chunks(50) {
            let rows = chunk.iter().map(|e| {
                let mut e = e.clone();
                e.created_at = Some(now);
                to_active(&e, revision, now)
            });
            entry::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Replaces an existing entry (same name). When its trigger changes, so
    /// does its anchor (`now`).
    pub async fn modify(&self, entry: &Entry, now: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let revision = bump(&txn).await?;
        let Some(old) = live(&txn, &entry.name).await? else {
            return Err(StoreError::Unknown(entry.name.clone()));
        };
        let mut entry = entry.clone();
        if old.trigger != entry.trigger {
            entry.anchor = now.trunc_subsecs(0);
        } else {
            entry.anchor = old.anchor;
        }
        entry.created_at = old.created_at;
        to_active(&entry, revision, now).update(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Pauses (`false`) or resumes (`true`) an entry.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let revision = bump(&txn).await?;
        let Some(mut entry) = live(&txn, name).await? else {
            return Err(StoreError::Unknown(name.to_owned()));
        };
        if enabled && !entry.enabled {
            resume_from(&txn, name, now).await?;
        }
        entry.enabled = enabled;
        to_active(&entry, revision, now).update(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Removes an entry and its run state.
    pub async fn remove(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        let revision = bump(&txn).await?;
        let Some(entry) = live(&txn, name).await? else {
            return Err(StoreError::Unknown(name.to_owned()));
        };
        let mut row = to_active(&entry, revision, now);
        row.deleted = Set(true);
        row.update(&txn).await?;
        state::Entity::delete_by_id(name.to_owned())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Asks the leading beat to run `name` now (file or database entry; the
    /// caller checks that it exists).
    pub async fn request_run_now(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let txn = self.db.begin().await?;
        bump(&txn).await?;
        let backend = txn.get_database_backend();
        let when = format_instant(at);
        let updated = txn
            .execute_raw(statement(
                backend,
                "UPDATE celeriac_beat_state SET run_now_at = ? WHERE name = ?",
                vec![when.clone().into(), name.into()],
            ))
            .await?;
        if updated.rows_affected() == 0 {
            new_state(name, None, Some(when.clone()), when)
                .insert(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

/// The run state of an entry that has none yet: never run, with its
/// cursor and run-now request as given.
fn new_state(
    name: &str,
    cursor_at: Option<String>,
    run_now_at: Option<String>,
    updated_at: String,
) -> state::ActiveModel {
    state::ActiveModel {
        name: Set(name.to_owned()),
        cursor_at: Set(cursor_at),
        sending_at: Set(None),
        last_run_at: Set(None),
        last_sent_at: Set(None),
        last_task_id: Set(None),
        next_run_at: Set(None),
        total_runs: Set(0),
        recent: Set(None),
        run_now_at: Set(run_now_at),
        updated_at: Set(updated_at),
    }
}

/// A resumed entry counts from `now`: its run state's cursor (the last
/// fire time decided) moves up to `now`, the state created if there is
/// none, so that whichever beat loads the entry next skips the fire times
/// of the paused stretch, as the beat leading at the resume does.
pub(crate) async fn resume_from(
    txn: &DatabaseTransaction,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let at = format_instant(now);
    match state::Entity::find_by_id(name.to_owned()).one(txn).await? {
        Some(row) => {
            let cursor = row.cursor_at.as_deref().and_then(parse_instant);
            if cursor.is_none_or(|c| c < now) {
                let mut row: state::ActiveModel = row.into();
                row.cursor_at = Set(Some(at.clone()));
                row.updated_at = Set(at);
                row.update(txn).await?;
            }
        }
        None => {
            new_state(name, Some(at.clone()), None, at)
                .insert(txn)
                .await?;
        }
    }
    Ok(())
}

/// `version = version + 1`, returning the new version; the row stays locked
/// until the transaction ends.
pub(crate) async fn bump(txn: &DatabaseTransaction) -> Result<i64, DbErr> {
    let backend = txn.get_database_backend();
    txn.execute_raw(statement(
        backend,
        "UPDATE celeriac_beat_meta SET version = version + 1 WHERE id = 1",
        vec![],
    ))
    .await?;
    meta::Entity::find_by_id(1)
        .one(txn)
        .await?
        .map(|m| m.version)
        .ok_or_else(|| {
            DbErr::RecordNotFound("celeriac_beat_meta row (run `celeriac migrate`)".into())
        })
}

pub(crate) async fn live(txn: &DatabaseTransaction, name: &str) -> Result<Option<Entry>, DbErr> {
    Ok(entry::Entity::find_by_id(name.to_owned())
        .one(txn)
        .await?
        .filter(|m| !m.deleted)
        .and_then(to_entry))
}

pub(crate) fn to_active(e: &Entry, revision: i64, now: DateTime<Utc>) -> entry::ActiveModel {
    let json = |v: Value| v.to_string();
    entry::ActiveModel {
        name: Set(e.name.clone()),
        task: Set(e.task.clone()),
        args: Set(json(Value::Array(e.args.clone()))),
        kwargs: Set(json(Value::Object(e.kwargs.clone()))),
        trigger: Set(serde_json::to_string(&e.trigger).unwrap_or_default()),
        options: Set(serde_json::to_string(&e.options).unwrap_or_else(|_| "{}".into())),
        workflow: Set(e
            .workflow
            .as_ref()
            .and_then(|w| serde_json::to_string(w).ok())),
        tags: Set((!e.tags.is_empty()).then(|| json(Value::from(e.tags.clone())))),
        misfire_grace_secs: Set(e.firing.misfire_grace.map(Grace::as_secs_f64)),
        coalesce: Set(e.firing.coalesce),
        max_instances: Set(e
            .firing
            .max_instances
            .map(|m| i32::try_from(m).unwrap_or(i32::MAX))),
        enabled: Set(e.enabled),
        deleted: Set(false),
        anchor_at: Set(format_instant(e.anchor)),
        revision: Set(revision),
        created_at: Set(format_instant(e.created_at.unwrap_or(now))),
        updated_at: Set(format_instant(now)),
    }
}

/// A stored row as an entry; a row that does not read back (edited by
/// hand) is logged and left out.
pub(crate) fn to_entry(m: entry::Model) -> Option<Entry> {
    let name = m.name.clone();
    match read_row(m) {
        Ok(e) => Some(e),
        Err(reason) => {
            tracing::error!(entry = %name, "database entry is unreadable and is ignored: {reason}");
            None
        }
    }
}

fn read_row(m: entry::Model) -> Result<Entry, String> {
    let args: Vec<Value> = serde_json::from_str(&m.args).map_err(|e| format!("args: {e}"))?;
    let kwargs: Map<String, Value> =
        serde_json::from_str(&m.kwargs).map_err(|e| format!("kwargs: {e}"))?;
    let trigger_json: Value =
        serde_json::from_str(&m.trigger).map_err(|e| format!("trigger: {e}"))?;
    let trigger = TriggerSpec::from_json(&trigger_json).map_err(|e| e.to_string())?;
    let options: SendOptions =
        serde_json::from_str(&m.options).map_err(|e| format!("options: {e}"))?;
    let anchor = parse_instant(&m.anchor_at).ok_or("anchor_at: not an RFC 3339 instant")?;
    let workflow = m
        .workflow
        .as_deref()
        .map(crate::schedule::workflow::parse_json)
        .transpose()
        .map_err(|e| e.to_string())?;
    let tags: Vec<String> = match m.tags.as_deref() {
        None => Vec::new(),
        Some(t) => serde_json::from_str(t).map_err(|e| format!("tags: {e}"))?,
    };
    Ok(Entry {
        name: m.name,
        task: m.task,
        args,
        kwargs,
        workflow,
        tags,
        trigger,
        options,
        firing: FiringOverrides {
            misfire_grace: m.misfire_grace_secs.map(Grace::from_secs_f64),
            coalesce: m.coalesce,
            max_instances: m.max_instances.map(|n| u32::try_from(n).unwrap_or(0)),
        },
        enabled: m.enabled,
        source: Source::Database,
        anchor,
        created_at: parse_instant(&m.created_at),
        description: None,
    })
}
