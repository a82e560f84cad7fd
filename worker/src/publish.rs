//! The one route for everything a worker publishes: messages not due yet
//! into the delay queues, dead letters, deliveries given back or counted,
//! retries, callbacks and chain steps. All go through the session's
//! channel in confirm mode, as mandatory publishes, and wait at most
//! [`BROKER_TIMEOUT`] for the broker's confirm.
//!
//! Publishing on the session that holds the delivery keeps a retry and the
//! ack of the message it replaces on one connection: when that connection
//! is lost, the message is redelivered and nothing was sent in its name.

use celeriac_common::Config;
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::delay::{self, DelayTooLong};
use celeriac_common::protocol::{ProtocolError, TaskMessage};
use chrono::Utc;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a worker waits for the broker to confirm a publish or take a nack.
pub(crate) const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The broker returned (unroutable) or nacked the message.
    #[error("broker did not take it: {0}")]
    NotTaken(String),
    /// No confirm came in time.
    #[error("no confirm within {BROKER_TIMEOUT:?}")]
    Timeout,
    /// The channel failed.
    #[error(transparent)]
    Channel(#[from] lapin::Error),
    /// A task message could not be encoded.
    #[error(transparent)]
    Encode(#[from] ProtocolError),
    /// A task message's eta is too far away for the delay queues.
    #[error(transparent)]
    Delay(#[from] DelayTooLong),
    /// The destination queue could not be declared.
    #[error(transparent)]
    Declare(#[from] BrokerError),
}

impl PublishError {
    /// Whether sending again later may succeed (the broker or its channel
    /// failed), unlike a message that cannot be encoded or delayed.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            PublishError::Encode(_) | PublishError::Delay(_) => false,
            // A queue that exists with other arguments stays so.
            PublishError::Declare(e) => e.is_transient(),
            PublishError::NotTaken(_) | PublishError::Timeout | PublishError::Channel(_) => true,
        }
    }
}

/// A session's publishing side: its channel in confirm mode.
pub(crate) struct Publisher {
    channel: Channel,
    connection: Arc<Connection>,
    config: Arc<Config>,
    /// Queues declared and bound to the delay queues on this connection.
    ready: Mutex<HashSet<String>>,
    /// Tasks publish on `channel` at once: each takes its turn to be
    /// numbered, so its confirm is its own.
    order: broker::PublishOrder,
}

impl Publisher {
    /// `channel` is in confirm mode; the queues in `ready` are declared and
    /// bound to the delay queues already.
    pub(crate) fn new(
        channel: Channel,
        connection: Arc<Connection>,
        config: Arc<Config>,
        ready: HashSet<String>,
    ) -> Self {
        Publisher {
            channel,
            connection,
            config,
            ready: Mutex::new(ready),
            order: broker::PublishOrder::default(),
        }
    }

    /// The channel (also the one remote control is consumed on).
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes (mandatory, so an unroutable message counts as a failure)
    /// and waits for the broker's confirm, bounded by [`BROKER_TIMEOUT`].
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let publish = async {
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let channel = &self.channel;
            let publish = self
                .order
                .publish(channel, exchange, routing_key, options, body, props);
            publish.await?.await
        };
        match tokio::time::timeout(BROKER_TIMEOUT, publish).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(other)) => Err(PublishError::NotTaken(format!("{other:?}"))),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PublishError::Timeout),
        }
    }

    /// Sends a task message (a retry, callback or chain step) to `queue`:
    /// straight in if it is due within one delay unit, else through the
    /// delay queues until its eta. A queue this session does not consume is
    /// declared first, as a Celery client would.
    pub(crate) async fn send(&self, msg: &TaskMessage, queue: &str) -> Result<(), PublishError> {
        let (exchange, routing_key) = self.route(msg, queue)?;
        if !self.is_ready(queue) {
            Box::pin(self.declare(queue)).await?;
        }
        let body = msg.encode_body()?;
        self.publish(&exchange, &routing_key, &body, msg.properties()?)
            .await
    }

    /// The exchange and routing key `msg` goes out with to `queue`.
    fn route(&self, msg: &TaskMessage, queue: &str) -> Result<(String, String), PublishError> {
        let wait = msg
            .eta
            .and_then(|eta| delay::remaining(eta.with_timezone(&Utc), Utc::now()));
        Ok(match wait {
            Some(wait) => (
                delay::entry_exchange(&self.config),
                delay::routing_key(wait, queue)?,
            ),
            None => (String::new(), queue.to_owned()),
        })
    }

    /// What [`Publisher::send`] would refuse before asking the broker (a
    /// delay too long, a queue name AMQP cannot carry, a message that cannot
    /// be encoded): checked for every message of a follow-up first, so one
    /// that cannot be sent leaves none of the others sent.
    pub(crate) fn check(&self, msg: &TaskMessage, queue: &str) -> Result<(), PublishError> {
        self.route(msg, queue)?;
        broker::check_queue(queue)?;
        msg.encode_body()?;
        msg.properties()?;
        Ok(())
    }

    fn is_ready(&self, queue: &str) -> bool {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(queue)
    }

    /// Declares `queue` and binds it to the delay queues, on a channel of
    /// its own: a declaration the broker refuses closes that channel, not
    /// the session's.
    async fn declare(&self, queue: &str) -> Result<(), BrokerError> {
        let limit = self.config.connect_timeout();
        let channel =
            broker::bounded("channel.open", limit, self.connection.create_channel()).await?;
        let declared = async {
            broker::declare_task_queue(&channel, queue, &self.config).await?;
            delay::bind_queue(&channel, &self.config, queue).await
        }
        .await;
        let _ = broker::bounded(
            "channel.close",
            limit,
            channel.close(200, "declared".into()),
        )
        .await;
        declared?;
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(queue.to_owned());
        Ok(())
    }
}
