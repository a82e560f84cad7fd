//! Publishing on a channel that several tasks share.
//!
//! With publisher confirms, the broker numbers a channel's publishes in the
//! order it receives them, and its confirms name those numbers. lapin gives
//! a publish its number and queues its frames one after the other, under two
//! different locks: two tasks publishing on one channel from two threads can
//! take numbers in one order and queue frames in the other, and each then
//! gets the other's confirm. Most of the time both are acked and nothing
//! shows; when a connection dies between the two confirms, the publish the
//! broker never took can be reported confirmed (a task lost), and with a
//! queue that refuses messages a refused task can be reported taken.
//! [`PublishOrder`] makes the numbering and the queueing one step.

use lapin::PublisherConfirm;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

/// One per channel shared by concurrent publishers (see the module docs).
#[derive(Debug, Default)]
pub struct PublishOrder(Mutex<()>);

impl PublishOrder {
    /// `channel.basic_publish(...)`, whose confirm is this message's own
    /// even while other tasks publish on `channel` through the same
    /// `PublishOrder`.
    pub async fn publish(
        &self,
        channel: &Channel,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: &[u8],
        props: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        let publish =
            channel.basic_publish(exchange.into(), routing_key.into(), options, body, props);
        let mut publish = std::pin::pin!(publish);
        // lapin numbers the publish and queues its frames in the first poll
        // (the wait for the frames to be written comes after): that poll
        // alone is done in turn. No lock is held across an await.
        let first = std::future::poll_fn(|cx| {
            let _turn = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            Poll::Ready(publish.as_mut().poll(cx))
        })
        .await;
        match first {
            Poll::Ready(published) => published,
            Poll::Pending => publish.await,
        }
    }
}
