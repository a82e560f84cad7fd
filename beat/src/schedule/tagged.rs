//! The database schedule by tag: every live entry carrying a tag, paused,
//! resumed or removed together in one transaction (one schedule version).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder, TransactionTrait,
};

use celeriac_common::backend::beat::{entry, state};

use crate::schedule::entry::Entry;
use crate::schedule::store::{Store, StoreError, bump, resume_from, to_active, to_entry};

/// Live entries with tags, in name order.
async fn with_tags<C: ConnectionTrait>(db: &C) -> Result<Vec<Entry>, DbErr> {
    let rows = entry::Entity::find()
        .filter(entry::Column::Deleted.eq(false))
        .filter(entry::Column::Tags.is_not_null())
        .order_by_asc(entry::Column::Name)
        .all(db)
        .await?;
    Ok(rows.into_iter().filter_map(to_entry).collect())
}

impl Store {
    /// Every tag of the database entries.
    pub async fn tags(&self) -> Result<Vec<String>, DbErr> {
        let mut tags: Vec<String> = with_tags(self.db())
            .await?
            .into_iter()
            .flat_map(|e| e.tags)
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Pauses (`false`) or resumes (`true`) every database entry tagged
    /// `tag`, in one transaction; returns their names (none: nothing changed).
    pub async fn set_enabled_tagged(
        &self,
        tag: &str,
        enabled: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.change_tagged(tag, now, |row| {
            row.enabled = Set(enabled);
        })
        .await
    }

    /// Removes every database entry tagged `tag` and its run state, in one
    /// transaction; returns their names.
    pub async fn remove_tagged(
        &self,
        tag: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.change_tagged(tag, now, |row| {
            row.deleted = Set(true);
        })
        .await
    }

    async fn change_tagged(
        &self,
        tag: &str,
        now: DateTime<Utc>,
        change: impl Fn(&mut entry::ActiveModel),
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db().begin().await?;
        // The version row first: it serialises schedule changes.
        let revision = bump(&txn).await?;
        let tagged: Vec<Entry> = with_tags(&txn)
            .await?
            .into_iter()
            .filter(|e| e.tags.iter().any(|t| t == tag))
            .collect();
        if tagged.is_empty() {
            txn.rollback().await?;
            return Ok(Vec::new());
        }
        let mut names = Vec::with_capacity(tagged.len());
        for e in tagged {
            let mut row = to_active(&e, revision, now);
            change(&mut row);
            if row.deleted == Set(true) {
                state::Entity::delete_by_id(e.name.clone())
                    .exec(&txn)
                    .await?;
            }
            if !e.enabled && row.enabled == Set(true) {
                resume_from(&txn, &e.name, now).await?;
            }
            row.update(&txn).await?;
            names.push(e.name);
        }
        txn.commit().await?;
        Ok(names)
    }
}
