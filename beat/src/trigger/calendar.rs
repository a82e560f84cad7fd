//! The compiled calendar matcher shared by crontab strings ([`super::cron`]) and
//! APScheduler-style fields ([`super::fields`]).
//!
//! A [`Calendar`] is a handful of bitsets (seconds, minutes, hours, months, ISO
//! weeks) plus two [`DaySet`]s for the day-of-month and day-of-week sides and an
//! optional list of year ranges. [`Calendar::next_local`] finds the first
//! matching *wall-clock* time at or after a given one by skipping whole years,
//! months and days that cannot match, so a yearly or leap-day schedule costs a
//! few dozen steps and an impossible one gives up after 400 candidate years
//! (the Gregorian calendar repeats every 400 years).

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Weekday};

/// Bit in [`DaySet::nth`] meaning "the last such weekday of the month".
pub(crate) const NTH_LAST: u8 = 1 << 5;
/// All ISO week numbers 1..=53.
pub(crate) const ALL_WEEKS: u64 = ((1u64 << 54) - 1) & !1;
/// How many candidate years a search examines before giving up.
const MAX_YEARS_EXAMINED: u32 = 400;
/// Searches never go past this year.
pub(crate) const MAX_YEAR: i32 = 9999;

/// A set of days, evaluated per month. Any member matching makes the day match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct DaySet {
    /// Bit `d` set: day-of-month `d` (1..=31).
    pub(crate) days: u32,
    /// Bit `n` set: the day `n` days before the last day of the month (`L-n`).
    pub(crate) last: u32,
    /// Bit `w` set: every weekday `w` (0 = Monday .. 6 = Sunday).
    pub(crate) weekdays: u8,
    /// Per weekday (0 = Monday): bit `k-1` = its `k`th occurrence (1..=5),
    /// [`NTH_LAST`] = its last occurrence in the month.
    pub(crate) nth: [u8; 7],
}

impl DaySet {
    /// The matching days of a month whose first day is weekday `first`
    /// (0 = Monday) and which has `len` days, as bits 1..=len.
    fn mask(&self, first: u32, len: u32) -> u32 {
        let valid = month_bits(len);
        let mut mask = self.days & valid;
        let mut last = self.last;
        while last != 0 {
            let n = last.trailing_zeros();
            last &= last - 1;
            if n < len {
                mask |= 1 << (len - n);
            }
        }
        if self.weekdays != 0 {
            mask |= weekday_bits(self.weekdays, first) & valid;
        }
        for (weekday, bits) in (0u32..).zip(self.nth) {
            if bits == 0 {
                continue;
            }
            let first_hit = 1 + (weekday + 7 - first) % 7;
            for k in 0..5 {
                let day = first_hit + 7 * k;
                if bits & (1 << k) != 0 && day <= len {
                    mask |= 1 << day;
                }
            }
            if bits & NTH_LAST != 0 {
                mask |= 1 << (first_hit + 7 * ((len - first_hit) / 7));
            }
        }
        mask
    }
}

/// How the day-of-month and day-of-week sides combine when both are restricted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DayCombine {
    /// Both must match (APScheduler fields).
    And,
    /// Either may match (Vixie cron, when neither side is `*`).
    Or,
}

/// An inclusive arithmetic progression of years: `first, first+step, ... <= last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct YearRange {
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) step: u16,
}

impl YearRange {
    fn next_at_or_after(&self, year: i32) -> Option<i32> {
        let (first, last, step) = (
            i32::from(self.first),
            i32::from(self.last),
            i32::from(self.step.max(1)),
        );
        let y = if year <= first {
            first
        } else {
            first + (year - first + step - 1) / step * step
        };
        (y <= last).then_some(y)
    }
}

/// A compiled calendar expression, evaluated on wall-clock (naive) time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Calendar {
    pub(crate) seconds: u64,
    pub(crate) minutes: u64,
    pub(crate) hours: u32,
    /// Bits 1..=12.
    pub(crate) months: u16,
    /// Day-of-month side; `None` means unrestricted.
    pub(crate) dom: Option<DaySet>,
    /// Day-of-week side; `None` means unrestricted.
    pub(crate) dow: Option<DaySet>,
    /// How `dom` and `dow` combine when both are present.
    pub(crate) combine: DayCombine,
    /// ISO week numbers, bits 1..=53 ([`ALL_WEEKS`] when unrestricted).
    pub(crate) weeks: u64,
    /// Allowed years; `None` means every year.
    pub(crate) years: Option<Box<[YearRange]>>,
    /// Set by [`Calendar::seal`] when no day can ever match.
    pub(crate) never: bool,
    /// Whether the hour was written as a wildcard (`*`, `*/2`, or filled as
    /// `*`), which decides the [`super::DstPolicy::Cron`] rule.
    pub(crate) hour_wildcard: bool,
}

