use super::*;

fn cron(expr: &str) -> TriggerSpec {
    TriggerSpec::Cron {
        expr: expr.into(),
        timezone: None,
        start_date: None,
        end_date: None,
        dst: None,
        calendars: Vec::new(),
    }
}

#[test]
fn validation_names_the_field() {
    let ok = Entry::new("a", "tasks.a", cron("* * * * *"));
    assert!(ok.validate().is_ok());
    let bad = Entry::new("", "tasks.a", cron("* * * * *"));
    assert_eq!(
        bad.validate()
            .map(|_| ())
            .expect_err("should fail")
            .to_string(),
        "name: must not be empty"
    );
    let bad = Entry::new("a", "tasks.a", cron("61 * * * *"));
    assert_eq!(
        bad.validate()
            .map(|_| ())
            .expect_err("should fail")
            .to_string(),
        "minute: value 61 out of range 0-59"
    );
    let mut bad = Entry::new("a", "tasks.a", cron("* * * * *"));
    bad.options.expires_secs = Some(0.0);
    assert!(bad.validate().is_err());
}

#[test]
fn grace_and_overrides() {
    assert_eq!(
        Grace::parse("1m").ok(),
        Some(Grace::Within(Duration::from_secs(60)))
    );
    assert_eq!(Grace::parse("unlimited").ok(), Some(Grace::Unlimited));
    assert!(Grace::parse("soon").is_err());
    assert_eq!(Grace::from_secs_f64(-1.0), Grace::Unlimited);
    // A number edited into a row, too long for a Duration: the cap, not a panic.
    assert_eq!(
        Grace::from_secs_f64(1e20),
        Grace::Within(celeriac_common::seconds::capped(1e20).expect("cap"))
    );
    let defaults = Firing::default();
    assert_eq!(
        defaults.misfire_grace,
        Grace::Within(Duration::from_secs(60))
    );
    let own = FiringOverrides {
        coalesce: Some(false),
        ..Default::default()
    };
    let firing = own.resolve(&defaults);
    assert!(!firing.coalesce);
    assert_eq!(firing.max_instances, defaults.max_instances);
}
