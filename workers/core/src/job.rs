//! What a stage's domain logic sees and says: a consumed [`Job`], the [`Cx`] it runs in, and the
//! [`Handler`] trait every worker implements.

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use serde::de::DeserializeOwned;
use sluice_messages::{header, Envelope};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorClass, HandlerError};
use crate::headers::{check_header_names, header_i64, header_str, without_sluice_headers};
use crate::kafka::Output;

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// One consumed message, owned, with its delivery attempt.
#[derive(Debug, Clone)]
pub struct Job {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    /// The message's timestamp (Unix ms) as the broker keeps it, when it has one.
    pub timestamp_ms: Option<i64>,
    /// 1 on the first delivery, 2 after one failure went through the retry tiers, …
    pub attempt: u32,
    /// Why the message's headers could not be read (a name that is not UTF-8): they are
    /// dropped, and the message goes to the dead letters without reaching a handler.
    pub unreadable_headers: Option<String>,
}

impl Job {
    /// Copies what the handler needs out of the client's buffer, once. sluice's own headers
    /// are kept only when `trusted` (an internal topic): from a public input topic they are
    /// dropped, so every message entering from outside starts at attempt 1.
    pub fn from_message(message: &BorrowedMessage<'_>, trusted: bool) -> Self {
        let unreadable_headers = check_header_names(message).err();
        let headers = match unreadable_headers {
            Some(_) => None,
            None => message.headers().and_then(|h| {
                if trusted {
                    Some(h.detach())
                } else {
                    without_sluice_headers(h)
                }
            }),
        };
        let failures = header_i64(headers.as_ref(), header::FAILURES).unwrap_or(0);
        Self {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
            attempt: u32::try_from(failures).unwrap_or(0).saturating_add(1),
            unreadable_headers,
        }
    }

    /// Why this message must be a dead letter before anything reads it: its headers could not
    /// be read (they were dropped).
    pub fn header_error(&self) -> Option<HandlerError> {
        self.unreadable_headers.as_ref().map(|reason| {
            HandlerError::permanent(
                ErrorClass::Decode,
                format!("unreadable headers, dropped: {reason}"),
            )
        })
    }

    /// Decodes the payload as JSON of type `T`; anything else is a permanent failure.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            HandlerError::permanent(ErrorClass::Decode, format!("undecodable message: {e}"))
        })
    }

    pub fn envelope<P: DeserializeOwned>(&self) -> Result<Envelope<P>, HandlerError> {
        self.decode()
    }

    /// The topic the message first entered: its own, or for a retried message back on a
    /// returns topic, the one it failed on (sluice's headers survive only on internal topics).
    pub fn entered_on(&self) -> &str {
        header_str(self.headers.as_ref(), header::ORIGINAL_TOPIC).unwrap_or(&self.topic)
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// How many header entries the message carries (for tests and logs).
    pub fn header_count(&self) -> usize {
        self.headers.as_ref().map_or(0, Headers::count)
    }
}

/// Where to read partitions from: the next offset of each (0: the start of its log).
pub type ReadFrom = Vec<(TopicPartition, i64)>;

/// What a handler makes of one message.
pub type Outcome = Result<Vec<Output>, HandlerError>;

/// The circumstances a handler runs in: shutdown, and the deadline of the current message.
#[derive(Debug, Clone)]
pub struct Cx {
    shutdown: CancellationToken,
    deadline: Option<Instant>,
}

impl Cx {
    pub fn new(shutdown: CancellationToken, timeout: Option<Duration>) -> Self {
        Self {
            shutdown,
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Fires when the process is shutting down: long waits should give up and return
    /// [`HandlerError::Interrupted`].
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// When the loop stops waiting for this message (it then counts as a timeout).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A stage's domain logic. Implement `handle`; override `handle_batch` when a batch is cheaper
/// to handle as a whole (a multi-row insert, a batched prediction), and `on_assigned` to check
/// state kept outside Kafka when partitions arrive.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: &Job, cx: &Cx) -> impl Future<Output = Outcome> + Send;

    /// One outcome per job, in the same order; any other count stops the stage.
    fn handle_batch(&self, jobs: &[Job], cx: &Cx) -> impl Future<Output = Vec<Outcome>> + Send {
        join_all(jobs.iter().map(|job| self.handle(job, cx)))
    }

    /// Called when partitions are assigned, before any of their messages is handled. Returns
    /// where to read those of them from instead of the group's committed offset (0: the start
    /// of the log), for a stage whose own state, kept outside Kafka, says what it applied. An
    /// error stops the stage (a transient one is retried first, with backoff).
    fn on_assigned(
        &self,
        _partitions: &[TopicPartition],
    ) -> impl Future<Output = Result<ReadFrom, HandlerError>> + Send {
        async { Ok(Vec::new()) }
    }
}
