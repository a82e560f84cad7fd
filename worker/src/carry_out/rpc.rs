//! Outcomes sent to the caller's reply queue, as Celery's `rpc://` result
//! backend does (`result_backend = "rpc://"`): to the default exchange,
//! routing key = the task message's `reply_to`, `correlation_id` = the
//! task id, body Celery's result meta (see `celeriac_common::rpc`).
//!
//! The reply goes out before the delivery is acked, so a worker that dies
//! in between sends it again when the message is redelivered (a caller
//! keeps the last state it reads). A reply queue that is gone (the caller
//! exited) makes the broker return the reply: logged, and the task's
//! message is acked all the same.

use super::Handling;
use celeriac_common::TaskOutcome;
use celeriac_common::protocol::TaskMessage;
use celeriac_common::rpc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A reply to send: where, and what.
pub(crate) struct Reply {
    routing_key: String,
    task_id: String,
    body: Vec<u8>,
}

/// Set once a reply that could not be delivered was logged at warn level.
static WARNED: AtomicBool = AtomicBool::new(false);

impl Handling {
    /// The reply due for `outcome` of `msg`: only with the rpc backend, for
    /// a message that names a reply queue and does not ignore its result.
    pub(crate) fn rpc_reply(&self, msg: &TaskMessage, outcome: &TaskOutcome) -> Option<Reply> {
        let reply_to = msg.reply_to.as_deref().filter(|r| !r.is_empty())?;
        if !self.shared.config.rpc_results() || msg.ignore_result {
            return None;
        }
        Some(Reply {
            routing_key: reply_to.to_owned(),
            task_id: msg.id.clone(),
            body: rpc::reply_body(outcome).to_string().into_bytes(),
        })
    }

    /// Publishes `reply` and waits for the broker's confirm; a failure is
    /// logged (once at warn level, then at debug), never retried.
    pub(crate) async fn send_reply(&self, reply: Reply) {
        let props = rpc::reply_properties(&reply.task_id);
        let sent = self
            .publisher
            .publish("", &reply.routing_key, &reply.body, props)
            .await;
        if let Err(e) = sent {
            if WARNED.swap(true, Ordering::Relaxed) {
                let to = &reply.routing_key;
                tracing::debug!(error = %e, reply_to = %to, "rpc reply not delivered");
            } else {
                tracing::warn!(
                    error = %e,
                    reply_to = %reply.routing_key,
                    "rpc reply not delivered: the caller's reply queue is gone or the broker \
                     refused it (further ones are logged at debug level)"
                );
            }
        }
    }
}