impl Calendar {
    /// Finishes construction: records whether the expression can ever match,
    /// so that `next_local` on an impossible expression returns at once.
    pub(crate) fn seal(mut self) -> Self {
        let start_year = self
            .years
            .as_deref()
            .and_then(|ys| ys.iter().map(|r| i32::from(r.first)).min())
            .unwrap_or(2000);
        let start = NaiveDate::from_ymd_opt(start_year, 1, 1).map(|d| d.and_time(NaiveTime::MIN));
        self.never = start.is_none_or(|s| self.search(s).is_none());
        self
    }

    /// The first matching wall-clock second at or after `from` (local seconds
    /// since the epoch, i.e. a naive date-time encoded as if it were UTC).
    pub(crate) fn next_local(&self, from: i64) -> Option<i64> {
        if self.never {
            return None;
        }
        let from = chrono::DateTime::from_timestamp(from, 0)?.naive_utc();
        self.search(from).map(|t| t.and_utc().timestamp())
    }

    /// Whether the wall-clock time matches (used by tests and assertions).
    #[cfg(test)]
    pub(crate) fn matches(&self, t: NaiveDateTime) -> bool {
        self.search(t) == Some(t)
    }

    fn search(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let from_date = from.date();
        let mut year = from.year();
        for _ in 0..MAX_YEARS_EXAMINED {
            year = self.next_year(year)?;
            if year > MAX_YEAR {
                return None;
            }
            let first_month = if year == from.year() { from.month() } else { 1 };
            let months = u32::from(self.months) & !((1u32 << first_month) - 1);
            let mut months = months;
            while months != 0 {
                let month = months.trailing_zeros();
                months &= months - 1;
                let mut mask = self.day_mask(year, month)?;
                if year == from.year() && month == from.month() {
                    mask &= !((1u32 << from.day()) - 1);
                }
                while mask != 0 {
                    let day = mask.trailing_zeros();
                    mask &= mask - 1;
                    let date = NaiveDate::from_ymd_opt(year, month, day)?;
                    if date == from_date {
                        if let Some(time) = self.next_time(from.time()) {
                            return Some(date.and_time(time));
                        }
                    } else {
                        return Some(date.and_time(self.first_time()?));
                    }
                }
            }
            year += 1;
        }
        None
    }

    fn next_year(&self, year: i32) -> Option<i32> {
        match self.years.as_deref() {
            None => Some(year),
            Some(ranges) => ranges.iter().filter_map(|r| r.next_at_or_after(year)).min(),
        }
    }

    /// Matching days of `year-month` as bits 1..=31.
    fn day_mask(&self, year: i32, month: u32) -> Option<u32> {
        let first_date = NaiveDate::from_ymd_opt(year, month, 1)?;
        let len = days_in_month(year, month);
        let first = first_date.weekday().num_days_from_monday();
        let all = month_bits(len);
        let dom = self.dom.as_ref().map_or(all, |s| s.mask(first, len));
        let dow = self.dow.as_ref().map_or(all, |s| s.mask(first, len));
        let mut mask = match (&self.dom, &self.dow, self.combine) {
            (Some(_), Some(_), DayCombine::Or) => dom | dow,
            _ => dom & dow,
        };
        if self.weeks != ALL_WEEKS && mask != 0 {
            mask &= self.week_mask(first_date, len);
        }
        Some(mask)
    }

    fn week_mask(&self, first_date: NaiveDate, len: u32) -> u32 {
        let mut mask = 0;
        let mut week = first_date.iso_week().week();
        let mut date = first_date;
        for day in 1..=len {
            if day > 1 {
                date = date.succ_opt().unwrap_or(date);
                if date.weekday() == Weekday::Mon {
                    week = date.iso_week().week();
                }
            }
            if self.weeks & (1 << week) != 0 {
                mask |= 1 << day;
            }
        }
        mask
    }

    fn first_time(&self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(
            self.hours.trailing_zeros(),
            self.minutes.trailing_zeros(),
            self.seconds.trailing_zeros(),
        )
    }

