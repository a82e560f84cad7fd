//! The command line: bad input gives one clear line and a non-zero exit;
//! `preview` prints timestamps only; `schedule list` shows file and
//! database entries together; a running beat follows its schedule file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use celeriac_common::testing::process::spawn_beat;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use support::{BEAT, Collector, cli, ok, schedule_file};

fn one_line_error(out: &support::Output, code: i32, needle: &str) {
    assert_eq!(out.code, code, "exit code; stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", out.stderr);
    assert!(
        lines[0].starts_with("celeriac-beat: error: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
}

async fn config() -> (TestDatabase, celeriac_common::Config) {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-cli"));
    (db, config)
}

#[tokio::test]
async fn preview_prints_timestamps_only_and_exits_2_on_bad_expressions() {
    let (_db, config) = config().await;
    let out = cli(
        &config,
        &[
            "preview",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2024-03-30T12:00:00Z",
            "--count",
            "3",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // 02:30 does not exist that night: as cron does it, once, at the jump.
    assert_eq!(
        out.stdout,
        "2024-03-31T03:00:00+02:00\n2024-04-01T02:30:00+02:00\n2024-04-02T02:30:00+02:00\n"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    // Issue #22: a nightly job runs once on the night clocks go back...
    let nightly = |fields: &str| {
        cli(
            &config,
            &[
                "preview",
                "--fields",
                fields,
                "--tz",
                "America/New_York",
                "--from",
                "2026-10-31T12:00:00Z",
                "--count",
                "3",
            ],
        )
        .stdout
    };
    assert_eq!(
        nightly(r#"{"hour": 1, "minute": 30}"#),
        "2026-11-01T01:30:00-04:00\n2026-11-02T01:30:00-05:00\n2026-11-03T01:30:00-05:00\n"
    );
    // ...and twice with dst = "repeat".
    assert_eq!(
        nightly(r#"{"hour": 1, "minute": 30, "dst": "repeat"}"#),
        "2026-11-01T01:30:00-04:00\n2026-11-01T01:30:00-05:00\n2026-11-02T01:30:00-05:00\n"
    );
    let out = cli(
        &config,
        &[
            "preview",
            "--fields",
            r#"{"day": "last fri", "hour": 6}"#,
            "--from",
            "2024-01-01T00:00:00Z",
            "--count",
            "2",
        ],
    );
    assert_eq!(
        out.stdout,
        "2024-01-26T06:00:00+00:00\n2024-02-23T06:00:00+00:00\n"
    );
    let out = cli(
        &config,
        &[
            "preview",
            "--every",
            "90m",
            "--start",
            "2024-01-01T00:00:00Z",
            "--end",
            "2024-01-01T03:00:00Z",
            "--from",
            "2023-12-31T00:00:00Z",
        ],
    );
    assert_eq!(
        out.stdout,
        "2024-01-01T00:00:00+00:00\n2024-01-01T01:30:00+00:00\n2024-01-01T03:00:00+00:00\n"
    );

    one_line_error(
        &cli(&config, &["preview", "--cron", "61 * * * *"]),
        2,
        "minute: value 61 out of range 0-59",
    );
    one_line_error(
        &cli(&config, &["preview", "--cron", "0 0 * * fry"]),
        2,
        "day_of_week: unknown name \"fry\", did you mean \"fri\"?",
    );
    one_line_error(
        &cli(&config, &["preview", "--fields", r#"{"hour": "25"}"#]),
        2,
        "hour:",
    );
    one_line_error(
        &cli(&config, &["preview", "--fields", r#"{"minuet": 5}"#]),
        2,
        "did you mean \"minute\"",
    );
    one_line_error(
        &cli(&config, &["preview", "--every", "90"]),
        2,
        "every: invalid duration \"90\"",
    );
    one_line_error(
        &cli(
            &config,
            &["preview", "--cron", "* * * * *", "--tz", "Europe/Berln"],
        ),
        2,
        "timezone: unknown time zone \"Europe/Berln\"",
    );
    one_line_error(
        &cli(
            &config,
            &["preview", "--cron", "* * * * *", "--from", "yesterday"],
        ),
        2,
        "from: invalid instant",
    );
    one_line_error(
        &cli(&config, &["preview"]),
        2,
        "give one of --cron, --fields, --every or --at",
    );
}

#[tokio::test]
async fn schedule_commands_reject_bad_input_with_one_line() {
    let (_db, config) = config().await;
    ok(
        &config,
        &["schedule", "add", "a", "tasks.a", "--cron", "*/5 * * * *"],
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "add", "a", "tasks.a", "--every", "1m"],
        ),
        2,
        "entry \"a\" already exists",
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "add", "b", "tasks.b", "--cron", "* * * *"],
        ),
        2,
        "expression has 4 fields",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "add",
                "b",
                "tasks.b",
                "--cron",
                "* * * * *",
                "--tz",
                "Mars/Olympus",
            ],
        ),
        2,
        "timezone: unknown time zone",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule", "add", "b", "tasks.b", "--every", "1m", "--args", "{}",
            ],
        ),
        2,
        "args: expected a JSON array",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule", "add", "b", "tasks.b", "--every", "1m", "--kwargs", "[1]",
            ],
        ),
        2,
        "kwargs: expected a JSON object",
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "add", "b", "tasks.b", "--at", "soon"],
        ),
        2,
        "run_at: invalid date-time",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "add",
                "b",
                "tasks.b",
                "--every",
                "1m",
                "--cron",
                "* * * * *",
            ],
        ),
        2,
        "only one of",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "add",
                "b",
                "tasks.b",
                "--every",
                "1m",
                "--misfire-grace",
                "soon",
            ],
        ),
        2,
        "misfire_grace_time",
    );
    for verb in ["remove", "pause", "resume", "run-now"] {
        one_line_error(
            &cli(&config, &["schedule", verb, "nope"]),
            2,
            "unknown entry \"nope\"",
        );
    }
    one_line_error(
        &cli(&config, &["schedule", "modify", "nope", "--every", "1m"]),
        2,
        "unknown entry \"nope\"",
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "modify", "a", "--cron", "0 0 31 2 *"],
        ),
        2,
        "trigger: never fires",
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "add",
                "b",
                "tasks.b",
                "--at",
                "2001-01-01T00:00:00Z",
            ],
        ),
        2,
        "trigger: never fires",
    );
    one_line_error(
        &cli(&config, &["preview", "--cron", "0 0 30 2 *"]),
        2,
        "trigger: never fires",
    );
    // Nothing bad was stored.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&config, &["schedule", "list", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["trigger_text"], "cron \"*/5 * * * *\"");
    // A database that cannot be opened: one line, exit 1.
    let mut broken = config.clone();
    broken.result_backend = "sqlite:///nonexistent-dir/x.db?mode=rwc".into();
    one_line_error(
        &cli(&broken, &["schedule", "list"]),
        1,
        "cannot open result backend",
    );
}

