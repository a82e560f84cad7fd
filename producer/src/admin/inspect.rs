//! `celeriac inspect` and `celeriac control`: one request broadcast over
//! Celery's pidbox, the replies printed as `celery inspect` prints them
//! (`-> host: OK` and the reply indented) or, with `--json`, as one
//! `{hostname: reply}` object.

use super::AdminError;
use celeriac::mailbox::{self, Ask, Reply};
use celeriac_common::Config;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

/// Whom to ask, how long to wait, how to print.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Only these workers (host names, comma-separated) [default: all].
    #[arg(short = 'd', long, value_delimiter = ',', global = true)]
    destination: Vec<String>,
    /// Seconds to wait for replies (returns earlier once every --destination replied).
    #[arg(short = 't', long, default_value = "1", value_parser = super::parse_secs, global = true)]
    timeout: f64,
    /// Print the replies as one JSON object {hostname: reply}.
    #[arg(short = 'j', long, global = true)]
    json: bool,
}

/// `celeriac inspect WHAT`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// What to ask.
    #[arg(value_enum)]
    what: Inspect,
    #[command(flatten)]
    target: Target,
}

/// What `celeriac inspect` asks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Inspect {
    /// Whether workers are there (each answers pong).
    Ping,
    /// Counters, pool, broker and resource usage.
    Stats,
    /// The tasks running now.
    Active,
    /// The tasks received and waiting for a slot.
    Reserved,
    /// The tasks waiting for their eta or countdown.
    Scheduled,
    /// The task names registered.
    Registered,
    /// The ids of revoked tasks.
    Revoked,
    /// The queues consumed.
    ActiveQueues,
    /// The worker's settings.
    Conf,
}

impl Inspect {
    fn method(self) -> &'static str {
        match self {
            Inspect::Ping => "ping",
            Inspect::Stats => "stats",
            Inspect::Active => "active",
            Inspect::Reserved => "reserved",
            Inspect::Scheduled => "scheduled",
            Inspect::Registered => "registered",
            Inspect::Revoked => "revoked",
            Inspect::ActiveQueues => "active_queues",
            Inspect::Conf => "conf",
        }
    }
}

/// `celeriac control COMMAND`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlArgs {
    #[command(subcommand)]
    command: Control,
    #[command(flatten)]
    target: Target,
}

/// What `celeriac control` changes.
#[derive(Debug, Clone, clap::Subcommand)]
enum Control {
    /// Set a task's rate limit: N/s, N/m or N/h (0 removes it).
    RateLimit {
        /// Task name.
        task: String,
        /// The rate, e.g. 10/s.
        rate: String,
    },
    /// Set a task's soft and hard time limits in seconds (0 removes one).
    TimeLimit {
        /// Task name.
        task: String,
        /// Soft limit in seconds.
        #[arg(value_parser = super::parse_secs)]
        soft: f64,
        /// Hard limit in seconds.
        #[arg(value_parser = super::parse_secs)]
        hard: f64,
    },
    /// Start consuming a queue (declared as the worker declares its queues).
    AddConsumer {
        /// Queue name.
        queue: String,
    },
    /// Stop consuming a queue.
    CancelConsumer {
        /// Queue name.
        queue: String,
    },
    /// Switch task events on.
    EnableEvents,
    /// Switch task events off.
    DisableEvents,
    /// Stop the workers (a celeriac worker replies first; Celery's do not).
    Shutdown,
}

impl Control {
    fn request(&self) -> (&'static str, Value) {
        match self {
            Control::RateLimit { task, rate } => {
                ("rate_limit", json!({"task_name": task, "rate_limit": rate}))
            }
            Control::TimeLimit { task, soft, hard } => (
                "time_limit",
                json!({"task_name": task, "soft": soft, "hard": hard}),
            ),
            Control::AddConsumer { queue } => ("add_consumer", json!({"queue": queue})),
            Control::CancelConsumer { queue } => ("cancel_consumer", json!({"queue": queue})),
            Control::EnableEvents => ("enable_events", json!({})),
            Control::DisableEvents => ("disable_events", json!({})),
            Control::Shutdown => ("shutdown", json!({})),
        }
    }
}

impl InspectArgs {
    /// Asks, prints the replies; exit 1 when a worker asked for did not reply.
    pub(crate) async fn run(self, config: &Config) -> Result<ExitCode, AdminError> {
        let method = self.what.method();
        self.target.run(config, method, json!({}), false).await
    }
}

impl ControlArgs {
    /// Sends the command, prints the replies; exit 1 when a worker asked
    /// for did not reply (except for `shutdown`, which Celery's workers
    /// never answer).
    pub(crate) async fn run(self, config: &Config) -> Result<ExitCode, AdminError> {
        let (method, arguments) = self.command.request();
        let silent_ok = matches!(self.command, Control::Shutdown);
        self.target.run(config, method, arguments, silent_ok).await
    }
}

