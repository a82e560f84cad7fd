//! Recording and listing the finished members of a chord's header.

use super::sql::{SELECT_CHORD, count_members, insert_ignore, read_chord, statement};
use super::{ChordMember, ChordProgress};
use crate::backend::{BackendError, ResultBackend};
use chrono::Utc;
use sea_orm::{ConnectionTrait, TransactionTrait};

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
        // Rows are locked in one order, (group, task), by every caller, each
        // chord's member rows before the chord's row: concurrent batches
        // wait for each other but cannot deadlock.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| {
            (&members[a].group_id, &members[a].task_id)
                .cmp(&(&members[b].group_id, &members[b].task_id))
        });
        let txn = self.connection().begin().await?;
        let backend = txn.get_database_backend();
        let insert = insert_ignore(
            backend,
            "celeriac_chord_members (group_id, task_id, idx, ok, done_at) VALUES (?, ?, ?, ?, ?)",
        );
        let now = Utc::now();
        let mut chords = std::collections::HashMap::new();
        let mut start = 0;
        while start < order.len() {
            let group = &members[order[start]].group_id;
            let end = order[start..]
                .iter()
                .position(|&i| members[i].group_id != *group)
                .map_or(order.len(), |n| start + n);
            let mut new = Vec::new();
            for &i in &order[start..end] {
                let m = &members[i];
                let res = txn
                    .execute_raw(statement(
                        backend,
                        &insert,
                        vec![
                            m.group_id.clone().into(),
                            m.task_id.clone().into(),
                            i32::try_from(m.index).unwrap_or(i32::MAX).into(),
                            m.ok.into(),
                            now.into(),
                        ],
                    ))
                    .await?;
                if res.rows_affected() == 1 {
                    new.push(m);
                }
            }
            if let Some(last) = new.last() {
                let failed = new.iter().find(|m| !m.ok);
                count_members(
                    &txn,
                    group,
                    new.len(),
                    failed.map(|m| &m.task_id),
                    last,
                    now,
                )
                .await?;
            }
            let row = txn
                .query_one_raw(statement(backend, SELECT_CHORD, vec![group.clone().into()]))
                .await?;
            chords.insert(group.clone(), row.map(|r| read_chord(&r)).transpose()?);
            start = end;
        }
        txn.commit().await?;
        Ok(members
            .iter()
            .map(|m| {
                chords.get(&m.group_id).cloned().flatten().map(|chord| {
                    let claimed = chord.fired_by.as_deref() == Some(m.task_id.as_str());
                    ChordProgress { chord, claimed }
                })
            })
            .collect())
    }
}
