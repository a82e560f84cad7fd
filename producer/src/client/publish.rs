//! Publishing task messages: routing, declaring queues on first use, and
//! waiting out a lost broker.

use super::link::Link;
use super::{Client, ClientError, Route};
use crate::options::ApplyOptions;
use celeriac_common::backoff::{Backoff, Jitter};
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::delay;
use celeriac_common::protocol::TaskMessage;
use chrono::Utc;
use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;

/// Between publish attempts while the broker is unreachable: 100 ms
/// doubling to 1 s, so a publish goes through within about a second of the
/// broker's return; jittered so that many clients that lost the broker
/// together do not all come back at the same instant. Concurrent publishes
/// of one client share its connection attempts (see `link.rs`).
const PUBLISH_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::Equal);

impl Client {
    pub(super) async fn send(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: ApplyOptions,
    ) -> Result<String, ClientError> {
        options.validate()?;
        let now = Utc::now();
        let (eta, expires) = options.times(now)?;
        let mut msg = TaskMessage::new(name, args, kwargs);
        if let Some(id) = options.task_id {
            msg = msg.with_id(id);
        }
        msg.eta = eta.map(|t| t.fixed_offset());
        msg.expires = expires.map(|t| t.fixed_offset());
        msg.priority = options.priority;
        msg.extra_headers = options.headers;
        msg.timelimit = (options.time_limit, options.soft_time_limit);
        msg.ignore_result = options.ignore_result;
        msg.origin = Some(self.inner.origin.clone());
        msg.reply_to = self.reply_to();
        if !options.link.is_empty() {
            msg.embed.callbacks = Some(options.link);
        }
        if !options.link_error.is_empty() {
            msg.embed.errbacks = Some(options.link_error);
        }
        let config = &self.inner.config;
        let queue = options
            .queue
            .unwrap_or_else(|| config.default_queue.clone());
        let id = msg.id.clone();
        if options.exchange.is_none() && options.routing_key.is_none() {
            self.send_message(&msg, &queue).await?;
        } else {
            let route = Route {
                exchange: options.exchange.unwrap_or_else(|| queue.clone()),
                routing_key: options.routing_key.unwrap_or_else(|| queue.clone()),
                declare: queue,
                delayed: false,
            };
            self.publish(&msg, &route).await?;
        }
        Ok(id)
    }

    /// Sends a ready message to `queue`: straight in if it is due (or due
    /// within one delay unit, 64 ms), else through the durable delay queues until its eta.
    /// Used by workers (retries, callbacks, chains) and beat.
    pub async fn send_message(&self, msg: &TaskMessage, queue: &str) -> Result<(), ClientError> {
        let wait = msg
            .eta
            .and_then(|eta| delay::remaining(eta.with_timezone(&Utc), Utc::now()));
        let route = if let Some(wait) = wait {
            let key = delay::routing_key(wait, queue)?;
            Route {
                exchange: delay::entry_exchange(&self.inner.config),
                routing_key: key,
                declare: queue.to_owned(),
                delayed: true,
            }
        } else {
            Route {
                exchange: String::new(),
                routing_key: queue.to_owned(),
                declare: queue.to_owned(),
                delayed: false,
            }
        };
        self.publish(msg, &route).await
    }

    /// Publishes a ready message straight to `queue` (declaring it as Celery
    /// does), whatever its eta: as a Celery client would.
    pub async fn publish_to_queue(
        &self,
        msg: &TaskMessage,
        queue: &str,
    ) -> Result<(), ClientError> {
        let route = Route {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            declare: queue.to_owned(),
            delayed: false,
        };
        self.publish(msg, &route).await
    }

