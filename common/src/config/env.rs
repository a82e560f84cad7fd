//! A [`Config`] as `CELERIAC_*` environment variables, for a child process.

use super::{Config, ENV_PREFIX};
use serde_json::Value;

impl Config {
    /// This configuration as `CELERIAC_*` environment variables, one per
    /// option that has a value (lists comma-separated): given to a child
    /// process, they make its [`Config::load`] (without a file) return the
    /// same configuration, as long as no string option reads as a number,
    /// a boolean or a list.
    ///
    /// ```
    /// use celeriac_common::Config;
    ///
    /// let config = Config {
    ///     queues: vec!["a".into(), "b".into()],
    ///     ..Config::default()
    /// };
    /// let env = config.to_env();
    /// assert!(env.contains(&("CELERIAC_QUEUES".into(), "a,b".into())));
    /// assert!(env.contains(&("CELERIAC_CONCURRENCY".into(), "16".into())));
    /// // Unset options are left out.
    /// assert!(env.iter().all(|(name, _)| name != "CELERIAC_BEAT_SCHEDULE"));
    /// ```
    pub fn to_env(&self) -> Vec<(String, String)> {
        let Ok(Value::Object(options)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        options
            .into_iter()
            .filter_map(|(key, value)| Some((env_name(&key), env_text(value)?)))
            .collect()
    }
}

/// The environment variable of the option `key`: `CELERIAC_<KEY>`.
pub(crate) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase())
}

/// How an option's value is written in the environment; `None` if unset.
fn env_text(value: Value) -> Option<String> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    match value {
        Value::Null => None,
        Value::Array(items) => Some(items.into_iter().map(text).collect::<Vec<_>>().join(",")),
        other => Some(text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::env_value;
    use super::*;
    use crate::config::QueueType;

    #[test]
    fn env_reads_back_as_the_same_config() {
        let config = Config {
            broker_url: "amqp://u:p@rabbit:5672/vh".into(),
            queues: vec!["a".into(), "b".into()],
            queue_type: QueueType::Quorum,
            queue_max_priority: Some(9),
            broker_tls_ca_file: Some("/etc/ca.pem".into()),
            track_started: true,
            beat_schedule: Some("/etc/schedule.toml".into()),
            ..Config::default()
        };
        let env = config.to_env();
        assert!(env.contains(&("CELERIAC_QUEUE_TYPE".into(), "quorum".into())));
        // What `Config::load` does with each variable.
        let table: toml::Table = Config::keys()
            .into_iter()
            .filter_map(|key| {
                let name = env_name(&key);
                let (_, raw) = env.iter().find(|(n, _)| *n == name)?;
                Some((key, env_value(raw)))
            })
            .collect();
        let back: Config = toml::Value::Table(table).try_into().expect("reads back");
        assert_eq!(back, config);
        let unset = Config::default().to_env();
        assert!(
            unset
                .iter()
                .all(|(n, _)| n != "CELERIAC_QUEUE_MAX_PRIORITY")
        );
    }
}
