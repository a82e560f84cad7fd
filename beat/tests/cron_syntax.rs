//! Hand-written tests for crontab-string syntax and errors (UTC unless noted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use common::{cron, err, first, next_naive, try_cron};

fn days(expr: &str, from: &str, n: usize) -> Vec<String> {
    next_naive(&cron(expr, "UTC"), from, n)
        .into_iter()
        .map(|s| s[..10].to_string())
        .collect()
}

#[test]
fn star_lists_ranges_steps() {
    let t = cron("* * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:30Z", 2),
        ["2024-01-01T00:01:00", "2024-01-01T00:02:00"]
    );
    let t = cron("*/15 * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 4),
        [
            "2024-01-01T00:15:00",
            "2024-01-01T00:30:00",
            "2024-01-01T00:45:00",
            "2024-01-01T01:00:00"
        ]
    );
    let t = cron("10-50/20 * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 4),
        [
            "2024-01-01T00:10:00",
            "2024-01-01T00:30:00",
            "2024-01-01T00:50:00",
            "2024-01-01T01:10:00"
        ]
    );
    let t = cron("5/10 * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:50:00Z", 2),
        ["2024-01-01T00:55:00", "2024-01-01T01:05:00"]
    );
    let t = cron("0,30 9-10 * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-01T09:00:00",
            "2024-01-01T09:30:00",
            "2024-01-01T10:00:00",
            "2024-01-01T10:30:00",
            "2024-01-02T09:00:00"
        ]
    );
    // A step larger than the field is allowed, as in Vixie cron.
    let t = cron("*/90 * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 1),
        ["2024-01-01T01:00:00"]
    );
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(
        days("0 0 1 JAN,jul *", "2024-01-01T00:00:00Z", 2),
        ["2024-07-01", "2025-01-01"]
    );
    assert_eq!(
        days("0 0 * * Mon,FRI", "2024-01-01T00:00:00Z", 3),
        ["2024-01-05", "2024-01-08", "2024-01-12"]
    );
    assert_eq!(
        days("0 0 * * mon-wed", "2024-01-03T12:00:00Z", 2),
        ["2024-01-08", "2024-01-09"]
    );
}

#[test]
fn sunday_is_zero_and_seven() {
    for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun", "0 0 * * SUN"] {
        assert_eq!(
            days(expr, "2024-01-01T00:00:00Z", 2),
            ["2024-01-07", "2024-01-14"],
            "{expr}"
        );
    }
    assert_eq!(
        days("0 0 * * 5-7", "2024-01-01T00:00:00Z", 4),
        ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-12"]
    );
}

#[test]
fn question_mark_is_star() {
    assert_eq!(
        days("0 0 ? * 1", "2024-01-01T00:00:00Z", 2),
        ["2024-01-08", "2024-01-15"]
    );
    assert_eq!(
        days("0 0 1 * ?", "2024-01-01T00:00:00Z", 2),
        ["2024-02-01", "2024-03-01"]
    );
}

#[test]
fn vixie_day_rule() {
    // Both restricted: the 13th OR any Friday.
    assert_eq!(
        days("0 0 13 * 5", "2024-01-01T00:00:00Z", 6),
        [
            "2024-01-05",
            "2024-01-12",
            "2024-01-13",
            "2024-01-19",
            "2024-01-26",
            "2024-02-02"
        ]
    );
    // One side `*`: only the other counts.
    assert_eq!(
        days("0 0 13 * *", "2024-01-01T00:00:00Z", 2),
        ["2024-01-13", "2024-02-13"]
    );
    assert_eq!(
        days("0 0 * * 5", "2024-01-01T00:00:00Z", 2),
        ["2024-01-05", "2024-01-12"]
    );
    // `*/2` is not `*`: odd days OR Mondays.
    assert_eq!(
        days("0 0 */2 * 1", "2024-01-06T00:00:00Z", 3),
        ["2024-01-07", "2024-01-08", "2024-01-09"]
    );
    // Special weekday forms are ORed with the day of month too.
    assert_eq!(
        days("0 0 15 * 5#3", "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-15",
            "2024-01-19",
            "2024-02-15",
            "2024-02-16",
            "2024-03-15"
        ]
    );
    assert_eq!(
        days("0 0 1 * 5L", "2024-01-02T00:00:00Z", 3),
        ["2024-01-26", "2024-02-01", "2024-02-23"]
    );
}

