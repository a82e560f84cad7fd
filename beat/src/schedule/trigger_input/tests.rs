use super::*;

fn input() -> TriggerInput {
    TriggerInput::default()
}

#[test]
fn builds_each_kind() {
    let cron = TriggerInput {
        cron: Some("0 3 * * *".into()),
        timezone: Some("Europe/Berlin".into()),
        ..input()
    };
    assert_eq!(
        describe(&cron.build().expect("cron")),
        "cron \"0 3 * * *\" Europe/Berlin"
    );
    let every = TriggerInput {
        every: Some("10s".into()),
        jitter: Some("2s".into()),
        ..input()
    };
    assert_eq!(
        describe(&every.build().expect("every")),
        "every 10s jitter 2s"
    );
    let fields = TriggerInput {
        fields: Some(json!({"hour": 2})),
        ..input()
    };
    assert_eq!(
        describe(&fields.build().expect("fields")),
        "fields {\"hour\":\"2\"}"
    );
    let at = TriggerInput {
        at: Some("2030-01-01T00:00:00+01:00".into()),
        ..input()
    };
    assert_eq!(
        describe(&at.build().expect("at")),
        "at 2030-01-01T00:00:00+01:00"
    );
}

#[test]
fn errors_name_the_field() {
    let err = |i: TriggerInput| i.build().map(|_| ()).expect_err("should fail").to_string();
    assert_eq!(
        err(TriggerInput {
            cron: Some("* * * * * * * *".into()),
            ..input()
        }),
        "expression has 8 fields, expected 5, 6 or 7"
    );
    assert!(
        err(TriggerInput {
            cron: Some("* * * * *".into()),
            timezone: Some("Europe/Berln".into()),
            ..input()
        })
        .starts_with("timezone: unknown time zone \"Europe/Berln\"")
    );
    assert!(
        err(TriggerInput {
            cron: Some("* * * * *".into()),
            every: Some("1s".into()),
            ..input()
        })
        .contains("only one of")
    );
    assert!(
        err(TriggerInput {
            at: Some("tomorrow".into()),
            ..input()
        })
        .starts_with("run_at: invalid date-time")
    );
    assert!(
        err(TriggerInput {
            cron: Some("* * * * *".into()),
            jitter: Some("1s".into()),
            ..input()
        })
        .starts_with("jitter:")
    );
}

#[test]
fn overlay_keeps_what_is_not_given() {
    let base = TriggerInput {
        cron: Some("0 3 * * *".into()),
        timezone: Some("Europe/Berlin".into()),
        ..input()
    }
    .build()
    .expect("base");
    let tz_only = TriggerInput {
        timezone: Some("Asia/Tokyo".into()),
        ..input()
    };
    assert_eq!(
        describe(&tz_only.overlay(Some(&base)).expect("tz")),
        "cron \"0 3 * * *\" Asia/Tokyo"
    );
    let new_kind = TriggerInput {
        cron: Some("0 4 * * *".into()),
        ..input()
    };
    assert_eq!(
        describe(&new_kind.overlay(Some(&base)).expect("kind")),
        "cron \"0 4 * * *\" Europe/Berlin"
    );
}

#[test]
fn overlay_keeps_dst_and_calendars_where_they_apply() {
    let base = TriggerInput {
        cron: Some("30 2 * * *".into()),
        timezone: Some("America/New_York".into()),
        dst: Some("repeat".into()),
        calendars: Some(vec!["us".into(), "us".into()]),
        ..input()
    }
    .build()
    .expect("base");
    assert_eq!(
        describe(&base),
        "cron \"30 2 * * *\" America/New_York dst=repeat except us"
    );
    // A new expression keeps the policy and the calendars...
    let new_expr = TriggerInput {
        cron: Some("45 2 * * *".into()),
        ..input()
    };
    assert_eq!(
        describe(&new_expr.overlay(Some(&base)).expect("expr")),
        "cron \"45 2 * * *\" America/New_York dst=repeat except us"
    );
    let fields = TriggerInput {
        fields: Some(json!({"hour": 3})),
        ..input()
    };
    assert_eq!(
        describe(&fields.overlay(Some(&base)).expect("fields")),
        "fields {\"hour\":\"3\"} America/New_York dst=repeat except us"
    );
    // ...an interval keeps the calendars only (dst does not apply)...
    let every = TriggerInput {
        every: Some("1h".into()),
        ..input()
    };
    assert_eq!(
        describe(&every.overlay(Some(&base)).expect("every")),
        "every 1h America/New_York except us"
    );
    // ...and the policy or calendars alone can change, or go.
    let back_to_cron = TriggerInput {
        dst: Some("cron".into()),
        calendars: Some(Vec::new()),
        ..input()
    };
    assert_eq!(
        describe(&back_to_cron.overlay(Some(&base)).expect("dst")),
        "cron \"30 2 * * *\" America/New_York dst=cron"
    );
    let err = TriggerInput {
        dst: Some("repaet".into()),
        ..input()
    }
    .overlay(Some(&base))
    .map(|_| ())
    .expect_err("bad policy")
    .to_string();
    assert_eq!(
        err,
        "dst: unknown policy \"repaet\", did you mean \"repeat\"?"
    );
    let on_interval = TriggerInput {
        every: Some("1h".into()),
        dst: Some("repeat".into()),
        ..input()
    }
    .build()
    .map(|_| ())
    .expect_err("dst on an interval")
    .to_string();
    assert!(on_interval.starts_with("dst: applies to cron and fields triggers only"));
}
