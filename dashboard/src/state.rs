//! What every request handler shares: the configuration, the database,
//! beat's store, the token, the broker client (opened on first need) and
//! the live view fed by the events stream.

use crate::error::ApiError;
use crate::live::Live;
use celeriac::Client;
use celeriac_beat::schedule::store::Store;
use celeriac_common::{Config, ResultBackend};
use std::path::PathBuf;
use tokio::sync::OnceCell;

/// Where the RabbitMQ management API answers, and as whom.
#[derive(Debug, Clone)]
pub(crate) struct Management {
    /// `http://host:15672` (no trailing slash, no credentials).
    pub(crate) base: String,
    pub(crate) user: String,
    pub(crate) password: String,
    /// The broker's virtual host.
    pub(crate) vhost: String,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) backend: ResultBackend,
    /// Beat's schedule tables.
    pub(crate) store: Store,
    pub(crate) token: Option<String>,
    /// Beat's TOML schedule file, to show its entries too.
    pub(crate) schedule_file: Option<PathBuf>,
    /// `None`: queues are read by passive declares only.
    pub(crate) management: Option<Management>,
    pub(crate) http: reqwest::Client,
    pub(crate) live: Live,
    client: OnceCell<Client>,
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        backend: ResultBackend,
        token: Option<String>,
        schedule_file: Option<PathBuf>,
        management: Option<Management>,
    ) -> AppState {
        let store = Store::new(backend.connection().clone());
        AppState {
            config,
            backend,
            store,
            token,
            schedule_file,
            management,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
            live: Live::new(),
            client: OnceCell::new(),
        }
    }

    /// The broker client, connected on first use (a failed connect is
    /// tried again on the next call).
    pub(crate) async fn client(&self) -> Result<&Client, ApiError> {
        Ok(self
            .client
            .get_or_try_init(|| Client::connect(self.config.clone()))
            .await?)
    }
}