#[test]
fn last_day_of_month() {
    assert_eq!(
        days("0 0 L * *", "2024-01-01T00:00:00Z", 4),
        ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
    );
    assert_eq!(
        days("0 0 L * *", "2023-01-15T00:00:00Z", 2),
        ["2023-01-31", "2023-02-28"]
    );
    assert_eq!(
        days("0 0 L-3 * *", "2024-01-01T00:00:00Z", 4),
        ["2024-01-28", "2024-02-26", "2024-03-28", "2024-04-27"]
    );
    assert_eq!(
        days("0 0 1,L * *", "2024-01-01T00:00:00Z", 3),
        ["2024-01-31", "2024-02-01", "2024-02-29"]
    );
}

#[test]
fn last_and_nth_weekday() {
    for expr in ["0 0 * * 5L", "0 0 * * FRIL", "0 0 * * friL"] {
        assert_eq!(
            days(expr, "2024-01-01T00:00:00Z", 4),
            ["2024-01-26", "2024-02-23", "2024-03-29", "2024-04-26"],
            "{expr}"
        );
    }
    for expr in ["0 0 * * 5#3", "0 0 * * FRI#3", "0 0 * * fri#3"] {
        assert_eq!(
            days(expr, "2024-01-01T00:00:00Z", 3),
            ["2024-01-19", "2024-02-16", "2024-03-15"],
            "{expr}"
        );
    }
    assert_eq!(
        days("0 0 * * 5#5", "2024-01-01T00:00:00Z", 3),
        ["2024-03-29", "2024-05-31", "2024-08-30"]
    );
    assert_eq!(
        days("0 0 * * 7#1", "2024-01-01T00:00:00Z", 2),
        ["2024-01-07", "2024-02-04"]
    );
    assert_eq!(
        days("0 0 * * 1#1,5L", "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-26",
            "2024-02-05",
            "2024-02-23",
            "2024-03-04",
            "2024-03-29"
        ]
    );
}

#[test]
fn nicknames() {
    let from = "2024-01-01T00:00:00Z";
    assert_eq!(days("@yearly", from, 1), ["2025-01-01"]);
    assert_eq!(days("@annually", from, 1), ["2025-01-01"]);
    assert_eq!(days("@monthly", from, 1), ["2024-02-01"]);
    assert_eq!(days("@weekly", from, 1), ["2024-01-07"]);
    assert_eq!(days("@daily", from, 1), ["2024-01-02"]);
    assert_eq!(days("@midnight", from, 1), ["2024-01-02"]);
    assert_eq!(days("@Daily", from, 1), ["2024-01-02"]);
    assert_eq!(
        next_naive(&cron("@hourly", "UTC"), from, 1),
        ["2024-01-01T01:00:00"]
    );
}

#[test]
fn six_and_seven_fields() {
    let t = cron("*/20 * * * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T00:00:00Z", 3),
        [
            "2024-01-01T00:00:20",
            "2024-01-01T00:00:40",
            "2024-01-01T00:01:00"
        ]
    );
    assert_eq!(
        next_naive(&cron("30 0 0 1 * *", "UTC"), "2024-01-01T00:00:30Z", 1),
        ["2024-02-01T00:00:30"]
    );
    let t = cron("0 0 0 29 2 * 2024-2099/4", "UTC");
    assert_eq!(
        next_naive(&t, "2024-03-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]
    );
    let t = cron("0 0 12 1 1 * 2025", "UTC");
    assert_eq!(
        next_naive(&t, "2024-03-01T00:00:00Z", 3),
        ["2025-01-01T12:00:00"]
    );
    // Sub-second `after` rounds up to the next whole second.
    let t = cron("* * * * * *", "UTC");
    let next = first(&t, "2024-01-01T00:00:00.5Z").unwrap();
    assert_eq!(next.to_rfc3339(), "2024-01-01T00:00:01+00:00");
}

#[test]
fn wrapping_ranges() {
    let t = cron("0 22-2 * * *", "UTC");
    assert_eq!(
        next_naive(&t, "2024-01-01T03:00:00Z", 6),
        [
            "2024-01-01T22:00:00",
            "2024-01-01T23:00:00",
            "2024-01-02T00:00:00",
            "2024-01-02T01:00:00",
            "2024-01-02T02:00:00",
            "2024-01-02T22:00:00"
        ]
    );
    assert_eq!(
        days("0 0 * * fri-mon", "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-05",
            "2024-01-06",
            "2024-01-07",
            "2024-01-08",
            "2024-01-12"
        ]
    );
    assert_eq!(
        days("0 0 1 nov-feb *", "2024-01-01T00:00:00Z", 3),
        ["2024-02-01", "2024-11-01", "2024-12-01"]
    );
}

