//! The callback's arguments gathered while members report. Each report of
//! new successful members of a chord (one batch) writes one row of
//! `celeriac_chord_parts` holding `[[index, task id, result], ...]`, in the
//! transaction that counts them; the claimant reads a row a batch (about 80
//! for 10,000 members) instead of a row a member, and orders them itself.
//!
//! Written only where the database says which rows a multi-row insert added
//! (`RETURNING`: PostgreSQL and SQLite), and only when every one of them
//! came with its result. The claimant uses the parts when they hold exactly
//! the chord's count of members; otherwise (MySQL, members reported by an
//! older worker or without their result, a part that does not parse) it
//! reads the member rows ([`ResultBackend::chord_results`]).

use super::ChordMember;
use super::ChordRecord;
use super::sql::statement;
use crate::backend::{BackendError, ResultBackend};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use serde_json::Value;
use std::fmt::Write;

/// Writes the part of `successes` (new, successful members of `group`).
pub(super) async fn write(
    txn: &DatabaseTransaction,
    group: &str,
    successes: &[&ChordMember],
) -> Result<(), BackendError> {
    let Some(first) = successes.first() else {
        return Ok(());
    };
    let mut body = String::from("[");
    for (i, m) in successes.iter().enumerate() {
        let Some(result) = &m.result else {
            return Ok(()); // read from its task row: no part
        };
        let id = serde_json::to_string(&m.task_id).map_err(|e| BackendError::Corrupt {
            task_id: m.task_id.clone(),
            reason: e.to_string(),
        })?;
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(body, "{comma}[{},{id},{result}]", m.index);
    }
    body.push(']');
    let backend = txn.get_database_backend();
    // A member is new once, so the first one's id names the part.
    txn.execute_raw(statement(
        backend,
        "INSERT INTO celeriac_chord_parts (group_id, part, body) VALUES (?, ?, ?)",
        vec![group.into(), first.task_id.clone().into(), body.into()],
    ))
    .await?;
    Ok(())
}

impl ResultBackend {
    /// The callback's arguments for a completed chord: its members' results
    /// by index (ties, members without a `group_index`, by task id), from
    /// the parts when they hold every member, else from the member rows.
    pub async fn callback_arguments(
        &self,
        chord: &ChordRecord,
    ) -> Result<Vec<Value>, BackendError> {
        if let Some(results) = self.results_from_parts(chord).await? {
            return Ok(results);
        }
        self.chord_results(&chord.group_id).await
    }

    async fn results_from_parts(
        &self,
        chord: &ChordRecord,
    ) -> Result<Option<Vec<Value>>, BackendError> {
        let db = self.connection();
        let backend = db.get_database_backend();
        if backend == DbBackend::MySql {
            return Ok(None);
        }
        let rows = db
            .query_all_raw(statement(
                backend,
                "SELECT body FROM celeriac_chord_parts WHERE group_id = ?",
                vec![chord.group_id.as_str().into()],
            ))
            .await?;
        let want = usize::try_from(chord.done).unwrap_or(usize::MAX);
        let mut entries: Vec<(u32, String, Value)> = Vec::with_capacity(want.min(1 << 20));
        for row in &rows {
            let body: String = row.try_get("", "body")?;
            match serde_json::from_str::<Vec<(u32, String, Value)>>(&body) {
                Ok(part) => entries.extend(part),
                Err(e) => {
                    tracing::warn!(chord = %chord.group_id, error = %e, "a chord part does not parse; reading the member rows");
                    return Ok(None);
                }
            }
        }
        if entries.len() != want {
            return Ok(None);
        }
        entries.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(Some(entries.into_iter().map(|(_, _, v)| v).collect()))
    }
}
