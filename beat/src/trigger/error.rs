//! The error type shared by every trigger parser and compiler.

use thiserror::Error;

/// Why a trigger description could not be parsed or compiled.
///
/// Every message starts with the field (or key) it is about, then says what is
/// wrong, e.g. `minute: value 61 out of range 0-59` or
/// `day_of_week: unknown name "fry", did you mean "fri"?`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// A crontab string with the wrong number of whitespace-separated fields.
    #[error("expression has {found} fields, expected 5, 6 or 7")]
    FieldCount {
        /// How many fields were found.
        found: usize,
    },
    /// A number outside the range a field accepts.
    #[error("{field}: value {value} out of range {min}-{max}")]
    OutOfRange {
        /// The field, e.g. `minute`.
        field: &'static str,
        /// The offending value.
        value: u64,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// A month, weekday or position name that is not known.
    #[error("{field}: unknown name \"{name}\"{}", did_you_mean(.suggestion))]
    UnknownName {
        /// The field, e.g. `day_of_week`.
        field: &'static str,
        /// The name as written.
        name: String,
        /// The closest known name, if one is close.
        suggestion: Option<String>,
    },
    /// Any other malformed field expression.
    #[error("{field}: {message}")]
    Invalid {
        /// The field or key, e.g. `hour` or `every`.
        field: &'static str,
        /// What is wrong, in lowercase.
        message: String,
    },
    /// An `@nickname` that is not one of `@yearly`, `@monthly`, ....
    #[error("unknown nickname \"{name}\"{}", did_you_mean(.suggestion))]
    UnknownNickname {
        /// The nickname as written.
        name: String,
        /// The closest known nickname, if one is close.
        suggestion: Option<String>,
    },
    /// A time zone that is not in the IANA database.
    #[error("timezone: unknown time zone \"{name}\"{}", did_you_mean(.suggestion))]
    UnknownTimezone {
        /// The name as written.
        name: String,
        /// The closest known zone name, if one is close.
        suggestion: Option<String>,
    },
    /// A `start_date`, `end_date` or anchor that is not a date-time.
    #[error(
        "{field}: invalid date-time \"{value}\", expected RFC 3339 (2024-05-01T09:00:00+02:00) \
         or a naive date-time (2024-05-01 09:00:00) in the trigger's timezone"
    )]
    InvalidDateTime {
        /// The key, e.g. `start_date`.
        field: &'static str,
        /// The value as written.
        value: String,
    },
    /// `start_date` is later than `end_date`.
    #[error("start_date ({start}) is after end_date ({end})")]
    StartAfterEnd {
        /// The start bound, RFC 3339.
        start: String,
        /// The end bound, RFC 3339.
        end: String,
    },
    /// A duration string such as `1h30m` that cannot be parsed.
    #[error("{field}: invalid duration \"{input}\": {reason}")]
    InvalidDuration {
        /// The key, e.g. `every`.
        field: &'static str,
        /// The string as written.
        input: String,
        /// What is wrong, in lowercase.
        reason: String,
    },
    /// A key that the trigger type does not have (see [`super::TriggerSpec::from_json`]).
    #[error("{kind} trigger: unknown key \"{key}\"{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// The trigger type, e.g. `fields`.
        kind: String,
        /// The key as written.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// An exclusion calendar that is not defined (in the schedule file or the database).
    #[error("calendars: unknown calendar \"{name}\"{}", did_you_mean(.suggestion))]
    UnknownCalendar {
        /// The name as written.
        name: String,
        /// The closest defined name, if one is close.
        suggestion: Option<String>,
    },
    /// A trigger description that is not a valid JSON object of a known type.
    #[error("invalid trigger description: {0}")]
    Malformed(String),
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(", did you mean \"{s}\"?"),
        None => String::new(),
    }
}

impl TriggerError {
    /// Shorthand for [`TriggerError::Invalid`].
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// The candidate closest to `input` (case-insensitive edit distance, an
/// adjacent swap counting as one edit), if it is close enough to be a
/// plausible typo: at most 1 edit for short words, 2 for words of five or
/// more letters, and fewer edits than the input has letters.
pub(crate) fn suggest<'a, I>(input: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    let needle = input.to_ascii_lowercase();
    let len = needle.chars().count();
    // Never suggest by replacing the whole input ("y" -> "s").
    let limit = if len >= 5 { 2 } else { 1 }.min(len.saturating_sub(1));
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&needle, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        assert_eq!(suggest("fry", days).as_deref(), Some("fri"));
        assert_eq!(suggest("FRY", days).as_deref(), Some("fri"));
        assert_eq!(suggest("xyz", days), None);
        assert_eq!(
            suggest("minuet", ["minute", "second"]).as_deref(),
            Some("minute")
        );
        // A swap of two adjacent letters is one edit.
        assert_eq!(suggest("mnio", ["mino"]).as_deref(), Some("mino"));
    }

    #[test]
    fn messages() {
        let e = TriggerError::UnknownName {
            field: "day_of_week",
            name: "fry".into(),
            suggestion: Some("fri".into()),
        };
        assert_eq!(
            e.to_string(),
            "day_of_week: unknown name \"fry\", did you mean \"fri\"?"
        );
        let e = TriggerError::OutOfRange {
            field: "minute",
            value: 61,
            min: 0,
            max: 59,
        };
        assert_eq!(e.to_string(), "minute: value 61 out of range 0-59");
        assert_eq!(
            TriggerError::FieldCount { found: 4 }.to_string(),
            "expression has 4 fields, expected 5, 6 or 7"
        );
    }
}
