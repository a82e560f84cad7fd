//! One broker session: a connection with one consuming channel and one
//! channel in confirm mode (publishing, remote control), its consumers, and
//! the loop handing each delivery to a task of its own.

use crate::carry_out::{Handling, give_back};
use crate::consumers::{Added, Live, consumer_tag};
use crate::control;
use crate::deliver;
use crate::events;
use crate::publish::{BROKER_TIMEOUT, Publisher};
use crate::recorder::AckWindow;
use crate::shared::Shared;
use celeriac_common::broker::{self, BrokerError};
use celeriac_common::{delay, pidbox};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A connection with one consuming channel and one channel (in confirm mode)
/// for everything the worker publishes and for remote control.
pub(crate) struct Session {
    connection: Arc<Connection>,
    channel: Channel,
    publisher: Arc<Publisher>,
    live: Arc<Live>,
    /// Consumers added by remote control, for the consume loop to take in.
    added: Mutex<Option<mpsc::UnboundedReceiver<Added>>>,
    control: lapin::Consumer,
    window: Arc<AckWindow>,
}

impl Session {
    /// Connects, declares the queues (and the delay and dead-letter ones)
    /// and starts consuming.
    pub(crate) async fn open(shared: &Shared) -> Result<Session, BrokerError> {
        let config = &shared.config;
        let connection = broker::connect_config(config, &config.hostname).await?;
        // Every round trip below waits at most this long.
        let limit = config.connect_timeout();
        let channel = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        // Per-consumer prefetch (global = false): recent RabbitMQ rejects global QoS.
        let qos = channel.basic_qos(config.prefetch(), BasicQosOptions { global: false });
        broker::bounded("basic.qos", limit, qos).await?;
        let publisher = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        let select = publisher.confirm_select(ConfirmSelectOptions::default());
        broker::bounded("confirm.select", limit, select).await?;
        broker::declare_dead_letter_queue(&publisher, &config.dead_letter_queue, config).await?;
        let mut consumers = Vec::new();
        delay::declare_topology(&channel, config).await?;
        let queues = shared
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for queue in &queues {
            broker::declare_task_queue(&channel, queue, config).await?;
            delay::bind_queue(&channel, config, queue).await?;
            let tag = consumer_tag(&config.hostname, queue);
            let consume = channel.basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            );
            let consumer = broker::bounded("basic.consume", limit, consume).await?;
            consumers.push((queue.clone(), consumer));
        }
        // Events: a channel of their own (a refused declaration closes it,
        // and events are then dropped and counted, tasks unaffected).
        let ev = broker::bounded("channel.open", limit, connection.create_channel()).await?;
        match tokio::time::timeout(limit, events::declare(&ev)).await {
            Ok(Ok(())) => shared.events.attach(ev),
            Ok(Err(e)) => {
                let why = "cannot declare the celeryev exchange; events are dropped";
                tracing::warn!(error = %e, "{why}")
            }
            Err(_) => {
                tracing::warn!("declaring the celeryev exchange timed out; events are dropped")
            }
        }
        // Remote control: a queue of our own on the pidbox fanout.
        let control_queue = pidbox::declare_worker_queue(
            &publisher,
            &format!("{}.{}", config.hostname, uuid::Uuid::new_v4().simple()),
            limit,
        )
        .await?;
        let consume = publisher.basic_consume(
            control_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        let control = broker::bounded("basic.consume", limit, consume).await?;
        let connection = Arc::new(connection);
        let ready: HashSet<String> = queues.iter().cloned().collect();
        let publisher = Publisher::new(publisher, connection.clone(), config.clone(), ready);
        let (live, added_rx) = Live::new(connection.clone(), channel.clone(), consumers);
        Ok(Session {
            connection,
            channel,
            publisher: Arc::new(publisher),
            live: Arc::new(live),
            added: Mutex::new(Some(added_rx)),
            control,
            window: Arc::new(AckWindow::default()),
        })
    }

