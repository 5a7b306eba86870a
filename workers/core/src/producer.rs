//! A producer whose sends complete when the broker acknowledges them, as rdkafka's
//! `FutureProducer` does, without the cost of its polling thread at rest.
//!
//! That thread polls librdkafka with a 100 ms timeout in a loop, and the rdkafka crate turns
//! the last fraction of a millisecond of each poll into a zero timeout and spins through it:
//! about 1 % of a core for every idle process (measured: all of an idle worker's CPU). Here
//! the thread polls with a one-second timeout; a delivery report still wakes it at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::util::Timeout;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::{ErrorClass, HandlerError};

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Output {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
}

impl Output {
    /// Bytes the broker counts against its message size limit: payload, key and headers.
    pub fn size(&self) -> usize {
        let headers = self.headers.as_ref().map_or(0, |headers| {
            headers
                .iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        });
        self.payload.len() + self.key.as_ref().map_or(0, Vec::len) + headers
    }

    pub fn json<T: Serialize>(
        topic: String,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<Self, HandlerError> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))?;
        Ok(Self {
            topic,
            key: Some(key.into()),
            payload,
            headers: None,
        })
    }
}

/// Where a message landed: partition and offset.
pub type Ack = Result<(i32, i64), KafkaError>;

/// How long the polling thread sleeps at rest.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a send waits for room in a full client queue before giving up.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Hands each delivery report to the send waiting for it.
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<oneshot::Sender<Ack>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let ack = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.clone()),
        };
        // The send may have been dropped (shutdown): nobody to tell.
        let _ = waiting.send(ack);
    }
}

pub struct AckingProducer {
    producer: Arc<BaseProducer<AckContext>>,
    stop: Arc<AtomicBool>,
}

impl AckingProducer {
    pub fn new(config: &ClientConfig) -> Result<Self, KafkaError> {
        let producer: Arc<BaseProducer<AckContext>> =
            Arc::new(config.create_with_context(AckContext)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sluice-producer-poll".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_INTERVAL);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("producer polling thread: {e}")))?;
        Ok(Self { producer, stop })
    }

    /// Queues `output` (waiting while the client's queue is full) and waits for the broker's
    /// acknowledgement.
    pub async fn send(&self, output: &Output) -> Ack {
        match self.queue(output).await {
            Ok(acked) => acked.await.unwrap_or(Err(KafkaError::Canceled)),
            Err(error) => Err(error),
        }
    }

    /// Queues `output`, waiting while the client's queue is full; the receiver gets the
    /// broker's acknowledgement.
    pub async fn queue(&self, output: &Output) -> Result<oneshot::Receiver<Ack>, KafkaError> {
        let (ack, acked) = oneshot::channel();
        let mut waiting = Box::new(ack);
        let give_up = Instant::now() + QUEUE_TIMEOUT;
        loop {
            let mut record =
                BaseRecord::with_opaque_to(&output.topic, waiting).payload(&output.payload);
            if let Some(key) = &output.key {
                record = record.key(key);
            }
            if let Some(headers) = &output.headers {
                record = record.headers(headers.clone());
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record))
                    if Instant::now() < give_up =>
                {
                    waiting = record.delivery_opaque;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
        Ok(acked)
    }

    /// Looks `topic` up on the broker in the background, so that a first send to it finds its
    /// partitions' leaders known and connected instead of waiting for librdkafka's next
    /// metadata refresh (measured: 42 ms of a new process's first publish).
    pub fn look_up(&self, topic: &str) {
        let (producer, topic) = (self.producer.clone(), topic.to_owned());
        let _ = std::thread::Builder::new()
            .name("sluice-producer-look-up".into())
            .spawn(move || {
                let _ = producer
                    .client()
                    .fetch_metadata(Some(&topic), Timeout::After(QUEUE_TIMEOUT));
            });
    }

    /// Drops the messages still queued in the client (not those sent already).
    pub fn purge_queued(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    /// Waits for every queued message to be delivered, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(Timeout::After(timeout));
    }
}

impl Drop for AckingProducer {
    /// The polling thread ends within a poll interval, and with it the client. Not joined: a
    /// command that is done should not wait a second to exit.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
