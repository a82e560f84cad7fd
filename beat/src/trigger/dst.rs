//! What a calendar trigger does when the clock jumps: the `dst` policy.
//!
//! * [`DstPolicy::Cron`] (the default) is what Vixie cron and cronie do. When
//!   the clock goes back, an entry whose hour is *fixed* runs once, in the
//!   first pass of the repeated wall time, and an entry whose hour is a
//!   *wildcard* runs at every real instant that matches (both passes). When
//!   the clock jumps forward, a fixed-hour entry whose wall time(s) were
//!   skipped runs once, at the instant of the jump; a wildcard-hour entry
//!   simply does not see the skipped times.
//! * [`DstPolicy::Repeat`] is what APScheduler 3.x does: every matching
//!   instant fires, in both passes, and a skipped wall time fires shifted
//!   forward by the length of the gap (02:30 becomes 03:30).
//!
//! The hour is a wildcard when the hour field starts with `*` (`*`, `*/2`);
//! for APScheduler fields also when `hour` is left out and the fill rule makes
//! it `*` (`{minute = 0}`). Any other hour (`1`, `1-3`, `9,17`) is fixed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{TriggerError, suggest};

/// What a `cron` or `fields` trigger does around daylight-saving changes
/// (`dst = "cron"` or `dst = "repeat"`; see [`crate::trigger`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DstPolicy {
    /// As cron does it (the default): fixed-hour entries run once when the
    /// clock goes back and catch up once, right after the jump, when it goes
    /// forward; wildcard-hour entries follow real time.
    #[default]
    Cron,
    /// Every instant whose wall time matches fires (twice when the clock goes
    /// back); a skipped wall time fires shifted forward by the gap, as
    /// APScheduler 3.x does.
    Repeat,
}

impl DstPolicy {
    /// The names accepted in files and on the command line.
    pub const NAMES: [&'static str; 2] = ["cron", "repeat"];

    /// The name used in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cron => "cron",
            Self::Repeat => "repeat",
        }
    }
}

impl fmt::Display for DstPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DstPolicy {
    type Err = TriggerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cron" => Ok(Self::Cron),
            "repeat" => Ok(Self::Repeat),
            _ => Err(TriggerError::invalid(
                "dst",
                match suggest(s, Self::NAMES) {
                    Some(n) => format!("unknown policy \"{s}\", did you mean \"{n}\"?"),
                    None => format!("unknown policy \"{s}\", expected \"cron\" or \"repeat\""),
                },
            )),
        }
    }
}

/// How one compiled calendar trigger turns wall times into instants around a
/// UTC offset change: the policy combined with the entry's hour field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DstRule {
    /// [`DstPolicy::Repeat`]: both passes; gap times shifted forward by the gap.
    Repeat,
    /// [`DstPolicy::Cron`], fixed hour: first pass only; gap times run once at the jump.
    FixedHour,
    /// [`DstPolicy::Cron`], wildcard hour: both passes; gap times do not happen.
    WildcardHour,
}

impl DstRule {
    pub(crate) fn new(policy: DstPolicy, hour_wildcard: bool) -> Self {
        match (policy, hour_wildcard) {
            (DstPolicy::Repeat, _) => Self::Repeat,
            (DstPolicy::Cron, false) => Self::FixedHour,
            (DstPolicy::Cron, true) => Self::WildcardHour,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_suggests() {
        assert_eq!("repeat".parse::<DstPolicy>().unwrap(), DstPolicy::Repeat);
        assert_eq!(" Cron ".parse::<DstPolicy>().unwrap(), DstPolicy::Cron);
        assert_eq!(
            "repaet".parse::<DstPolicy>().unwrap_err().to_string(),
            "dst: unknown policy \"repaet\", did you mean \"repeat\"?"
        );
        assert_eq!(
            "twice".parse::<DstPolicy>().unwrap_err().to_string(),
            "dst: unknown policy \"twice\", expected \"cron\" or \"repeat\""
        );
        assert_eq!(DstPolicy::default(), DstPolicy::Cron);
        assert_eq!(DstPolicy::Repeat.to_string(), "repeat");
    }
}