    /// Handles deliveries until the connection is lost; returns why.
    pub(crate) async fn consume(&self, shared: Arc<Shared>) -> String {
        // `select_all` drops a stream that ends and goes on with the rest, so
        // each consumer ends with an item saying so: a queue deleted under
        // the worker (the broker cancels its consumer) ends the session, and
        // the next one declares the queue again.
        let tasks = self
            .live
            .consumers()
            .into_iter()
            .map(|(queue, consumer)| task_stream(queue, consumer));
        let control_stream = self
            .control
            .clone()
            .map(Event::Control)
            .chain(futures_util::stream::once(async { Event::Ended(None) }))
            .boxed();
        let mut all =
            futures_util::stream::select_all(tasks.chain(std::iter::once(control_stream)));
        let taken = self
            .added
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (_unused, fallback) = mpsc::unbounded_channel();
        let mut added = taken.unwrap_or(fallback);
        // Belt and braces: also notice a dead connection whose consumer
        // streams stay silent.
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = tokio::select! {
                next = all.next() => next,
                Some((queue, consumer)) = added.recv() => {
                    all.push(task_stream(queue, consumer));
                    continue;
                }
                _ = check.tick() => {
                    if self.connected() {
                        continue;
                    }
                    return "connection or channel closed".to_owned();
                }
            };
            match next {
                Some(Event::Control(Ok(delivery))) => {
                    let headers = delivery.properties.headers().clone();
                    let handled =
                        control::handle(shared.clone(), self.live.clone(), delivery.data, headers);
                    tokio::spawn(handled);
                }
                Some(Event::Task(queue, Ok(delivery))) => {
                    self.window.received(delivery.delivery_tag);
                    let hand = Handling {
                        shared: shared.clone(),
                        publisher: self.publisher.clone(),
                        queue,
                        window: self.window.clone(),
                    };
                    // Decoded in the task (a large body, or a panic, stays
                    // there), not in this loop.
                    let task = futures_util::future::lazy(move |_| deliver::handle(hand, delivery));
                    tokio::spawn(task.flatten());
                }
                Some(Event::Task(_, Err(e)) | Event::Control(Err(e))) => return e.to_string(),
                Some(Event::Ended(_)) if !self.connected() => {
                    return "connection or channel closed".to_owned();
                }
                Some(Event::Ended(Some(queue))) if self.live.was_cancelled(&queue) => {}
                Some(Event::Ended(Some(queue))) => {
                    return format!("the broker cancelled the consumer of queue {queue}");
                }
                Some(Event::Ended(None)) => {
                    return "the broker cancelled the consumer of remote control".to_owned();
                }
                None => return "no consumer left".to_owned(),
            }
        }
    }

    /// Stops consuming: the broker sends nothing more. Each `basic.cancel`
    /// waits at most [`BROKER_TIMEOUT`] for its answer: a shutdown or a
    /// retired session goes on to close the connection, which ends the
    /// consumers anyway.
    pub(crate) async fn cancel(&self) {
        for (queue, consumer) in &self.live.consumers() {
            let cancel = self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default());
            if let Err(e) = broker::bounded("basic.cancel", BROKER_TIMEOUT, cancel).await {
                tracing::debug!(queue, error = %e, "basic.cancel failed");
            }
        }
    }

    /// After [`Session::cancel`]: deliveries the broker sent before it
    /// stopped that no task was handed yet go back to their queues
    /// uncounted ([`give_back`]), rather than coming back flagged redelivered
    /// when the connection closes.
    /// Bounded: the broker cannot have more than `prefetch` deliveries out
    /// to a consumer, and a copy given back never reaches this cancelled one.
    pub(crate) async fn return_unhandled(&self, prefetch: u16) {
        for (queue, consumer) in &self.live.consumers() {
            let mut stream = consumer.clone();
            for _ in 0..prefetch {
                let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(UNHANDLED_WAIT, stream.next()).await
                else {
                    break;
                };
                self.window.received(delivery.delivery_tag);
                give_back(&self.publisher, queue, delivery, &self.window).await;
            }
        }
    }

    /// What a metrics scrape reads from this session.
    pub(crate) fn view(&self) -> crate::metrics::SessionView {
        crate::metrics::SessionView {
            connection: self.connection.clone(),
            window: self.window.clone(),
        }
    }

    /// Whether its connection and both its channels are still open.
    pub(crate) fn connected(&self) -> bool {
        self.connection.status().connected()
            && self.channel.status().connected()
            && self.publisher.channel().status().connected()
    }

    /// Retires a session that stopped consuming while still connected:
    /// its consumers (remote control too) are cancelled, deliveries not yet
    /// running go back to their queues, and the tasks running get up to
    /// `grace` to finish and ack before the connection closes.
    pub(crate) async fn retire(self, prefetch: u16, grace: Duration) {
        // Also when the connection is gone: a delivery of it that waits for
        // a slot would run although its ack can no longer reach the broker,
        // which redelivers it anyway.
        self.give_back_waiting();
        if self.connected() {
            self.cancel().await;
            let control = self
                .publisher
                .channel()
                .basic_cancel(self.control.tag(), BasicCancelOptions::default());
            if let Err(e) = broker::bounded("basic.cancel", BROKER_TIMEOUT, control).await {
                tracing::debug!(error = %e, "basic.cancel of remote control failed");
            }
            self.return_unhandled(prefetch).await;
            let deadline = Instant::now() + grace;
            while !self.window.is_empty() && Instant::now() < deadline && self.connected() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.close().await;
    }

    /// Its deliveries that wait for a slot, the rate limiter or their eta
    /// give themselves back to their queues ([`give_back`]) instead of
    /// running: at shutdown, or when the session is retired.
    pub(crate) fn give_back_waiting(&self) {
        self.window.retire();
    }

    /// Closes the connection; unacknowledged messages return to their queues.
    pub(crate) async fn close(self) {
        broker::close(
            &self.connection,
            crate::publish::BROKER_TIMEOUT,
            "worker shutdown",
        )
        .await;
    }
}

/// How long a cancelled consumer is polled for deliveries still on their way.
const UNHANDLED_WAIT: Duration = Duration::from_millis(100);

/// A queue's deliveries, ending with [`Event::Ended`] naming it.
fn task_stream(
    queue: String,
    consumer: lapin::Consumer,
) -> futures_util::stream::BoxStream<'static, Event> {
    let ended = queue.clone();
    consumer
        .map(move |d| Event::Task(queue.clone(), d))
        .chain(futures_util::stream::once(async move {
            Event::Ended(Some(ended))
        }))
        .boxed()
}

/// What the session's merged consumer streams yield.
enum Event {
    Task(String, Result<Delivery, lapin::Error>),
    Control(Result<Delivery, lapin::Error>),
    /// A consumer ended: a queue's, or (`None`) remote control's.
    Ended(Option<String>),
}
