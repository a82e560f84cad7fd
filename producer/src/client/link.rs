//! The client's link to the broker: one connection and channel, opened on
//! first use, reopened after it is lost, and the queues it has declared.

use super::{Client, ClientError};
use celeriac_common::broker;
use celeriac_common::cli::one_line;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a failed connection attempt answers for every caller: callers
/// that come within it get its error instead of connecting again.
const SHARED_ATTEMPT: Duration = Duration::from_millis(200);

pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    pub(super) declared: SyncMutex<HashSet<String>>,
    /// Held while declaring, so concurrent first publishes to a queue wait
    /// for one declaration instead of each sending their own (the delay
    /// topology alone is ~600 round trips).
    pub(super) declaring: Mutex<()>,
    /// Every publish on `channel` goes through it (see [`Link::publish`]).
    order: broker::PublishOrder,
}

impl Link {
    /// Whether this connection already declared `what`.
    pub(super) fn knows(&self, what: &str) -> bool {
        self.declared
            .lock()
            .map(|d| d.contains(what))
            .unwrap_or(false)
    }

    pub(super) fn remember(&self, what: &str) {
        if let Ok(mut d) = self.declared.lock() {
            d.insert(what.to_owned());
        }
    }

    /// Publishes on the link's channel in confirm mode. Concurrent sends
    /// share it, so each takes its turn to be numbered
    /// ([`broker::PublishOrder`]): its confirm is then its own.
    pub(super) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: &[u8],
        props: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        let channel = &self.channel;
        let publish = self
            .order
            .publish(channel, exchange, routing_key, options, body, props);
        publish.await
    }
}

impl Client {
    pub(super) async fn link(&self) -> Result<Arc<Link>, ClientError> {
        if let Some(link) = self.live_link().await {
            return Ok(link);
        }
        // Boxed: a connection is made rarely, and this future is part of
        // every publish.
        Box::pin(self.reconnect()).await
    }

    async fn reconnect(&self) -> Result<Arc<Link>, ClientError> {
        let mut last_failure = self.inner.reconnecting.lock().await;
        // Another caller may have reconnected while this one waited.
        if let Some(link) = self.live_link().await {
            return Ok(link);
        }
        // ... or failed moments ago: many publishes blocked on a lost broker
        // share one attempt per interval instead of each making its own.
        if let Some((at, last)) = last_failure.as_ref()
            && at.elapsed() < SHARED_ATTEMPT
        {
            return Err(ClientError::StillUnreachable { last: last.clone() });
        }
        let link = match self.open_link().await {
            Ok(link) => link,
            Err(e) => {
                *last_failure = Some((Instant::now(), one_line(&e)));
                return Err(e);
            }
        };
        *last_failure = None;
        tracing::info!(broker = %celeriac_common::mask_url(&self.inner.config.broker_url), "producer connected");
        *self.inner.link.write().await = Some(link.clone());
        Ok(link)
    }

    async fn live_link(&self) -> Option<Arc<Link>> {
        let slot = self.inner.link.read().await;
        slot.as_ref()
            .filter(|l| l.connection.status().connected() && l.channel.status().connected())
            .cloned()
    }

    pub(super) async fn drop_link(&self, dead: &Arc<Link>) {
        let mut slot = self.inner.link.write().await;
        if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, dead)) {
            *slot = None;
        }
    }

    pub(super) async fn reset_link(&self) {
        if let Some(link) = self.inner.link.write().await.take() {
            let limit = self.inner.config.connect_timeout();
            broker::close(&link.connection, limit, "reset").await;
        }
    }

    /// Connects, within `broker_connect_timeout_secs` for the handshake and
    /// again for each round trip after it.
    pub(super) async fn open_link(&self) -> Result<Arc<Link>, ClientError> {
        let config = &self.inner.config;
        let limit = config.connect_timeout();
        let connection = broker::connect_config(config, "celeriac-producer").await?;
        let channel = broker::bounded("channel.open", limit, connection.create_channel()).await;
        let confirmed = match channel {
            Ok(channel) => {
                let select = channel.confirm_select(ConfirmSelectOptions::default());
                broker::bounded("confirm.select", limit, select)
                    .await
                    .map(|()| channel)
            }
            Err(e) => Err(e),
        };
        let channel = match confirmed {
            Ok(channel) => channel,
            Err(e) => {
                broker::close(&connection, limit, "setup failed").await;
                return Err(e.into());
            }
        };
        Ok(Arc::new(Link {
            connection,
            channel,
            declared: SyncMutex::new(HashSet::new()),
            declaring: Mutex::new(()),
            order: broker::PublishOrder::default(),
        }))
    }

    /// A new channel on the current connection, for work that needs its own
    /// (listing a queue, replaying messages).
    pub(crate) async fn open_channel(&self) -> Result<Channel, ClientError> {
        let link = self.link().await?;
        let limit = self.inner.config.connect_timeout();
        Ok(broker::bounded("channel.open", limit, link.connection.create_channel()).await?)
    }
}
