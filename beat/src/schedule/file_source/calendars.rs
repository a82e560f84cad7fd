//! The `[calendars.NAME]` tables of a schedule file: dates written inline
//! and `.ics` files read from beside the schedule file.

use std::path::Path;

use crate::schedule::entry::Source;
use crate::schedule::holidays::{CalendarDay, LABEL_MAX_LEN};
use crate::schedule::ics;
use crate::trigger::{DateRange, TriggerError, suggest, validate_calendar_name};

/// The days of one `[calendars.NAME]` table.
pub(super) fn calendar_table(
    name: &str,
    value: &toml::Value,
    path: &Path,
) -> Result<Vec<CalendarDay>, TriggerError> {
    validate_calendar_name(name)?;
    let toml::Value::Table(t) = value else {
        return Err(TriggerError::invalid(
            "calendar",
            "must be a table with dates and/or ics",
        ));
    };
    if let Some(key) = t.keys().find(|k| *k != "dates" && *k != "ics") {
        let hint = suggest(key, ["dates", "ics"])
            .map(|s| format!(", did you mean \"{s}\"?"))
            .unwrap_or_default();
        return Err(TriggerError::invalid(
            "calendar",
            format!("unknown key \"{key}\"{hint} (expected dates and/or ics)"),
        ));
    }
    let day = |range: DateRange, label: Option<String>| CalendarDay {
        calendar: name.to_owned(),
        range,
        label,
        source: Source::File,
    };
    let mut days = Vec::new();
    for item in t.get("dates").map(as_list).unwrap_or_default() {
        days.push(match item {
            toml::Value::String(s) => day(DateRange::parse(s)?, None),
            toml::Value::Datetime(d) => day(DateRange::parse(&d.to_string())?, None),
            toml::Value::Table(d) => {
                let text = |key: &str| match d.get(key) {
                    Some(toml::Value::String(s)) => Some(s.clone()),
                    Some(toml::Value::Datetime(v)) => Some(v.to_string()),
                    _ => None,
                };
                let known = ["date", "to", "label"];
                if let Some(key) = d.keys().find(|k| !known.contains(&k.as_str())) {
                    return Err(TriggerError::invalid(
                        "dates",
                        format!("unknown key \"{key}\" (expected date, to and label)"),
                    ));
                }
                let from = text("date").ok_or_else(|| {
                    TriggerError::invalid("dates", "a table needs date = \"YYYY-MM-DD\"")
                })?;
                let range = match text("to") {
                    Some(to) => DateRange::parse(&format!("{from}..{to}"))?,
                    None => DateRange::parse(&from)?,
                };
                day(range, text("label").map(|l| truncate(&l)))
            }
            other => {
                return Err(TriggerError::invalid(
                    "dates",
                    format!(
                        "expected \"YYYY-MM-DD\", \"YYYY-MM-DD..YYYY-MM-DD\" or a table, \
                         got {other}"
                    ),
                ));
            }
        });
    }
    for item in t.get("ics").map(as_list).unwrap_or_default() {
        let toml::Value::String(file) = item else {
            return Err(TriggerError::invalid("ics", "expected a file path"));
        };
        let full = path.parent().unwrap_or(Path::new(".")).join(file);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            TriggerError::invalid("ics", format!("cannot read {}: {e}", full.display()))
        })?;
        let read = ics::read(&text)
            .map_err(|e| TriggerError::invalid("ics", format!("{}: {e}", full.display())))?;
        for warning in &read.warnings {
            tracing::warn!(calendar = %name, file = %full.display(), "{warning}");
        }
        days.extend(
            read.dates
                .into_iter()
                .map(|(range, label)| day(range, label.map(|l| truncate(&l)))),
        );
    }
    if days.is_empty() {
        return Err(TriggerError::invalid(
            "calendar",
            "has no dates (give dates and/or ics)",
        ));
    }
    Ok(days)
}

fn as_list(value: &toml::Value) -> Vec<&toml::Value> {
    match value {
        toml::Value::Array(items) => items.iter().collect(),
        one => vec![one],
    }
}

/// A label cut to [`LABEL_MAX_LEN`] bytes (on a character boundary).
pub(crate) fn truncate(label: &str) -> String {
    let mut end = label.len().min(LABEL_MAX_LEN);
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    label[..end].to_owned()
}
