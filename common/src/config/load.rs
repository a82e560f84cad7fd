//! Loading a [`Config`]: defaults, then a TOML file, then `CELERIAC_*`
//! environment variables, with unknown keys refused.

use super::{Config, ConfigError, QueueType, env};
use std::path::{Path, PathBuf};

impl Config {
    /// Defaults, overridden by `file` (if given, else by `$CELERIAC_CONFIG`
    /// if set), overridden by `CELERIAC_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os("CELERIAC_CONFIG").map(PathBuf::from);
        let mut table = match file.map(Path::to_path_buf).or(env_file) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        origin: path.display().to_string(),
                        message: e.message().to_owned(),
                    })?;
                Self::check_keys(&table, &path.display().to_string())?;
                table
            }
            None => toml::Table::new(),
        };
        for key in Self::keys() {
            let var = env::env_name(&key);
            if let Ok(raw) = std::env::var(&var) {
                table.insert(key.clone(), env_value(&raw));
            }
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: "configuration file or CELERIAC_* environment".to_owned(),
                    message: e.message().to_owned(),
                })?;
        config.check("configuration file or CELERIAC_* environment")?;
        Ok(config)
    }

    /// Checks values the types alone do not rule out (`origin` says where
    /// they came from, for the message). [`Config::load`] calls it; a
    /// program that changes a loaded configuration calls it again.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let t = self.broker_connect_timeout_secs;
        if !(t.is_finite() && t > 0.0) {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                message: format!(
                    "broker_connect_timeout_secs must be a positive number of seconds, got {t}"
                ),
            });
        }
        self.check_names().map_err(|e| ConfigError::Invalid {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        if self.queue_type == QueueType::Quorum && self.queue_max_priority.is_some() {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                message: "queue_max_priority cannot be used with queue_type = \"quorum\": \
                          RabbitMQ refuses x-max-priority on quorum queues; unset one of them"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Refuses names the broker cannot be given: AMQP names are at most 255
    /// bytes, and names are built from these (a delayed message's routing
    /// key from a queue's, the delay queues' from `delay_prefix`, the
    /// remote-control queue from `hostname`).
    fn check_names(&self) -> Result<(), crate::broker::BrokerError> {
        use crate::broker::{MAX_NAME_BYTES, check_name, check_queue};
        for queue in std::iter::once(&self.default_queue).chain(&self.queues) {
            check_queue(queue)?;
        }
        check_name("queue name", &self.dead_letter_queue, MAX_NAME_BYTES)?;
        check_name(
            "delay_prefix",
            &self.delay_prefix,
            MAX_NAME_BYTES - DELAY_SUFFIX_BYTES,
        )?;
        check_name("hostname", &self.hostname, MAX_HOSTNAME_BYTES)
    }

    /// Every key a config file may set (JSON keeps the unset options as null).
    pub(super) fn keys() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn check_keys(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
        let known = Self::keys();
        for key in table.keys() {
            if !known.contains(key) {
                let hint = known
                    .iter()
                    .min_by_key(|k| strsim::levenshtein(k, key))
                    .filter(|k| strsim::levenshtein(k, key) <= 3)
                    .map(|k| format!(", did you mean {k:?}?"))
                    .unwrap_or_default();
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    message: format!("unknown key {key:?}{hint}"),
                });
            }
        }
        Ok(())
    }
}

/// The longest suffix of a delay exchange's or queue's name after
/// `delay_prefix` (`.delivery`).
const DELAY_SUFFIX_BYTES: usize = ".delivery".len();

/// The longest `hostname`: a worker's remote-control queue is named
/// `<hostname>.<32 hex digits>.celery.pidbox`.
const MAX_HOSTNAME_BYTES: usize = crate::broker::MAX_NAME_BYTES - 33 - ".celery.pidbox".len();

/// A value from the environment: TOML syntax if it parses as a number, a
/// boolean or an array, else the plain string.
pub(super) fn env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)
                | toml::Value::Float(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}
