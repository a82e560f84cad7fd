//! Sending a canvas: chords recorded in the result backend first, then the
//! messages published, each confirmed by the broker.

use super::Canvas;
use super::plan::{Plan, plan};
use super::result::WorkflowResult;
use crate::client::{Client, ClientError};
use celeriac_common::backend::chord::ChordError;
use futures_util::StreamExt;

/// Most messages of one workflow waiting for their publish confirms at once.
const SEND_WINDOW: usize = 256;

/// A workflow that cannot be sent, or was not sent entirely.
#[derive(Debug, thiserror::Error)]
pub enum CanvasError {
    /// A chain, a group or a chord's header without tasks.
    #[error("the workflow has an empty {0}")]
    Empty(&'static str),
    /// A task's arguments could not be encoded.
    #[error("arguments of {task} could not be encoded: {reason}")]
    Args {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
    /// A chain longer than [`super::MAX_CHAIN_STEPS`].
    #[error(
        "chain of {steps} steps exceeds the limit of {limit}: each message carries the steps after it; use a group (with a chord) for fan-out, or chain batches of work"
    )]
    ChainTooLong {
        /// Its steps.
        steps: usize,
        /// The limit.
        limit: usize,
    },
    /// Nesting deeper than [`super::MAX_DEPTH`].
    #[error("the workflow nests chains, groups and chords deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// An option has a value Celery would not accept either.
    #[error("task {task}: option {name} = {value} is invalid")]
    BadOption {
        /// The task.
        task: String,
        /// The option.
        name: String,
        /// Its value (JSON).
        value: String,
    },
    /// A message would be larger than `max_message_bytes`, which workers refuse.
    #[error(
        "the message of task {task_id} would be {size} bytes, over max_message_bytes ({limit}); shorten the chain or the arguments"
    )]
    TooLarge {
        /// The task.
        task_id: String,
        /// Its body's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A signature could not be encoded.
    #[error("a signature could not be encoded: {0}")]
    Encode(String),
    /// A chord needs the result backend (where its members are counted).
    #[error("a chord needs a database result backend (result_backend is \"none\" or rpc://)")]
    ChordsNeedBackend,
    /// Recording a chord failed; nothing was sent.
    #[error(transparent)]
    Chord(#[from] ChordError),
    /// Publishing failed. The first `sent` messages were published and
    /// confirmed (a group's first members may run); of the ones after them,
    /// up to 256 were in flight and may have been published too.
    #[error("workflow partly sent ({sent} of {total} messages): {source}")]
    Publish {
        /// Messages published.
        sent: usize,
        /// Messages in the workflow.
        total: usize,
        /// The error.
        source: Box<ClientError>,
    },
}

impl Client {
    /// Sends a workflow as Celery does: a chain's first task carries the
    /// rest (reversed) in `body[2]["chain"]`; each group member gets the
    /// `group` and `group_index` headers; a chord is recorded in the result
    /// backend (size and callback) before its members are sent, each with
    /// the callback in `body[2]["chord"]`. Returns once the broker holds
    /// every message.
    pub async fn send_workflow(&self, canvas: &Canvas) -> Result<WorkflowResult, CanvasError> {
        let Plan {
            chords,
            mut messages,
            result,
        } = plan(canvas)?;
        let limit = self.config().max_message_bytes;
        for out in &mut messages {
            let size = out
                .msg
                .encode_body()
                .map_err(|e| CanvasError::Encode(e.to_string()))?
                .len();
            if size > limit {
                return Err(CanvasError::TooLarge {
                    task_id: out.msg.id.clone(),
                    size,
                    limit,
                });
            }
            out.msg.origin = Some(self.origin().to_owned());
            out.msg.reply_to = self.reply_to();
        }
        if !chords.is_empty() {
            if !self.config().results_enabled() || self.config().rpc_results() {
                return Err(CanvasError::ChordsNeedBackend);
            }
            let backend = self
                .backend()
                .await
                .map_err(|source| CanvasError::Publish {
                    sent: 0,
                    total: messages.len(),
                    source: Box::new(source),
                })?;
            for chord in &chords {
                backend.create_chord(chord).await?;
            }
        }
        let total = messages.len();
        let default_queue = self.config().default_queue.clone();
        // Pipelined: up to SEND_WINDOW publishes wait for their confirms at
        // once (a fan-out of 10,000 is not 10,000 round trips in a row).
        let mut outgoing = messages.iter();
        let mut confirms = futures_util::stream::FuturesOrdered::new();
        let mut sent = 0;
        loop {
            while confirms.len() < SEND_WINDOW {
                let Some(out) = outgoing.next() else { break };
                let queue = out.queue.as_deref().unwrap_or(&default_queue);
                confirms.push_back(self.send_message(&out.msg, queue));
            }
            let Some(confirmed) = confirms.next().await else {
                break;
            };
            confirmed.map_err(|source| CanvasError::Publish {
                sent,
                total,
                source: Box::new(source),
            })?;
            sent += 1;
        }
        Ok(WorkflowResult::new(self.clone(), result))
    }
}
