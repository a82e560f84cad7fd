//! Exclusion calendars: named sets of local dates on which an entry does not
//! fire ("every weekday at 09:00 except public holidays").
//!
//! A calendar is a name and a set of dates and inclusive date ranges, with no
//! times: a date is a whole day on the wall clock of the entry that names the
//! calendar, so one `us-holidays` calendar serves entries in New York and in
//! Los Angeles, each skipping its own local 4 July. A fire time whose local
//! date (in the trigger's `timezone`) is excluded is skipped, and the trigger
//! moves on to its next fire time on a date that is not.
//!
//! [`Calendars`] maps names to [`ExcludedDates`]; a trigger naming calendars
//! compiles with [`super::TriggerSpec::compile_in`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;

use super::error::{TriggerError, suggest};

/// Longest calendar name (as entry names: the key of a database table).
pub const CALENDAR_NAME_MAX_LEN: usize = 191;

/// A set of local dates: sorted, merged, inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExcludedDates {
    ranges: Vec<(NaiveDate, NaiveDate)>,
}

impl ExcludedDates {
    /// The dates of `ranges` (each `from..=to`; a range whose end is before
    /// its start counts as its start alone). Overlapping and adjacent ranges merge.
    pub fn new(ranges: impl IntoIterator<Item = (NaiveDate, NaiveDate)>) -> ExcludedDates {
        let mut all: Vec<(NaiveDate, NaiveDate)> = ranges
            .into_iter()
            .map(|(from, to)| (from, to.max(from)))
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::with_capacity(all.len());
        for (from, to) in all {
            match merged.last_mut() {
                Some(last) if last.1.succ_opt().is_none_or(|next| from <= next) => {
                    last.1 = last.1.max(to);
                }
                _ => merged.push((from, to)),
            }
        }
        ExcludedDates { ranges: merged }
    }

    /// Whether no date is excluded.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The merged ranges, in date order.
    pub fn ranges(&self) -> &[(NaiveDate, NaiveDate)] {
        &self.ranges
    }

    /// Whether `date` is excluded.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.range_containing(date).is_some()
    }

    /// The merged range holding `date`, if it is excluded.
    pub fn range_containing(&self, date: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let i = self.ranges.partition_point(|(from, _)| *from <= date);
        let (from, to) = *self.ranges.get(i.checked_sub(1)?)?;
        (date <= to).then_some((from, to))
    }

    /// The union of both sets.
    pub fn union(&self, other: &ExcludedDates) -> ExcludedDates {
        ExcludedDates::new(self.ranges.iter().chain(&other.ranges).copied())
    }
}

/// Exclusion calendars by name (from the schedule file and the database).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calendars {
    by_name: BTreeMap<String, Arc<ExcludedDates>>,
}

impl Calendars {
    /// No calendars.
    pub fn new() -> Calendars {
        Calendars::default()
    }

    /// Adds or replaces calendar `name`.
    pub fn insert(&mut self, name: impl Into<String>, dates: ExcludedDates) {
        self.by_name.insert(name.into(), Arc::new(dates));
    }

    /// Calendar `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&ExcludedDates> {
        self.by_name.get(name).map(|d| &**d)
    }

    /// The calendar names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// How many calendars there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// These calendars with `over`'s on top (a name in both: `over`'s wins).
    pub fn overlaid(&self, over: &Calendars) -> Calendars {
        let mut out = self.clone();
        for (name, dates) in &over.by_name {
            out.by_name.insert(name.clone(), dates.clone());
        }
        out
    }

    /// Names among `names` that are not defined here.
    pub fn missing<'a>(&self, names: &'a [String]) -> Vec<&'a str> {
        names
            .iter()
            .filter(|n| !self.by_name.contains_key(n.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// The names of calendars whose dates differ between `self` and `other`
    /// (added, removed or changed).
    pub fn changed_names(&self, other: &Calendars) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_name
            .iter()
            .filter(|(n, d)| other.by_name.get(*n) != Some(*d))
            .map(|(n, _)| n.clone())
            .collect();
        names.extend(
            other
                .by_name
                .keys()
                .filter(|n| !self.by_name.contains_key(*n))
                .cloned(),
        );
        names
    }

    /// The dates excluded by the calendars `names` together; an unknown name
    /// is an error with a "did you mean" hint.
    pub fn resolve(&self, names: &[String]) -> Result<ExcludedDates, TriggerError> {
        if let [one] = names
            && let Some(dates) = self.by_name.get(one)
        {
            return Ok((**dates).clone());
        }
        let mut ranges = Vec::new();
        for name in names {
            let dates = self.by_name.get(name).ok_or_else(|| self.unknown(name))?;
            ranges.extend_from_slice(dates.ranges());
        }
        Ok(ExcludedDates::new(ranges))
    }

    /// The error for an unknown calendar `name`.
    pub fn unknown(&self, name: &str) -> TriggerError {
        TriggerError::UnknownCalendar {
            name: name.to_owned(),
            suggestion: suggest(name, self.names()),
        }
    }
}

