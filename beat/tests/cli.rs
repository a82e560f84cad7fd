//! The command line: bad input gives one clear line and a non-zero exit;
//! `preview` prints timestamps only; `schedule list` shows file and
//! database entries together; a running beat follows its schedule file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

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
    // Beat remembers 100 unfinished runs an entry: a larger limit could
    // never hold a run.
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
                "--max-instances",
                "101",
            ],
        ),
        2,
        "max_instances: at most 100",
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

/// Issue #22: `calendar add|list|remove`, entries naming calendars, and
/// `preview` skipping excluded dates, against `kind`.
async fn calendars_from_the_command_line(kind: DbKind) {
    let db = TestDatabase::create(kind).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-cal"));
    let dir = tempfile::tempdir().unwrap();
    let ics = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/holidays.ics");
    let ics = ics.to_str().unwrap();

    assert_eq!(
        ok(
            &config,
            &[
                "calendar",
                "add",
                "us-holidays",
                "--date",
                "2026-07-03",
                "--label",
                "Independence Day (observed)"
            ]
        ),
        "added 1 date to us-holidays\n"
    );
    let out = cli(&config, &["calendar", "add", "us-holidays", "--ics", ics]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Christmas, the shutdown, the offsite, New Year 2027 and 2028.
    assert_eq!(out.stdout, "added 5 dates to us-holidays\n");
    ok(
        &config,
        &[
            "calendar",
            "add",
            "office",
            "--date",
            "2026-12-24",
            "--to",
            "2026-12-24",
        ],
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&config, &["calendar", "list", "us-holidays", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0]["from"], "2026-07-03");
    assert_eq!(rows[0]["label"], "Independence Day (observed)");
    assert!(rows.iter().any(|r| r["from"] == "2026-12-28"
        && r["to"] == "2026-12-31"
        && r["label"] == "Year-end shutdown"));
    let table = ok(&config, &["calendar", "list"]);
    assert!(table.starts_with("CALENDAR"), "{table}");
    assert!(table.contains("office"), "{table}");
    one_line_error(
        &cli(&config, &["calendar", "list", "us-holiday"]),
        2,
        "did you mean \"us-holidays\"?",
    );
    one_line_error(
        &cli(&config, &["calendar", "add", "x", "--date", "2026-02-30"]),
        2,
        "invalid date \"2026-02-30\"",
    );

    // Entries name calendars; an unknown one is refused with a hint.
    one_line_error(
        &cli(
            &config,
            &[
                "schedule",
                "add",
                "payroll",
                "tasks.payroll",
                "--cron",
                "0 9 * * 1-5",
                "--tz",
                "America/New_York",
                "--exclude-calendar",
                "us-holiday",
            ],
        ),
        2,
        "calendars: unknown calendar \"us-holiday\", did you mean \"us-holidays\"?",
    );
    ok(
        &config,
        &[
            "schedule",
            "add",
            "payroll",
            "tasks.payroll",
            "--cron",
            "0 9 * * 1-5",
            "--tz",
            "America/New_York",
            "--dst",
            "repeat",
            "--exclude-calendar",
            "us-holidays",
            "--exclude-calendar",
            "office",
        ],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&config, &["schedule", "list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["trigger"]["calendars"],
        serde_json::json!(["us-holidays", "office"])
    );
    assert_eq!(listed[0]["trigger"]["dst"], "repeat");
    assert_eq!(
        listed[0]["trigger_text"],
        "cron \"0 9 * * 1-5\" America/New_York dst=repeat except us-holidays,office"
    );
    // A new expression keeps the policy and the calendars.
    ok(
        &config,
        &["schedule", "modify", "payroll", "--cron", "30 9 * * 1-5"],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&config, &["schedule", "list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["trigger_text"],
        "cron \"30 9 * * 1-5\" America/New_York dst=repeat except us-holidays,office"
    );

    // Preview reads the database's calendars, and takes dates of its own.
    let preview = |extra: &[&str]| {
        let mut args = vec![
            "preview",
            "--cron",
            "0 9 * * 1-5",
            "--tz",
            "America/New_York",
            "--from",
            "2026-12-23T15:00:00Z",
            "--count",
            "2",
        ];
        args.extend_from_slice(extra);
        ok(&config, &args)
    };
    assert_eq!(
        preview(&[]),
        "2026-12-24T09:00:00-05:00\n2026-12-25T09:00:00-05:00\n"
    );
    assert_eq!(
        preview(&[
            "--exclude-calendar",
            "us-holidays",
            "--exclude-calendar",
            "office"
        ]),
        "2027-01-04T09:00:00-05:00\n2027-01-05T09:00:00-05:00\n"
    );
    assert_eq!(
        preview(&["--exclude-date", "2026-12-24..2026-12-25"]),
        "2026-12-28T09:00:00-05:00\n2026-12-29T09:00:00-05:00\n"
    );
    // A file calendar, with --schedule.
    let path = schedule_file(dir.path(), "[calendars.team]\ndates = [\"2026-12-24\"]\n");
    assert_eq!(
        preview(&[
            "--exclude-calendar",
            "team",
            "--schedule",
            path.to_str().unwrap()
        ]),
        "2026-12-25T09:00:00-05:00\n2026-12-28T09:00:00-05:00\n"
    );
    one_line_error(
        &cli(
            &config,
            &[
                "preview",
                "--cron",
                "0 9 * * *",
                "--exclude-calendar",
                "teem",
                "--schedule",
                path.to_str().unwrap(),
            ],
        ),
        2,
        "did you mean \"team\"?",
    );
    assert_eq!(
        ok(
            &config,
            &[
                "preview",
                "--cron",
                "30 1 * * *",
                "--tz",
                "America/New_York",
                "--dst",
                "repeat",
                "--from",
                "2026-10-31T12:00:00Z",
                "--count",
                "2"
            ]
        ),
        "2026-11-01T01:30:00-04:00\n2026-11-01T01:30:00-05:00\n"
    );

    // A calendar still named is not removed without --force.
    one_line_error(
        &cli(&config, &["calendar", "remove", "office"]),
        2,
        "is used by \"payroll\"",
    );
    assert_eq!(
        ok(&config, &["calendar", "remove", "office", "--force"]),
        "removed office\n"
    );
    assert_eq!(
        ok(
            &config,
            &["calendar", "remove", "us-holidays", "--date", "2026-07-03"]
        ),
        "removed 2026-07-03 from us-holidays\n"
    );
    one_line_error(
        &cli(
            &config,
            &["calendar", "remove", "us-holidays", "--date", "2026-07-03"],
        ),
        2,
        "no date or range starting on 2026-07-03",
    );
    one_line_error(
        &cli(&config, &["calendar", "remove", "offic"]),
        2,
        "unknown calendar \"offic\"",
    );
    // The entry still lists; its missing calendar excludes nothing.
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&config, &["schedule", "list", "--json"])).unwrap();
    assert!(listed[0]["next_run_at"].is_string(), "{listed}");
    ok(
        &config,
        &["schedule", "modify", "payroll", "--exclude-calendar", ""],
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&config, &["schedule", "list", "--json"])).unwrap();
    assert!(listed[0]["trigger"].get("calendars").is_none(), "{listed}");
    assert_eq!(
        ok(&config, &["calendar", "list", "--json"])
            .matches("\"from\"")
            .count(),
        5
    );
}

#[tokio::test]
async fn calendars_from_the_command_line_on_sqlite() {
    calendars_from_the_command_line(DbKind::Sqlite).await;
}

#[tokio::test]
async fn calendars_from_the_command_line_on_postgres() {
    calendars_from_the_command_line(DbKind::Postgres).await;
}

#[tokio::test]
async fn output_to_a_reader_that_stopped_ends_quietly() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    // `celeriac-beat preview ... | head -1`: the reader leaves after one
    // line of five megabytes.
    let (_db, config) = config().await;
    let mut child = celeriac_common::testing::process::command(BEAT, &config)
        .args(["preview", "--every", "1s", "--count", "200000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("20"), "{first:?}");
    drop(stdout);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
