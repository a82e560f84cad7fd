//! Compiling a [`TriggerSpec`] into a [`Trigger`], and checking it.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::TriggerSpec;
use crate::trigger::calendar::Calendar;
use crate::trigger::dst::{DstPolicy, DstRule};
use crate::trigger::error::TriggerError;
use crate::trigger::exclusions::Calendars;
use crate::trigger::interval::{self, Interval};
use crate::trigger::{Kind, Trigger, cron, fields, tz};

impl TriggerSpec {
    /// Checks the description without keeping the compiled form. The names
    /// in `calendars` are not looked up (see [`Self::compile_in`]).
    pub fn validate(&self) -> Result<(), TriggerError> {
        self.compile_rule(None).map(|_| ())
    }

    /// The exclusion calendars named (`calendars`); empty for date triggers.
    pub fn calendars(&self) -> &[String] {
        match self {
            Self::Cron { calendars, .. }
            | Self::Fields { calendars, .. }
            | Self::Interval { calendars, .. } => calendars,
            Self::Date { .. } => &[],
        }
    }

    /// Compiles into the fast, compact [`Trigger`]. Interval triggers without
    /// `start_date` are anchored at the Unix epoch; see [`Self::compile_with_anchor`].
    /// A trigger naming exclusion calendars needs them: [`Self::compile_in`].
    pub fn compile(&self) -> Result<Trigger, TriggerError> {
        self.compile_in(None, &Calendars::new())
    }

    /// Compiles, anchoring an interval trigger that has no `start_date` at
    /// `anchor` (typically the schedule entry's creation time): it then fires at
    /// `anchor`, `anchor + period`, .... A `start_date` in the spec wins over
    /// `anchor`. Other trigger types ignore `anchor`.
    pub fn compile_with_anchor(&self, anchor: DateTime<Utc>) -> Result<Trigger, TriggerError> {
        self.compile_in(Some(anchor), &Calendars::new())
    }

    /// Compiles with an optional interval `anchor` (see
    /// [`Self::compile_with_anchor`]), looking the names in `calendars` up in
    /// `defined`: the trigger skips every fire time whose local date one of
    /// them lists. A name that is not defined is an error.
    pub fn compile_in(
        &self,
        anchor: Option<DateTime<Utc>>,
        defined: &Calendars,
    ) -> Result<Trigger, TriggerError> {
        let names = self.calendars();
        let trigger = self.compile_rule(anchor)?;
        if names.is_empty() {
            return Ok(trigger);
        }
        Ok(trigger.excluding(defined.resolve(names)?))
    }

    fn compile_rule(&self, anchor: Option<DateTime<Utc>>) -> Result<Trigger, TriggerError> {
        match self {
            Self::Cron {
                expr,
                timezone,
                start_date,
                end_date,
                dst,
                calendars: _,
            } => {
                let calendar = cron::parse(expr)?;
                calendar_trigger(calendar, *dst, timezone, start_date, end_date)
            }
            Self::Fields {
                year,
                month,
                day,
                week,
                day_of_week,
                hour,
                minute,
                second,
                timezone,
                start_date,
                end_date,
                dst,
                calendars: _,
            } => {
                let given = [year, month, day, week, day_of_week, hour, minute, second]
                    .map(Option::as_deref);
                let calendar = fields::parse(given)?;
                calendar_trigger(calendar, *dst, timezone, start_date, end_date)
            }
            Self::Interval {
                weeks,
                days,
                hours,
                minutes,
                seconds,
                every,
                start_date,
                end_date,
                jitter_seconds,
                timezone,
                calendars: _,
            } => {
                let units = [*weeks, *days, *hours, *minutes, *seconds];
                let period = interval::period(units, every.as_deref())?;
                let jitter = interval::jitter(*jitter_seconds)?;
                let placeholder = Kind::Interval(Interval {
                    anchor: DateTime::UNIX_EPOCH,
                    period,
                });
                let mut trigger = bounded(placeholder, timezone, start_date, end_date)?;
                let start = trigger.start_date();
                let anchor = start.or(anchor).unwrap_or(DateTime::UNIX_EPOCH);
                trigger.kind = Kind::Interval(Interval { anchor, period });
                // The start date, if any, is the anchor: kept once.
                trigger.start_is_anchor = start.is_some();
                trigger.set_limits(|l| {
                    l.start = None;
                    l.jitter = jitter;
                });
                Ok(trigger)
            }
            Self::Date { run_at } => bounded(Kind::Date(*run_at), &None, &None, &None),
        }
    }
}

fn calendar_trigger(
    calendar: Calendar,
    dst: Option<DstPolicy>,
    timezone: &Option<String>,
    start_date: &Option<String>,
    end_date: &Option<String>,
) -> Result<Trigger, TriggerError> {
    let rule = DstRule::new(dst.unwrap_or_default(), calendar.hour_wildcard);
    let mut trigger = bounded(
        Kind::Calendar(Arc::new(calendar)),
        timezone,
        start_date,
        end_date,
    )?;
    trigger.dst = rule;
    Ok(trigger)
}

fn bounded(
    kind: Kind,
    timezone: &Option<String>,
    start_date: &Option<String>,
    end_date: &Option<String>,
) -> Result<Trigger, TriggerError> {
    let zone = tz::parse_tz(timezone.as_deref())?;
    let start = start_date
        .as_deref()
        .map(|s| tz::parse_instant("start_date", s, zone))
        .transpose()?;
    let end = end_date
        .as_deref()
        .map(|s| tz::parse_instant("end_date", s, zone))
        .transpose()?;
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(TriggerError::StartAfterEnd {
            start: start.to_rfc3339(),
            end: end.to_rfc3339(),
        });
    }
    let mut trigger = Trigger {
        kind,
        tz: zone,
        dst: DstRule::Repeat,
        start_is_anchor: false,
        limits: None,
    };
    trigger.set_limits(|l| (l.start, l.end) = (start, end));
    Ok(trigger)
}
