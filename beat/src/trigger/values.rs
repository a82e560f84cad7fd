//! Value parsing shared by the crontab and APScheduler-field parsers.

use super::error::{TriggerError, suggest};

/// The name and accepted range of one calendar field, plus its names if any.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldRange {
    pub(crate) name: &'static str,
    pub(crate) min: u32,
    pub(crate) max: u32,
    names: &'static [&'static str],
    /// Value of `names[0]`.
    names_base: u32,
}

impl FieldRange {
    pub(crate) const fn new(name: &'static str, min: u32, max: u32) -> Self {
        Self {
            name,
            min,
            max,
            names: &[],
            names_base: 0,
        }
    }

    pub(crate) const fn with_names(self, names: &'static [&'static str], base: u32) -> Self {
        Self {
            names,
            names_base: base,
            ..self
        }
    }

    /// A plain decimal number (no range check).
    pub(crate) fn number(&self, text: &str) -> Option<u32> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }

    /// The value of a known name (case-insensitive), if it is one.
    pub(crate) fn named(&self, text: &str) -> Option<u32> {
        let base = self.names_base;
        (base..)
            .zip(self.names)
            .find(|(_, n)| n.eq_ignore_ascii_case(text))
            .map(|(v, _)| v)
    }

    /// Error for a word that is not one of this field's names.
    pub(crate) fn unknown_name(&self, text: &str) -> TriggerError {
        TriggerError::UnknownName {
            field: self.name,
            name: text.to_string(),
            suggestion: suggest(text, self.names.iter().copied()),
        }
    }

    /// A number or name, checked against the field's range.
    pub(crate) fn value(&self, text: &str) -> Result<u32, TriggerError> {
        if let Some(v) = self.named(text) {
            return Ok(v);
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let value: u64 = text.parse().unwrap_or(u64::MAX);
            return match u32::try_from(value) {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ => Err(TriggerError::OutOfRange {
                    field: self.name,
                    value,
                    min: self.min,
                    max: self.max,
                }),
            };
        }
        if !self.names.is_empty()
            && !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return Err(self.unknown_name(text));
        }
        Err(TriggerError::invalid(
            self.name,
            format!("invalid value \"{text}\""),
        ))
    }
}

/// The values `first, first+step, ...` up to `last`; when `first > last` the
/// sequence wraps from the field's maximum to its minimum.
pub(crate) fn expand(first: u32, last: u32, step: u32, field: &FieldRange) -> Vec<u32> {
    let sequence: Vec<u32> = if first <= last {
        (first..=last).collect()
    } else {
        (first..=field.max).chain(field.min..=last).collect()
    };
    sequence.into_iter().step_by(step.max(1) as usize).collect()
}