/// Checks a calendar name: 1 to 191 bytes, no control characters or spaces
/// at either end.
pub fn validate_calendar_name(name: &str) -> Result<(), TriggerError> {
    let bad = |message: &str| TriggerError::invalid("calendar", message.to_owned());
    if name.trim().is_empty() {
        return Err(bad("the name must not be empty"));
    }
    if name.trim() != name {
        return Err(bad("the name must not start or end with a space"));
    }
    if name.len() > CALENDAR_NAME_MAX_LEN {
        return Err(bad("the name is longer than 191 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("the name contains a control character"));
    }
    Ok(())
}

/// A date or an inclusive date range as written: `2026-12-25` or
/// `2026-12-24..2026-12-26`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateRange {
    /// First excluded date.
    pub from: NaiveDate,
    /// Last excluded date (equal to `from` for one date).
    pub to: NaiveDate,
}

impl DateRange {
    /// Parses `YYYY-MM-DD` or `YYYY-MM-DD..YYYY-MM-DD` (the end not before the start).
    pub fn parse(text: &str) -> Result<DateRange, TriggerError> {
        let text = text.trim();
        let date = |s: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                TriggerError::invalid(
                    "dates",
                    format!(
                        "invalid date \"{}\", \
                         expected YYYY-MM-DD or a range YYYY-MM-DD..YYYY-MM-DD",
                        s.trim()
                    ),
                )
            })
        };
        let (from, to) = match text.split_once("..") {
            Some((a, b)) => (date(a)?, date(b)?),
            None => {
                let d = date(text)?;
                (d, d)
            }
        };
        if to < from {
            return Err(TriggerError::invalid(
                "dates",
                format!("range \"{text}\" ends before it starts"),
            ));
        }
        Ok(DateRange { from, to })
    }
}

impl fmt::Display for DateRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}..{}", self.from, self.to)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn merges_and_finds_ranges() {
        let set = ExcludedDates::new([
            (d("2026-12-24"), d("2026-12-26")),
            (d("2026-12-27"), d("2026-12-27")),
            (d("2026-12-25"), d("2026-12-25")),
            (d("2027-01-01"), d("2027-01-01")),
        ]);
        assert_eq!(
            set.ranges(),
            [
                (d("2026-12-24"), d("2026-12-27")),
                (d("2027-01-01"), d("2027-01-01"))
            ]
        );
        assert!(set.contains(d("2026-12-24")));
        assert!(set.contains(d("2026-12-27")));
        assert!(!set.contains(d("2026-12-23")));
        assert!(!set.contains(d("2026-12-28")));
        assert_eq!(
            set.range_containing(d("2026-12-26")),
            Some((d("2026-12-24"), d("2026-12-27")))
        );
        assert!(!ExcludedDates::default().contains(d("2026-12-25")));
    }

    #[test]
    fn parses_dates_and_ranges() {
        assert_eq!(
            DateRange::parse("2026-12-24..2026-12-26")
                .unwrap()
                .to_string(),
            "2026-12-24..2026-12-26"
        );
        assert_eq!(
            DateRange::parse(" 2026-12-25 ").unwrap().to_string(),
            "2026-12-25"
        );
        assert!(
            DateRange::parse("2026-12-26..2026-12-24")
                .unwrap_err()
                .to_string()
                .contains("ends before it starts")
        );
        assert!(DateRange::parse("25/12/2026").is_err());
    }

    #[test]
    fn resolves_names_with_a_hint() {
        let mut cals = Calendars::new();
        cals.insert(
            "us-holidays",
            ExcludedDates::new([(d("2026-07-03"), d("2026-07-03"))]),
        );
        cals.insert(
            "office",
            ExcludedDates::new([(d("2026-07-04"), d("2026-07-04"))]),
        );
        let both = cals
            .resolve(&["us-holidays".into(), "office".into()])
            .unwrap();
        assert_eq!(both.ranges(), [(d("2026-07-03"), d("2026-07-04"))]);
        assert_eq!(
            cals.resolve(&["us-holiday".into()])
                .unwrap_err()
                .to_string(),
            "calendars: unknown calendar \"us-holiday\", did you mean \"us-holidays\"?"
        );
        assert_eq!(cals.missing(&["x".into(), "office".into()]), ["x"]);
        let mut other = cals.clone();
        other.insert("office", ExcludedDates::default());
        other.insert("new", ExcludedDates::default());
        let mut changed = cals.changed_names(&other);
        changed.sort();
        assert_eq!(changed, ["new", "office"]);
    }
}
