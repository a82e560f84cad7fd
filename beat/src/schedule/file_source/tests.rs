use super::*;
use crate::schedule::entry::{Grace, Source};

fn err(text: &str) -> String {
    celeriac_common::cli::one_line(
        &parse(text, Path::new("s.toml"))
            .map(|_| ())
            .expect_err("should fail"),
    )
}

#[test]
fn parses_every_trigger_kind() {
    let text = r#"
[entries.a]
task = "t.a"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
kwargs = { format = "pdf" }
expires = "1h"

[entries.b]
task = "t.b"
every = "10s"
misfire_grace_time = "unlimited"
coalesce = false
max_instances = 2

[entries.c]
task = "t.c"
fields = { day = "last fri", hour = 6 }

[entries.d]
task = "t.d"
at = 2030-01-01T00:00:00Z

[entries.e]
task = "t.e"
trigger = { type = "interval", minutes = 5 }
start_date = "2024-01-01"
enabled = false
description = "every five minutes, paused"
"#;
    let entries = parse(text, Path::new("s.toml")).expect("parses").entries;
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].options.expires_secs, Some(3600.0));
    assert_eq!(entries[1].firing.misfire_grace, Some(Grace::Unlimited));
    assert_eq!(entries[1].firing.max_instances, Some(2));
    assert!(!entries[4].enabled);
    assert_eq!(
        entries[4].description.as_deref(),
        Some("every five minutes, paused")
    );
    assert_eq!(entries[0].description, None);
    assert!(entries.iter().all(|e| e.source == Source::File));
}

#[test]
fn errors_are_one_line_with_the_entry_and_field() {
    assert_eq!(
        err("[entries.a]\ntask = \"t\"\ncron = \"61 * * * *\"\n"),
        "schedule file s.toml: entry \"a\": minute: value 61 out of range 0-59"
    );
    assert_eq!(
        err("[entries.a]\ntask = \"t\"\ncrn = \"* * * * *\"\n"),
        "schedule file s.toml: entry \"a\": key: unknown key \"crn\", did you mean \"cron\"?"
    );
    assert!(err("[entries.a]\ntask = \"t\"\n").contains("give one of"));
    let dup = err(
        "[entries.a]\ntask = \"t\"\nevery = \"1s\"\n[entries.a]\ntask = \"u\"\nevery = \"2s\"\n",
    );
    assert!(dup.starts_with("schedule file s.toml: line 4:"), "{dup}");
    assert!(dup.contains("duplicate"), "{dup}");
    assert!(!dup.contains('\n'));
    assert!(
        err("[entries.a]\ntask = \"t\"\nevery = \"1s\"\ntimezone = \"Mars/Base\"\n")
            .contains("timezone: unknown time zone")
    );
    assert!(err("[entry.a]\ntask = \"t\"\n").contains("unknown top-level key \"entry\""));
}
