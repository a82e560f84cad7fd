//! Recording and listing the finished members of a chord's header.

use super::parts;
use super::sql::{SELECT_CHORD, count_members, insert_members, read_chord, statement};
use super::{ChordMember, ChordProgress};
use crate::backend::{BackendError, ResultBackend};
use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use serde_json::Value;

impl ResultBackend {
    /// The finished members of a chord as `(index, task_id, ok)`, by index:
    /// the order in which the callback receives their results.
    pub async fn chord_members(
        &self,
        group_id: &str,
    ) -> Result<Vec<(u32, String, bool)>, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(statement(
                backend,
                "SELECT idx, task_id, ok FROM celeriac_chord_members WHERE group_id = ? \
                 ORDER BY idx, task_id",
                vec![group_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                let idx: i32 = r.try_get("", "idx")?;
                Ok((
                    u32::try_from(idx).unwrap_or(0),
                    r.try_get("", "task_id")?,
                    r.try_get("", "ok")?,
                ))
            })
            .collect()
    }

    /// The results of a chord's finished members, by index (the callback's
    /// argument list), from the member rows (one index range of the
    /// chord's key). A member reported without its result (by a worker
    /// from before the `result` column) is read from its task row; a
    /// member with neither gives `null`.
    pub async fn chord_results(&self, group_id: &str) -> Result<Vec<Value>, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        let rows = db
            .query_all_raw(statement(
                backend,
                "SELECT task_id, result FROM celeriac_chord_members WHERE group_id = ? \
                 ORDER BY idx, task_id",
                vec![group_id.into()],
            ))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for r in &rows {
            let id: String = r.try_get("", "task_id")?;
            match r.try_get::<Option<String>>("", "result")? {
                Some(text) => {
                    out.push(
                        serde_json::from_str(&text).map_err(|e| BackendError::Corrupt {
                            task_id: id,
                            reason: format!("result: {e}"),
                        })?,
                    )
                }
                None => {
                    missing.push((out.len(), id));
                    out.push(Value::Null);
                }
            }
        }
        if !missing.is_empty() {
            let ids: Vec<String> = missing.iter().map(|(_, id)| id.clone()).collect();
            let found = self.get_many(&ids).await?;
            for ((at, _), record) in missing.into_iter().zip(found) {
                out[at] = record.and_then(|r| r.result).unwrap_or(Value::Null);
            }
        }
        Ok(out)
    }

    /// Reports one finished member; see [`ResultBackend::members_done`].
    pub async fn member_done(
        &self,
        member: ChordMember,
    ) -> Result<Option<ChordProgress>, BackendError> {
        Ok(self.members_done(vec![member]).await?.pop().flatten())
    }

    /// Reports finished members (of one chord or several) in one
    /// transaction, and returns, for each member in the order given, its
    /// chord's progress, or `None` when no chord is recorded under its group
    /// id. A member already reported changes nothing; the first report of a
    /// failed member fails a PENDING chord; the report that brings the count
    /// of distinct members to the size completes it. Exactly one member ever
    /// gets `claimed` for a chord (and gets it again if reported again).
    pub async fn members_done(
        &self,
        members: Vec<ChordMember>,
    ) -> Result<Vec<Option<ChordProgress>>, BackendError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.connection().begin().await?;
        let answers = Self::members_done_in(&txn, &members).await?;
        txn.commit().await?;
        Ok(answers)
    }

    /// [`ResultBackend::members_done`] inside the caller's transaction.
    pub(in crate::backend) async fn members_done_in(
        txn: &DatabaseTransaction,
        members: &[ChordMember],
    ) -> Result<Vec<Option<ChordProgress>>, BackendError> {
        // Rows are locked in one order, (group, task), by every caller, each
        // chord's member rows before the chord's row: concurrent batches
        // wait for each other but cannot deadlock.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| {
            (&members[a].group_id, &members[a].task_id)
                .cmp(&(&members[b].group_id, &members[b].task_id))
        });
        let backend = txn.get_database_backend();
        let now = Utc::now();
        let mut chords = std::collections::HashMap::new();
        let mut start = 0;
        while start < order.len() {
            let group = &members[order[start]].group_id;
            let end = order[start..]
                .iter()
                .position(|&i| members[i].group_id != *group)
                .map_or(order.len(), |n| start + n);
            let mut sorted: Vec<&ChordMember> =
                order[start..end].iter().map(|&i| &members[i]).collect();
            // One copy of a member reported twice in one batch.
            sorted.dedup_by(|b, a| a.task_id == b.task_id);
            let inserted = insert_members(txn, &sorted, now).await?;
            if let Some(last) = sorted.last().filter(|_| inserted.added > 0) {
                count_members(txn, group, inserted.added, inserted.failed, last, now).await?;
            }
            let row = txn
                .query_one_raw(statement(backend, SELECT_CHORD, vec![group.clone().into()]))
                .await?;
            if row.is_some() {
                if let Some(successes) = &inserted.new_successes {
                    parts::write(txn, group, successes).await?;
                }
            } else if inserted.added > 0 {
                // No chord recorded (sent by a client that does not record
                // chords, or expired): keep no rows that nothing would read
                // or delete. By key: on MySQL a delete of the whole group
                // would lock the rows another report just inserted.
                let marks = vec!["?"; sorted.len()].join(", ");
                let mut values = vec![group.clone().into()];
                values.extend(sorted.iter().map(|m| m.task_id.clone().into()));
                txn.execute_raw(statement(
                    backend,
                    &format!(
                        "DELETE FROM celeriac_chord_members WHERE group_id = ? \
                         AND task_id IN ({marks})"
                    ),
                    values,
                ))
                .await?;
            }
            chords.insert(group.clone(), row.map(|r| read_chord(&r)).transpose()?);
            start = end;
        }
        // Two copies of the claimant in one batch (a retry or chain step
        // published twice, a redelivery): only the first is answered as the
        // claimant, or both would send the callback.
        let mut claimants = std::collections::HashSet::new();
        Ok(members
            .iter()
            .map(|m| {
                chords.get(&m.group_id).cloned().flatten().map(|chord| {
                    let claimed = chord.fired_by.as_deref() == Some(m.task_id.as_str())
                        && claimants.insert(m.group_id.as_str());
                    ChordProgress { chord, claimed }
                })
            })
            .collect())
    }
}