    /// Publishes with publisher confirms; while the broker is unreachable,
    /// waits (reconnecting with backoff) up to `publish_timeout_secs`.
    pub(crate) async fn publish(
        &self,
        msg: &TaskMessage,
        route: &Route,
    ) -> Result<(), ClientError> {
        let body = msg.encode_body()?;
        // Workers refuse (dead-letter) a larger body, and would leave no
        // result row: refused here, where the caller hears of it.
        let limit = self.inner.config.max_message_bytes;
        if body.len() > limit {
            let size = body.len();
            return Err(celeriac_common::protocol::ProtocolError::TooLarge { size, limit }.into());
        }
        for (what, name, max) in [
            (
                "queue name",
                route.declare.as_str(),
                broker::MAX_QUEUE_BYTES,
            ),
            ("exchange name", &route.exchange, broker::MAX_NAME_BYTES),
            ("routing key", &route.routing_key, broker::MAX_NAME_BYTES),
        ] {
            broker::check_name(what, name, max)?;
        }
        // Built once; rebuilt only for a retry (the header table is the
        // costliest part of a publish to copy).
        let mut props = Some(msg.properties()?);
        let timeout = self.inner.config.publish_timeout();
        let started = Instant::now();
        let mut backoff = PUBLISH_BACKOFF;
        loop {
            let props = match props.take() {
                Some(props) => props,
                None => msg.properties()?,
            };
            let attempt = async {
                let link = self.link().await?;
                let res = self.publish_on(&link, msg, route, &body, props).await;
                if res.is_ok() && self.inner.config.task_send_sent_event {
                    // Rare (off by default): boxed.
                    Box::pin(self.task_sent(&link, msg, route)).await;
                }
                if res.is_err() && !link.connection.status().connected() {
                    self.drop_link(&link).await;
                }
                res
            };
            // A confirm from a connection that died may never come: bound each attempt.
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let res = match tokio::time::timeout(left, attempt).await {
                Ok(res) => res,
                Err(_) => {
                    self.reset_link().await;
                    Err(ClientError::Unavailable {
                        waited: started.elapsed(),
                        task_id: msg.id.clone(),
                        last: "no publisher confirm".to_owned(),
                    })
                }
            };
            let err = match res {
                Ok(()) => return Ok(()),
                Err(e @ ClientError::Unroutable { .. }) => return Err(e),
                // A quorum queue nacks while it has no leader (a node was
                // lost, an election runs): sent again, as for a lost link.
                Err(e @ ClientError::Nacked(_)) if started.elapsed() >= timeout => {
                    return Err(e);
                }
                Err(e) => e,
            };
            let broker_alive = self
                .inner
                .link
                .read()
                .await
                .as_ref()
                .is_some_and(|l| l.connection.status().connected());
            if broker_alive && refused(&err) {
                // The broker answered (e.g. PRECONDITION_FAILED): retrying will not help.
                self.reset_link().await;
                return Err(err);
            }
            if started.elapsed() >= timeout {
                return Err(ClientError::Unavailable {
                    waited: started.elapsed(),
                    task_id: msg.id.clone(),
                    last: err.to_string(),
                });
            }
            let delay = backoff.next_delay();
            tracing::warn!(task.id = %msg.id, error = %err, "publish failed; retrying after {delay:?}");
            tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
        }
    }

    async fn publish_on(
        &self,
        link: &Link,
        msg: &TaskMessage,
        route: &Route,
        body: &[u8],
        props: lapin::BasicProperties,
    ) -> Result<(), ClientError> {
        let queue = &route.declare;
        let bound = route
            .delayed
            .then(|| format!("{}:{queue}", delay::delivery_exchange(&self.inner.config)));
        let ready = link.knows(queue) && bound.as_ref().is_none_or(|b| link.knows(b));
        if !ready {
            // Once per queue and link: boxed, so the publish future
            // every task's send copies stays small.
            Box::pin(self.declare_route(link, route, queue, bound)).await?;
        }
        let channel_err = |source| {
            ClientError::Broker(BrokerError::Channel {
                op: "basic.publish",
                source,
            })
        };
        let confirm = link
            .publish(
                &route.exchange,
                &route.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(channel_err)?
            .await
            .map_err(channel_err)?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(ClientError::Unroutable {
                task_id: msg.id.clone(),
                exchange: route.exchange.clone(),
                routing_key: route.routing_key.clone(),
            }),
            Confirmation::Nack(_) => Err(ClientError::Nacked(msg.id.clone())),
        }
    }

    /// Declares `queue` (and, for a delayed route, the delay topology and
    /// the queue's binding to it) on `link`, unless it already did.
    async fn declare_route(
        &self,
        link: &Link,
        route: &Route,
        queue: &str,
        bound: Option<String>,
    ) -> Result<(), ClientError> {
        let _declaring = link.declaring.lock().await;
        let config = &self.inner.config;
        if !link.knows(queue) {
            broker::declare_task_queue(&link.channel, queue, config).await?;
            link.remember(queue);
        }
        if let Some(bound) = bound {
            if !link.knows(&route.exchange) {
                delay::declare_topology(&link.channel, config).await?;
                link.remember(&route.exchange);
            }
            if !link.knows(&bound) {
                delay::bind_queue(&link.channel, config, queue).await?;
                link.remember(&bound);
            }
        }
        Ok(())
    }
}

/// Whether the broker refused a declaration (PRECONDITION_FAILED: the
/// queue exists with other arguments), which sending again cannot change.
/// A declaration cut short by a lost connection (a node killed while the
/// delay queues of an `eta` task were declared) is not refused: it is sent
/// again, on the next node if need be.
fn refused(err: &ClientError) -> bool {
    match err {
        ClientError::Broker(
            b @ (BrokerError::Declare { .. } | BrokerError::QueueMismatch { .. }),
        ) => !b.is_transient(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declare(source: lapin::Error) -> ClientError {
        ClientError::Broker(BrokerError::Declare {
            what: "queue binding",
            name: "q.delay.5.6".into(),
            source,
        })
    }

    #[test]
    fn a_declaration_cut_by_a_lost_connection_is_sent_again() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!refused(&declare(
            lapin::ErrorKind::IOError(reset.into()).into()
        )));
        let refusal = lapin::protocol::AMQPError::new(
            lapin::protocol::AMQPErrorKind::Soft(
                lapin::protocol::AMQPSoftError::PRECONDITIONFAILED,
            ),
            "inequivalent arg 'x-queue-type'".into(),
        );
        assert!(refused(&declare(
            lapin::ErrorKind::ProtocolError(refusal).into()
        )));
    }
}
