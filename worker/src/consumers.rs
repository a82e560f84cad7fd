//! A session's consumers as remote control sees and changes them: the
//! queues consumed (`active_queues`), `add_consumer` and `cancel_consumer`.

use crate::shared::Shared;
use celeriac_common::{broker, delay};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;

/// A consumer added by remote control, for the consume loop to take in.
pub(crate) type Added = (String, lapin::Consumer);

/// A session's consumers as remote control sees and changes them
/// (`active_queues`, `add_consumer`, `cancel_consumer`).
pub(crate) struct Live {
    pub(crate) connection: Arc<Connection>,
    channel: Channel,
    consumers: Mutex<Vec<(String, lapin::Consumer)>>,
    /// Queues whose consumer remote control cancelled: their end does not
    /// end the session.
    cancelled: Mutex<HashSet<String>>,
    added: mpsc::UnboundedSender<Added>,
}

impl Live {
    /// The consumers a session started on `channel`, and the receiving end
    /// of the ones remote control adds later.
    pub(crate) fn new(
        connection: Arc<Connection>,
        channel: Channel,
        consumers: Vec<(String, lapin::Consumer)>,
    ) -> (Live, mpsc::UnboundedReceiver<Added>) {
        let (added, added_rx) = mpsc::unbounded_channel();
        let live = Live {
            connection,
            channel,
            consumers: Mutex::new(consumers),
            cancelled: Mutex::new(HashSet::new()),
            added,
        };
        (live, added_rx)
    }

    /// The queues consumed, with their consumers.
    pub(crate) fn consumers(&self) -> Vec<(String, lapin::Consumer)> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The queues consumed.
    pub(crate) fn queues(&self) -> Vec<String> {
        self.consumers().into_iter().map(|(q, _)| q).collect()
    }

    /// Declares `queue` (on a channel of its own: a refused declaration
    /// closes that one only) and starts consuming it.
    pub(crate) async fn add_consumer(&self, shared: &Shared, queue: &str) -> Value {
        if self.queues().iter().any(|q| q == queue) {
            let quoted = crate::pyrepr::repr_str(queue);
            return serde_json::json!({"ok": format!("already consuming from {quoted}")});
        }
        let config = &shared.config;
        let limit = config.connect_timeout();
        let declared = async {
            let channel =
                broker::bounded("channel.open", limit, self.connection.create_channel()).await?;
            let done = async {
                broker::declare_task_queue(&channel, queue, config).await?;
                delay::bind_queue(&channel, config, queue).await
            }
            .await;
            let _ = channel.close(200, "declared".into()).await;
            done
        };
        if let Err(e) = declared.await {
            tracing::warn!(queue, error = %e, "add_consumer: cannot declare the queue");
            return serde_json::json!({"error": format!("cannot declare queue {queue}: {e}")});
        }
        let tag = consumer_tag(&config.hostname, queue);
        let consume = self.channel.basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        );
        let consumer = match broker::bounded("basic.consume", limit, consume).await {
            Ok(c) => c,
            Err(e) => return serde_json::json!({"error": format!("cannot consume {queue}: {e}")}),
        };
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((queue.to_owned(), consumer.clone()));
        let _ = self.added.send((queue.to_owned(), consumer));
        let mut queues = shared.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if !queues.iter().any(|q| q == queue) {
            queues.push(queue.to_owned());
        }
        tracing::info!(queue, "started consuming (remote control)");
        serde_json::json!({"ok": format!("add consumer {queue}")})
    }

    /// Stops consuming `queue`; deliveries already received still run.
    pub(crate) async fn cancel_consumer(&self, shared: &Shared, queue: &str) -> Value {
        let found: Vec<lapin::Consumer> = {
            let mut consumers = self
                .consumers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (gone, kept) = consumers.drain(..).partition(|(q, _)| q == queue);
            *consumers = kept;
            gone.into_iter().map(|(_, c)| c).collect::<Vec<_>>()
        };
        shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|q| q != queue);
        if !found.is_empty() {
            self.cancelled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(queue.to_owned());
        }
        for consumer in found {
            let cancel = self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default());
            let limit = crate::publish::BROKER_TIMEOUT;
            if let Err(e) = broker::bounded("basic.cancel", limit, cancel).await {
                tracing::warn!(queue, error = %e, "cancel_consumer: basic.cancel failed");
            }
        }
        tracing::info!(queue, "stopped consuming (remote control)");
        serde_json::json!({"ok": format!("no longer consuming from {queue}")})
    }

    /// Whether remote control cancelled `queue`'s consumer (once).
    pub(crate) fn was_cancelled(&self, queue: &str) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue)
    }
}

/// A consumer tag unique to this worker, queue and moment: the hostname
/// and queue, cut to leave room for 33 unique bytes in an AMQP short string.
pub(crate) fn consumer_tag(hostname: &str, queue: &str) -> String {
    let mut tag = format!("{hostname}.{queue}");
    let mut room = broker::MAX_NAME_BYTES - 33;
    if tag.len() > room {
        while !tag.is_char_boundary(room) {
            room -= 1;
        }
        tag.truncate(room);
    }
    format!("{tag}.{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_tag_fits_amqp() {
        let tag = consumer_tag("w@host", "celery");
        assert!(tag.starts_with("w@host.celery."), "{tag}");
        let queue = "€".repeat(79); // 237 bytes
        let tag = consumer_tag(&"h".repeat(208), &queue);
        assert!(tag.len() <= broker::MAX_NAME_BYTES, "{}", tag.len());
        assert!(tag.starts_with(&"h".repeat(208)));
        assert_ne!(tag, consumer_tag(&"h".repeat(208), &queue));
    }
}
