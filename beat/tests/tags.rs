//! Tags and workflow entries on the command line, on each database: `list`,
//! `pause`, `resume` and `remove --tag` act on exactly the entries with the
//! tag; a tag no entry has, and a malformed workflow, are one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use celeriac_common::Config;
use celeriac_common::testing::{self, DbKind, TestDatabase, unique};
use serde_json::Value;
use support::{Output, cli, ok, schedule_file};

const FILE: &str = r#"
[entries.file-nightly]
task = "tasks.file"
cron = "0 3 * * *"
tags = ["nightly", "file-only"]
"#;

fn one_line_error(out: &Output, needle: &str) {
    assert_eq!(out.code, 2, "exit code; stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", out.stderr);
    assert!(
        lines[0].starts_with("celeriac-beat: error: "),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

/// (name, enabled) of the entries `schedule list --json ARGS` shows.
fn listed(config: &Config, file: &str, args: &[&str]) -> Vec<(String, bool)> {
    let mut all = vec!["schedule", "list", "--json", "--schedule", file];
    all.extend_from_slice(args);
    let rows: Vec<Value> = serde_json::from_str(&ok(config, &all)).unwrap();
    rows.iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["enabled"] == true))
        .collect()
}

fn names(rows: &[(String, bool)]) -> Vec<&str> {
    rows.iter().map(|(n, _)| n.as_str()).collect()
}

async fn tags_select_entries(kind: DbKind) {
    let db = TestDatabase::create(kind).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-tags"));
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(dir.path(), FILE);
    let file = file.to_str().unwrap();
    let every = ["--every", "1h"];
    let add = |name: &str, rest: &[&str]| {
        let mut args = vec!["schedule", "add", name];
        args.extend_from_slice(rest);
        args.extend_from_slice(&every);
        ok(&config, &args);
    };
    add("a", &["tasks.a", "--tag", "nightly", "--tag", "billing"]);
    add("b", &["tasks.b", "--tag", "nightly"]);
    add("c", &["tasks.c", "--tag", "billing"]);
    let flow = r#"{"chain": ["etl.extract", {"group": ["etl.eu", "etl.us"]}, "etl.load"]}"#;
    add("w", &["--workflow", flow, "--tag", "reports"]);

    let nightly = listed(&config, file, &["--tag", "nightly"]);
    assert_eq!(names(&nightly), ["a", "b", "file-nightly"]);
    let table = ok(&config, &["schedule", "list", "--schedule", file]);
    assert!(
        table.contains("workflow: etl.extract → (etl.eu, etl.us) → etl.load"),
        "{table}"
    );
    assert!(table.contains("nightly,billing"), "{table}");

    // pause: the database entries with the tag; the file's is named, not changed.
    let out = cli(
        &config,
        &["schedule", "pause", "--tag", "nightly", "--schedule", file],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "paused a\npaused b\n");
    assert!(out.stderr.contains("\"file-nightly\""), "{}", out.stderr);
    let all = listed(&config, file, &[]);
    let enabled = |n: &str| all.iter().find(|(m, _)| m == n).map(|(_, e)| *e);
    assert_eq!(enabled("a"), Some(false));
    assert_eq!(enabled("b"), Some(false));
    assert_eq!(enabled("c"), Some(true));
    assert_eq!(enabled("w"), Some(true));
    assert_eq!(
        ok(&config, &["schedule", "resume", "--tag", "nightly"]),
        "resumed a\nresumed b\n"
    );
    assert!(listed(&config, file, &[]).iter().all(|(_, e)| *e));

    // modify replaces the tags; remove --tag removes exactly the tagged ones.
    ok(&config, &["schedule", "modify", "b", "--tag", "billing"]);
    assert_eq!(
        ok(&config, &["schedule", "remove", "--tag", "billing"]),
        "removed a\nremoved b\nremoved c\n"
    );
    assert_eq!(names(&listed(&config, file, &[])), ["file-nightly", "w"]);

    // A tag that matches nothing, or only file entries: exit 2, one line.
    let out = cli(
        &config,
        &["schedule", "pause", "--tag", "reprots", "--schedule", file],
    );
    one_line_error(
        &out,
        "no entry has tag \"reprots\", did you mean \"reports\"?",
    );
    let out = cli(
        &config,
        &["schedule", "list", "--tag", "weekly", "--schedule", file],
    );
    one_line_error(&out, "no entry has tag \"weekly\"");
    let out = cli(
        &config,
        &[
            "schedule",
            "remove",
            "--tag",
            "file-only",
            "--schedule",
            file,
        ],
    );
    one_line_error(&out, "defined in the schedule file");
    let out = cli(&config, &["schedule", "resume", "--tag", "billing"]);
    one_line_error(&out, "no entry has tag \"billing\"");
    let out = cli(
        &config,
        &[
            "schedule",
            "add",
            "x",
            "tasks.x",
            "--tag",
            "two words",
            "--every",
            "1h",
        ],
    );
    one_line_error(&out, "tags: tag \"two words\" contains whitespace");
    testing::cleanup(&config).await;
}