impl Target {
    async fn run(
        self,
        config: &Config,
        method: &str,
        arguments: Value,
        silent_ok: bool,
    ) -> Result<ExitCode, AdminError> {
        let ask = Ask {
            method: method.to_owned(),
            arguments,
            destination: self.destination,
            timeout: celeriac_common::seconds::capped(self.timeout).unwrap_or_default(),
        };
        let replies = mailbox::ask(config, &ask).await?;
        if self.json {
            let all: Map<String, Value> = replies.iter().cloned().collect();
            let text = serde_json::to_string(&all).map_err(AdminError::Json)?;
            celeriac_common::outln!("{text}");
        } else {
            celeriac_common::out!("{}", human(&replies));
        }
        let within = self.timeout;
        if replies.is_empty() && silent_ok {
            eprintln!("celeriac: {method} sent; no worker replied within {within}s");
            return Ok(ExitCode::SUCCESS);
        }
        let missing = missing(&ask.destination, &replies);
        if !missing.is_empty() {
            let names = missing.join(", ");
            eprintln!("celeriac: no reply from {names} within {within}s");
            return Ok(ExitCode::FAILURE);
        }
        if replies.is_empty() {
            eprintln!("celeriac: no workers replied within {within}s");
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The workers named in `destination` that did not reply.
fn missing<'a>(destination: &'a [String], replies: &[Reply]) -> Vec<&'a str> {
    destination
        .iter()
        .filter(|d| !replies.iter().any(|(h, _)| h == *d))
        .map(String::as_str)
        .collect()
}

/// The replies as `celery inspect` prints them, and `N nodes online.`.
fn human(replies: &[Reply]) -> String {
    let mut out = String::new();
    for (host, reply) in replies {
        let (status, text) = prettify(reply);
        out.push_str(&format!("-> {host}: {status}\n"));
        for line in text.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    if !replies.is_empty() {
        let n = replies.len();
        let nodes = if n == 1 { "node" } else { "nodes" };
        out.push_str(&format!("\n{n} {nodes} online.\n"));
    }
    out
}

/// A reply's status (`OK` or `ERROR`) and its text.
fn prettify(reply: &Value) -> (&'static str, String) {
    match reply {
        Value::Object(map) if map.len() == 1 && map.contains_key("ok") => ("OK", plain(&map["ok"])),
        Value::Object(map) if map.contains_key("error") => ("ERROR", plain(&map["error"])),
        Value::Array(items) if items.is_empty() => ("OK", "- empty -".to_owned()),
        Value::Array(items) => {
            let lines: Vec<String> = items.iter().map(|i| format!("* {}", plain(i))).collect();
            ("OK", lines.join("\n"))
        }
        Value::Null => ("OK", String::new()),
        other => (
            "OK",
            serde_json::to_string_pretty(other).unwrap_or_default(),
        ),
    }
}

/// A string as it is; anything else as compact JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(host: &str, v: Value) -> Reply {
        (host.to_owned(), v)
    }

    #[test]
    fn replies_print_as_celery_prints_them() {
        let text = human(&[
            reply("w1", json!({"ok": "pong"})),
            reply("w2", json!(["a", "b"])),
            reply("w3", json!({"error": "unknown task"})),
            reply("w4", json!([])),
        ]);
        assert_eq!(
            text,
            "-> w1: OK\n    pong\n-> w2: OK\n    * a\n    * b\n-> w3: ERROR\n    unknown task\n\
             -> w4: OK\n    - empty -\n\n4 nodes online.\n"
        );
        let (status, stats) = prettify(&json!({"pid": 1, "total": {}}));
        assert_eq!(status, "OK");
        assert!(stats.contains("\"pid\": 1"), "{stats}");
        assert_eq!(human(&[]), "");
    }

    #[test]
    fn missing_destinations_are_named() {
        let dest = vec!["w1".to_owned(), "w2".to_owned()];
        assert_eq!(missing(&dest, &[reply("w1", json!(null))]), vec!["w2"]);
        assert!(missing(&[], &[]).is_empty());
    }

    #[test]
    fn control_commands_send_celerys_arguments() {
        let rate = Control::RateLimit {
            task: "t".into(),
            rate: "10/s".into(),
        };
        assert_eq!(
            rate.request(),
            (
                "rate_limit",
                json!({"task_name": "t", "rate_limit": "10/s"})
            )
        );
        let limits = Control::TimeLimit {
            task: "t".into(),
            soft: 1.5,
            hard: 3.0,
        };
        assert_eq!(
            limits.request().1,
            json!({"task_name": "t", "soft": 1.5, "hard": 3.0})
        );
    }
}
