//! Listing upcoming fire times, e.g. for `celeriac-beat --preview` or an API.

use chrono::{DateTime, FixedOffset, Utc};

use super::{Schedule, Trigger};

/// The next `count` fire times strictly after `from`, in the trigger's time
/// zone with the UTC offset in force at each instant (so a DST change shows up
/// as a change of offset), under the trigger's [`DstPolicy`](super::DstPolicy):
/// exactly the runs a beat sends. Fewer are returned if the trigger runs out.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use celeriac_beat::trigger::{DstPolicy, TriggerSpec, preview};
/// let nightly = |dst| TriggerSpec::Cron {
///     expr: "30 2 * * *".into(),
///     timezone: Some("Europe/Berlin".into()),
///     start_date: None,
///     end_date: None,
///     dst,
///     calendars: Vec::new(),
/// };
/// let from: DateTime<Utc> = "2024-03-30T12:00:00Z".parse().unwrap();
/// let times = |dst| -> Vec<String> {
///     let trigger = nightly(dst).compile().unwrap();
///     preview(&trigger, from, 2).iter().map(|t| t.to_rfc3339()).collect()
/// };
/// // 02:30 does not exist on 31 March in Berlin. As cron does it (the
/// // default), the run happens once, right after the jump, at 03:00 CEST...
/// assert_eq!(times(None), ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]);
/// // ...while `dst = "repeat"` shifts it by the gap, as APScheduler does.
/// assert_eq!(
///     times(Some(DstPolicy::Repeat)),
///     ["2024-03-31T03:30:00+02:00", "2024-04-01T02:30:00+02:00"]
/// );
/// ```
pub fn preview(trigger: &Trigger, from: DateTime<Utc>, count: usize) -> Vec<DateTime<FixedOffset>> {
    trigger
        .fire_times(from)
        .take(count)
        .map(|t| trigger.to_local(t))
        .collect()
}

/// Iterator over successive fire times (UTC) of a trigger; see [`Trigger::fire_times`].
#[derive(Debug, Clone)]
pub struct FireTimes<'a> {
    pub(crate) trigger: &'a Trigger,
    pub(crate) cursor: Option<DateTime<Utc>>,
}

impl Iterator for FireTimes<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.trigger.next_after(self.cursor?);
        self.cursor = next;
        next
    }
}
