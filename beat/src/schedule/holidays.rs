//! Exclusion calendars as users define them: in the schedule file
//! (`[calendars.NAME]`) and in the database (`celeriac-beat calendar add`),
//! one [`CalendarDay`] per date or date range. The database's rows live in
//! `celeriac_beat_calendars`; every change bumps the schedule version, so a
//! running beat reloads them within a second, as it does entries.
//!
//! A name defined in both places takes the file's dates (the file wins, as
//! for entries). See [`crate::trigger::Calendars`] for how dates are applied.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
    sea_query::OnConflict,
};

use celeriac_common::backend::beat::calendar;

use crate::clock::format_instant;
use crate::schedule::entry::Source;
use crate::schedule::store::{Store, StoreError, bump};
use crate::trigger::{Calendars, DateRange, ExcludedDates};

/// Longest label of an excluded date.
pub const LABEL_MAX_LEN: usize = 255;

/// One excluded date or range of a calendar.
#[derive(Clone, Debug, PartialEq)]
pub struct CalendarDay {
    /// The calendar's name.
    pub calendar: String,
    /// The dates.
    pub range: DateRange,
    /// What the dates are, e.g. `Christmas Day`.
    pub label: Option<String>,
    /// Where it is defined.
    pub source: Source,
}

/// The calendars these days make up.
pub fn to_calendars(days: &[CalendarDay]) -> Calendars {
    let mut by_name: BTreeMap<&str, Vec<(NaiveDate, NaiveDate)>> = BTreeMap::new();
    for day in days {
        by_name
            .entry(day.calendar.as_str())
            .or_default()
            .push((day.range.from, day.range.to));
    }
    let mut out = Calendars::new();
    for (name, ranges) in by_name {
        out.insert(name, ExcludedDates::new(ranges));
    }
    out
}

/// File days over database days: a name the file defines hides the
/// database's days of that name.
pub fn merge(file: &[CalendarDay], db: Vec<CalendarDay>) -> Vec<CalendarDay> {
    let in_file: std::collections::HashSet<&str> =
        file.iter().map(|d| d.calendar.as_str()).collect();
    let mut out = file.to_vec();
    out.extend(
        db.into_iter()
            .filter(|d| !in_file.contains(d.calendar.as_str())),
    );
    out
}

impl Store {
    /// Every excluded date of every database calendar, by name then date.
    pub async fn calendar_days(&self) -> Result<Vec<CalendarDay>, DbErr> {
        let rows = calendar::Entity::find()
            .order_by_asc(calendar::Column::Name)
            .order_by_asc(calendar::Column::DateFrom)
            .all(self.db())
            .await?;
        Ok(rows.into_iter().filter_map(to_day).collect())
    }

    /// The database calendars.
    pub async fn calendars(&self) -> Result<Calendars, DbErr> {
        Ok(to_calendars(&self.calendar_days().await?))
    }

    /// Adds dates to calendar `name` (creating it); a date already there
    /// takes the new label. Returns how many rows were written.
    pub async fn add_calendar_days(
        &self,
        name: &str,
        days: &[(DateRange, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let txn = self.db().begin().await?;
        bump(&txn).await?;
        for chunk in days.chunks(100) {
            let rows = chunk.iter().map(|(range, label)| calendar::ActiveModel {
                name: Set(name.to_owned()),
                date_from: Set(range.from.to_string()),
                date_to: Set(range.to.to_string()),
                label: Set(label.clone()),
                created_at: Set(format_instant(now)),
            });
            calendar::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        calendar::Column::Name,
                        calendar::Column::DateFrom,
                        calendar::Column::DateTo,
                    ])
                    .update_column(calendar::Column::Label)
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(days.len())
    }

    /// Removes calendar `name`, or only its rows starting on `date` (a date
    /// or a range given by its first date). Returns how many rows went.
    pub async fn remove_calendar(
        &self,
        name: &str,
        date: Option<NaiveDate>,
    ) -> Result<u64, StoreError> {
        let txn = self.db().begin().await?;
        bump(&txn).await?;
        let mut delete =
            calendar::Entity::delete_many().filter(calendar::Column::Name.eq(name.to_owned()));
        if let Some(date) = date {
            delete = delete.filter(calendar::Column::DateFrom.eq(date.to_string()));
        }
        let removed = delete.exec(&txn).await?.rows_affected;
        if removed == 0 {
            // Nothing changed: do not wake every beat for it.
            txn.rollback().await?;
            return Ok(0);
        }
        txn.commit().await?;
        Ok(removed)
    }
}

/// A stored row as a day; a row that does not read back (edited by hand) is
/// logged and left out.
fn to_day(m: calendar::Model) -> Option<CalendarDay> {
    let read = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    match (read(&m.date_from), read(&m.date_to)) {
        (Some(from), Some(to)) => Some(CalendarDay {
            calendar: m.name,
            range: DateRange {
                from,
                to: to.max(from),
            },
            label: m.label,
            source: Source::Database,
        }),
        _ => {
            tracing::error!(
                calendar = %m.name,
                from = %m.date_from,
                to = %m.date_to,
                "calendar row is unreadable and is ignored"
            );
            None
        }
    }
}