#[tokio::test]
async fn bad_schedule_files_stop_beat_with_one_line() {
    let (_db, config) = config().await;
    let dir = tempfile::tempdir().unwrap();
    let dup = schedule_file(
        dir.path(),
        "[entries.a]\ntask = \"t\"\nevery = \"1s\"\n\n[entries.a]\ntask = \"u\"\nevery = \"2s\"\n",
    );
    one_line_error(
        &cli(&config, &["run", "--schedule", dup.to_str().unwrap()]),
        2,
        "duplicate",
    );
    let bad = schedule_file(
        dir.path(),
        "[entries.a]\ntask = \"t\"\ncron = \"0 0 * * *\"\ntimezone = \"Nowhere/City\"\n",
    );
    one_line_error(
        &cli(&config, &["run", "--schedule", bad.to_str().unwrap()]),
        2,
        "entry \"a\": timezone: unknown time zone",
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "list", "--schedule", bad.to_str().unwrap()],
        ),
        2,
        "entry \"a\"",
    );
}

#[tokio::test]
async fn list_shows_the_description_of_a_file_entry() {
    let (_db, config) = config().await;
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(
        dir.path(),
        "[entries.nightly]\ntask = \"celeriac.noop\"\ncron = \"0 3 * * *\"\ndescription = \"the nightly report\"\n\n[entries.plain]\ntask = \"celeriac.noop\"\nevery = \"1m\"\n",
    );
    let path = file.to_str().unwrap();
    let table = ok(&config, &["schedule", "--schedule", path, "list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(header.ends_with("DESCRIPTION"), "{table}");
    let nightly = table.lines().find(|l| l.starts_with("nightly")).unwrap();
    assert!(nightly.ends_with("the nightly report"), "{table}");
    let list: serde_json::Value = serde_json::from_str(&ok(
        &config,
        &["schedule", "--schedule", path, "list", "--json"],
    ))
    .unwrap();
    assert_eq!(list[0]["name"], "nightly");
    assert_eq!(list[0]["description"], "the nightly report");
    assert_eq!(list[1]["name"], "plain");
    assert!(list[1]["description"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_file_and_database_entries_and_beat_follows_the_file() {
    let (_db, mut config) = config().await;
    config.beat_lease_secs = 2;
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(
        dir.path(),
        "[entries.from-file]\ntask = \"celeriac.noop\"\nevery = \"1s\"\n",
    );
    let path = file.to_str().unwrap();
    ok(
        &config,
        &[
            "schedule",
            "add",
            "from-db",
            "celeriac.noop",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
        ],
    );
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "--schedule",
                path,
                "add",
                "from-file",
                "t",
                "--every",
                "1m",
            ],
        ),
        2,
        "already exists in the schedule file",
    );
    one_line_error(
        &cli(
            &config,
            &["schedule", "--schedule", path, "pause", "from-file"],
        ),
        2,
        "edit the file",
    );
    let table = ok(&config, &["schedule", "--schedule", path, "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("from-file") && table.contains("file") && table.contains("every 1s"),
        "{table}"
    );
    assert!(
        table.contains("from-db")
            && table.contains("database")
            && table.contains("cron \"0 3 * * *\" Europe/Berlin"),
        "{table}"
    );

    let collector = Collector::start(&config).await;
    let beat = spawn_beat(BEAT, &config, &["--schedule", path]);
    collector
        .wait_for("from-file", 2, Duration::from_secs(30))
        .await;
    // Edit the file: the new entry runs, the removed one stops.
    std::fs::write(
        &file,
        "[entries.renamed]\ntask = \"celeriac.noop\"\nevery = \"1s\"\n",
    )
    .unwrap();
    collector
        .wait_for("renamed", 2, Duration::from_secs(30))
        .await;
    let stopped = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !collector
            .of("from-file")
            .iter()
            .any(|m| m.received_at > stopped + chrono::TimeDelta::milliseconds(1100))
    );
    // A broken edit is logged and the previous entries stay in force.
    std::fs::write(
        &file,
        "[entries.renamed]\ntask = \"celeriac.noop\"\nevery = \"1 parsec\"\n",
    )
    .unwrap();
    beat.wait_log("schedule file not reloaded", Duration::from_secs(10));
    let before = collector.of("renamed").len();
    collector
        .wait_for("renamed", before + 2, Duration::from_secs(10))
        .await;
    // SIGHUP reloads at once.
    std::fs::write(&file, "[entries.renamed]\ntask = \"celeriac.noop\"\nevery = \"1s\"\n\n[entries.hup]\ntask = \"celeriac.noop\"\nevery = \"1s\"\n").unwrap();
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(beat.pid().to_string())
        .status();
    collector.wait_for("hup", 1, Duration::from_secs(10)).await;
    assert_eq!(beat.terminate(), Some(0));
    testing::cleanup(&config).await;
}
