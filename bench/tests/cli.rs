//! `celeriac-bench`'s command line, without services: every benchmark's
//! help, and options given to the wrong benchmark.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_celeriac-bench"))
}

/// `--help` of the bench and of each subcommand shows where a URL comes
/// from, never the URL's password (clap would print environment values).
#[test]
fn help_never_shows_a_password() {
    let cases: [&[&str]; 4] = [
        &["--help"],
        &["beat", "--help"],
        &["delay", "--help"],
        &["latency", "--help"],
    ];
    for args in cases {
        let out = bench()
            .env("CELERIAC_BROKER_URL", "amqp://u:s3cret@rabbit:5672/%2f")
            .env("CELERIAC_RESULT_BACKEND", "postgres://u:s3cret@db/r")
            .env("CELERIAC_BENCH_POSTGRES_URL", "postgres://u:s3cret@db/b")
            .env("CELERIAC_BENCH_MYSQL_URL", "mysql://u:s3cret@db/b")
            .args(args)
            .output()
            .expect("run celeriac-bench");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(text.contains("CELERIAC_BROKER_URL"), "{args:?}: {text}");
        assert!(!text.contains("s3cret"), "{args:?}: {text}");
    }
}

/// An option of the run without a subcommand, given with one, would be
/// ignored: it is refused (usage error, exit 2); connection options are
/// taken before or after the subcommand.
#[test]
fn run_options_are_refused_with_a_subcommand() {
    let out = bench()
        .args(["--tasks", "5", "beat"])
        .output()
        .expect("run celeriac-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--tasks belongs to the run without a subcommand"),
        "{stderr}"
    );
    for args in [
        ["--broker", "amqp://127.0.0.1:9/%2f", "delay", "--help"],
        ["delay", "--broker", "amqp://127.0.0.1:9/%2f", "--help"],
    ] {
        let out = bench().args(args).output().expect("run celeriac-bench");
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
}