    /// The first matching time of day at or after `t`, if any.
    fn next_time(&self, t: NaiveTime) -> Option<NaiveTime> {
        let (h, m, s) = (t.hour(), t.minute(), t.second());
        let min_s = self.seconds.trailing_zeros();
        let min_m = self.minutes.trailing_zeros();
        if self.hours & (1 << h) != 0 {
            if self.minutes & (1 << m) != 0
                && let Some(sec) = next_bit(self.seconds, s)
            {
                return NaiveTime::from_hms_opt(h, m, sec);
            }
            if let Some(min) = next_bit(self.minutes, m + 1) {
                return NaiveTime::from_hms_opt(h, min, min_s);
            }
        }
        let hour = next_bit(u64::from(self.hours), h + 1)?;
        NaiveTime::from_hms_opt(hour, min_m, min_s)
    }
}

/// The lowest set bit at position `>= from`.
fn next_bit(set: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = set >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// Bits 1..=len.
fn month_bits(len: u32) -> u32 {
    ((1u64 << (len + 1)) - 2) as u32
}

/// Days (bits 1..=31) of a month starting on weekday `first` whose weekday is in `weekdays`.
fn weekday_bits(weekdays: u8, first: u32) -> u32 {
    let mut week = 0u32;
    for i in 0..7 {
        if weekdays & (1 << ((first + i) % 7)) != 0 {
            week |= 1 << i;
        }
    }
    let repeated = u64::from(week) * 0b1_0000001_0000001_0000001_0000001;
    ((repeated << 1) & 0xFFFF_FFFE) as u32
}

/// Number of days in a month of the proleptic Gregorian calendar.
pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        _ => 28,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn every() -> Calendar {
        Calendar {
            seconds: (1 << 60) - 1,
            minutes: (1 << 60) - 1,
            hours: (1 << 24) - 1,
            months: 0b1_1111_1111_1110,
            dom: None,
            dow: None,
            combine: DayCombine::And,
            weeks: ALL_WEEKS,
            years: None,
            never: false,
            hour_wildcard: true,
        }
    }

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn weekday_bits_align_with_calendar() {
        // 2024-01-01 is a Monday (0); Sundays are the 7th, 14th, 21st, 28th.
        let bits = weekday_bits(1 << 6, 0);
        assert_eq!(bits, (1 << 7) | (1 << 14) | (1 << 21) | (1 << 28));
        // A month starting on Sunday (6): Sundays 1, 8, 15, 22, 29.
        let bits = weekday_bits(1 << 6, 6);
        assert_eq!(
            bits,
            (1 << 1) | (1 << 8) | (1 << 15) | (1 << 22) | (1 << 29)
        );
        // Tuesday in a month starting Monday: 2, 9, 16, 23, 30.
        assert_eq!(weekday_bits(1 << 1, 0) & (1 << 30), 1 << 30);
    }

    #[test]
    fn nth_and_last() {
        let mut set = DaySet::default();
        set.nth[4] = 1 << 2 | NTH_LAST; // third and last Friday
        // January 2024 starts on Monday: Fridays 5, 12, 19, 26.
        assert_eq!(set.mask(0, 31), (1 << 19) | (1 << 26));
        let set = DaySet {
            last: 1 | (1 << 3),
            ..DaySet::default()
        };
        assert_eq!(set.mask(3, 29), (1 << 29) | (1 << 26));
    }

    #[test]
    fn seconds_search_and_rollover() {
        let mut cal = every();
        cal.seconds = 1 << 30;
        cal.minutes = 1 << 59;
        cal.hours = 1 << 23;
        let t = cal.search(at("2024-12-31 23:59:31")).unwrap();
        assert_eq!(t, at("2025-01-01 23:59:30"));
        assert!(cal.matches(at("2025-01-01 23:59:30")));
    }

    #[test]
    fn impossible_is_sealed() {
        let mut cal = every();
        cal.months = 1 << 2;
        cal.dom = Some(DaySet {
            days: 1 << 30,
            ..DaySet::default()
        });
        let cal = cal.seal();
        assert!(cal.never);
        assert_eq!(cal.next_local(0), None);
    }

    #[test]
    fn year_ranges() {
        let r = YearRange {
            first: 2000,
            last: 2010,
            step: 4,
        };
        assert_eq!(r.next_at_or_after(1990), Some(2000));
        assert_eq!(r.next_at_or_after(2001), Some(2004));
        assert_eq!(r.next_at_or_after(2008), Some(2008));
        assert_eq!(r.next_at_or_after(2009), None);
    }
}