#[test]
fn leap_years_and_month_ends() {
    assert_eq!(
        days("0 0 29 2 *", "2024-03-01T00:00:00Z", 2),
        ["2028-02-29", "2032-02-29"]
    );
    // 2100 is not a leap year.
    assert_eq!(
        days("0 0 29 2 *", "2096-03-01T00:00:00Z", 1),
        ["2104-02-29"]
    );
    assert_eq!(
        days("0 0 31 * *", "2024-01-01T00:00:00Z", 5),
        [
            "2024-01-31",
            "2024-03-31",
            "2024-05-31",
            "2024-07-31",
            "2024-08-31"
        ]
    );
    assert_eq!(
        days("0 0 30 * *", "2024-01-01T00:00:00Z", 2),
        ["2024-01-30", "2024-03-30"]
    );
    assert_eq!(
        days("59 23 31 12 *", "2024-06-01T00:00:00Z", 1),
        ["2024-12-31"]
    );
}

#[test]
fn impossible_expressions_return_none() {
    for expr in [
        "0 0 30 2 *",
        "0 0 31 4,6,9,11 *",
        "0 0 0 1 1 * 2020",
        "0 0 0 30 2 * *",
    ] {
        assert_eq!(
            first(&cron(expr, "Europe/Berlin"), "2024-01-01T00:00:00Z"),
            None,
            "{expr}"
        );
    }
}

#[test]
fn error_messages() {
    let e = |expr: &str| err(try_cron(expr, "UTC"));
    assert_eq!(e("* * * *"), "expression has 4 fields, expected 5, 6 or 7");
    assert_eq!(
        e("* * * * * * * *"),
        "expression has 8 fields, expected 5, 6 or 7"
    );
    assert_eq!(e(""), "expression has 0 fields, expected 5, 6 or 7");
    assert_eq!(e("61 * * * *"), "minute: value 61 out of range 0-59");
    assert_eq!(e("0 24 * * *"), "hour: value 24 out of range 0-23");
    assert_eq!(e("0 0 0 * *"), "day_of_month: value 0 out of range 1-31");
    assert_eq!(e("0 0 * 13 *"), "month: value 13 out of range 1-12");
    assert_eq!(e("0 0 * * 8"), "day_of_week: value 8 out of range 0-7");
    assert_eq!(e("60 0 0 * * *"), "second: value 60 out of range 0-59");
    assert_eq!(
        e("0 0 0 1 1 * 1969"),
        "year: value 1969 out of range 1970-2099"
    );
    assert_eq!(
        e("0 0 * * fry"),
        "day_of_week: unknown name \"fry\", did you mean \"fri\"?"
    );
    assert_eq!(
        e("0 0 * jnu *"),
        "month: unknown name \"jnu\", did you mean \"jun\"?"
    );
    assert_eq!(e("0 0 * * xyz"), "day_of_week: unknown name \"xyz\"");
    assert_eq!(
        e("*/0 * * * *"),
        "minute: invalid step \"0\", expected a whole number of at least 1"
    );
    assert_eq!(
        e("? * * * *"),
        "minute: \"?\" is only allowed in day_of_month and day_of_week"
    );
    assert_eq!(e("0,,5 * * * *"), "minute: empty item in list \"0,,5\"");
    assert_eq!(e("a * * * *"), "minute: invalid value \"a\"");
    assert_eq!(e("5-x * * * *"), "minute: invalid value \"x\"");
    assert!(e("0 0 * * L").starts_with("day_of_week: \"L\" needs a weekday"));
    assert!(e("0 0 LW * *").contains("nearest-weekday (W) syntax is not supported"));
    assert!(e("0 0 * * 5#6").contains("expected weekday#n with n from 1 to 5"));
    assert!(e("0 0 L-31 * *").contains("expected L-n with n from 0 to 30"));
    assert_eq!(
        e("0 0 0 1 1 * 2030-2025"),
        "year: range \"2030-2025\" goes backwards"
    );
    assert_eq!(
        e("@dayly"),
        "unknown nickname \"@dayly\", did you mean \"@daily\"?"
    );
    assert_eq!(e("@reboot"), "unknown nickname \"@reboot\"");
    assert_eq!(
        err(try_cron("0 0 * * *", "Mars/Olympus")),
        "timezone: unknown time zone \"Mars/Olympus\""
    );
    assert_eq!(
        err(try_cron("0 0 * * *", "America/New_Yrok")),
        "timezone: unknown time zone \"America/New_Yrok\", did you mean \"America/New_York\"?"
    );
}