#[tokio::test]
async fn tags_select_entries_sqlite() {
    tags_select_entries(DbKind::Sqlite).await;
}

#[tokio::test]
async fn tags_select_entries_postgres() {
    tags_select_entries(DbKind::Postgres).await;
}

#[tokio::test]
async fn tags_select_entries_mysql() {
    tags_select_entries(DbKind::Mysql).await;
}

#[tokio::test]
async fn malformed_workflows_are_refused_naming_the_entry() {
    let db = TestDatabase::create(DbKind::Sqlite).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-wf-bad"));
    let add = |flow: &str| {
        cli(
            &config,
            &[
                "schedule",
                "add",
                "bad",
                "--workflow",
                flow,
                "--every",
                "1h",
            ],
        )
    };
    one_line_error(
        &add(r#"{"chord": [], "body": "d"}"#),
        "workflow: chord: is empty",
    );
    one_line_error(&add("{not json"), "workflow: invalid JSON");
    one_line_error(
        &add(r#"{"task": "x", "subtask_type": "xmap"}"#),
        "subtask_type \"xmap\" is not supported",
    );
    let group = r#"{"group": ["a", "b"]}"#;
    let out = cli(
        &config,
        &[
            "schedule",
            "add",
            "g",
            "--workflow",
            group,
            "--every",
            "1h",
            "--max-instances",
            "1",
        ],
    );
    one_line_error(&out, "max_instances: this workflow ends in a group");
    // A task and a workflow, or neither: a usage error from the parser.
    let both = cli(
        &config,
        &[
            "schedule",
            "add",
            "t",
            "tasks.t",
            "--workflow",
            "\"a\"",
            "--every",
            "1h",
        ],
    );
    assert_eq!(both.code, 2, "{}", both.stderr);
    let neither = cli(&config, &["schedule", "add", "t", "--every", "1h"]);
    assert_eq!(neither.code, 2, "{}", neither.stderr);

    // In the schedule file: `run` and `list` stop with the entry's name.
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(
        dir.path(),
        "[entries.etl]\nevery = \"1h\"\nworkflow = { chain = [\"a\", { group = [] }] }\n",
    );
    let file = file.to_str().unwrap();
    let out = cli(&config, &["schedule", "list", "--schedule", file]);
    one_line_error(&out, "entry \"etl\": workflow: chain[1].group: is empty");
    let out = cli(&config, &["run", "--schedule", file]);
    one_line_error(&out, "entry \"etl\": workflow: chain[1].group: is empty");
    let missing = schedule_file(
        dir.path(),
        "[entries.etl]\nevery = \"1h\"\nworkflow_file = \"nope.json\"\n",
    );
    let out = cli(
        &config,
        &["schedule", "list", "--schedule", missing.to_str().unwrap()],
    );
    one_line_error(&out, "entry \"etl\": workflow_file: cannot read");
    testing::cleanup(&config).await;
}

/// A schedule made before migration m0007 (no `workflow`, `tags` columns)
/// is upgraded by the next command and keeps its entries.
async fn an_older_schedule_is_upgraded(kind: DbKind) {
    use sea_orm::ConnectionTrait;
    let db = TestDatabase::create(kind).await.unwrap();
    let config = testing::config(&db.url, &unique("beat-m0007"));
    ok(
        &config,
        &["schedule", "add", "old", "tasks.old", "--every", "1h"],
    );
    let backend = celeriac_common::ResultBackend::connect(&db.url)
        .await
        .unwrap();
    let conn = backend.connection();
    for sql in [
        "ALTER TABLE celeriac_beat_entries DROP COLUMN workflow",
        "ALTER TABLE celeriac_beat_entries DROP COLUMN tags",
        "DELETE FROM celeriac_migrations WHERE version = 'm0007_beat_entry_workflow_tags'",
    ] {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let flow = r#"{"chord": ["a", "b"], "body": "c"}"#;
    ok(
        &config,
        &[
            "schedule",
            "add",
            "new",
            "--workflow",
            flow,
            "--tag",
            "x",
            "--every",
            "1h",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = schedule_file(dir.path(), "");
    let file = file.to_str().unwrap();
    assert_eq!(names(&listed(&config, file, &[])), ["new", "old"]);
    assert_eq!(names(&listed(&config, file, &["--tag", "x"])), ["new"]);
    testing::cleanup(&config).await;
}

#[tokio::test]
async fn an_older_schedule_is_upgraded_sqlite() {
    an_older_schedule_is_upgraded(DbKind::Sqlite).await;
}

#[tokio::test]
async fn an_older_schedule_is_upgraded_postgres() {
    an_older_schedule_is_upgraded(DbKind::Postgres).await;
}

#[tokio::test]
async fn an_older_schedule_is_upgraded_mysql() {
    an_older_schedule_is_upgraded(DbKind::Mysql).await;
}
