//! The callback's arguments gathered while members report. Each report of
//! new successful members of a chord (one batch) writes one row of
//! `celeriac_chord_parts` holding `[[index, result], ...]`, in the
//! transaction that counts them; the claimant reads a row a batch (about 80
//! for 10,000 members) instead of a row a member, and puts each result in
//! its place. Parts written before 2026-12-07 hold `[index, task id,
//! result]`; both are read. The task id only ordered members that share an
//! index (members without a `group_index`), so it is left out: a chord
//! whose parts repeat an index is read from the member rows, which have it.
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
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(body, "{comma}[{},{result}]", m.index);
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
        let mut entries: Vec<Entry> = Vec::with_capacity(want.min(1 << 20));
        for row in &rows {
            let body: String = row.try_get("", "body")?;
            match serde_json::from_str::<Vec<Entry>>(&body) {
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
        Ok(in_order(entries))
    }
}

/// One member in a part: `[index, result]`, or `[index, task id, result]`
/// as parts were first written.
#[derive(Debug)]
struct Entry {
    index: u32,
    task_id: Option<String>,
    result: Value,
}

impl<'de> serde::Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[index, result] or [index, task id, result]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Entry, A::Error> {
                use serde::de::Error;
                let missing = || A::Error::custom("a part entry is too short");
                let index: u32 = seq.next_element()?.ok_or_else(missing)?;
                let second: Value = seq.next_element()?.ok_or_else(missing)?;
                let Some(result) = seq.next_element::<Value>()? else {
                    return Ok(Entry {
                        index,
                        task_id: None,
                        result: second,
                    });
                };
                match second {
                    Value::String(id) => Ok(Entry {
                        index,
                        task_id: Some(id),
                        result,
                    }),
                    _ => Err(A::Error::custom("a part entry's task id is not a string")),
                }
            }
        }
        d.deserialize_seq(Visit)
    }
}

/// The results of `entries` by index, ties by task id; `None` when indexes
/// repeat and an entry has no task id to order them by. Indexes are
/// usually `0..n` once each, and then each result goes straight to its
/// place.
fn in_order(mut entries: Vec<Entry>) -> Option<Vec<Value>> {
    let n = entries.len();
    let mut seen = vec![false; n];
    let placeable = entries.iter().all(|e| {
        let at = usize::try_from(e.index).unwrap_or(usize::MAX);
        at < n && !std::mem::replace(&mut seen[at], true)
    });
    if placeable {
        let mut out = vec![Value::Null; n];
        for e in entries {
            out[e.index as usize] = e.result;
        }
        return Some(out);
    }
    if entries.iter().any(|e| e.task_id.is_none()) {
        return None;
    }
    entries.sort_unstable_by(|a, b| (a.index, &a.task_id).cmp(&(b.index, &b.task_id)));
    Some(entries.into_iter().map(|e| e.result).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entries(body: &str) -> Vec<Entry> {
        serde_json::from_str(body).expect("a part")
    }

    #[test]
    fn results_go_to_their_index() {
        let body = r#"[[2,"two"],[0,0],[1,{"k":1}]]"#;
        let want = vec![json!(0), json!({"k": 1}), json!("two")];
        assert_eq!(in_order(entries(body)), Some(want));
    }

    #[test]
    fn parts_of_the_first_format_still_read_and_order_ties_by_task_id() {
        // Members without a group_index all say 0; an index past the end.
        let body = r#"[[0,"b","B"],[0,"a","A"],[7,"c",["C"]]]"#;
        let want = vec![json!("A"), json!("B"), json!(["C"])];
        assert_eq!(in_order(entries(body)), Some(want));
    }

    #[test]
    fn repeated_indexes_without_task_ids_are_left_to_the_member_rows() {
        assert_eq!(in_order(entries(r#"[[0,"A"],[0,"B"]]"#)), None);
        assert_eq!(in_order(entries(r#"[[0,"A"],[0,"b","B"]]"#)), None);
    }

    #[test]
    fn a_malformed_entry_does_not_parse() {
        for body in [r#"[[0]]"#, r#"[[0,1,2]]"#, r#"[["x",1]]"#, r#"[[0,1,2,3]]"#] {
            assert!(serde_json::from_str::<Vec<Entry>>(body).is_err(), "{body}");
        }
    }
}
