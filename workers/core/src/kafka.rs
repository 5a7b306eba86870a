//! Kafka clients built from [`KafkaConfig`], and the one way sluice publishes: [`Publisher`],
//! which returns only once the broker has acknowledged the message, and tells an output the
//! broker will never accept from one worth waiting for.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Arc;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::error::PipelineError;
use crate::pause::Pause;
use crate::producer::AckingProducer;
pub use crate::producer::Output;

/// Largest message sluice produces; a dead letter carries its original payload whole.
pub const MESSAGE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The record-batch limit sluice's topics and producers are given: Kafka counts a batch's
/// header and each record's framing too, so a message of exactly [`MESSAGE_MAX_BYTES`] must
/// still fit.
pub const BATCH_MAX_BYTES: usize = MESSAGE_MAX_BYTES + 64 * 1024;

/// The brokers and nothing else; every config below is built on it.
fn bootstrap(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// Applies the `KAFKA_OPT_*` pass-through last, so that it wins over sluice's own settings.
fn with_overrides(mut config: ClientConfig, kafka: &KafkaConfig) -> ClientConfig {
    for (name, value) in &kafka.client_overrides {
        config.set(name, value);
    }
    config
}

/// For clients with no role-specific settings (the admin client, metadata look-ups).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    with_overrides(bootstrap(kafka), kafka)
}

pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = bootstrap(kafka);
    config
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", BATCH_MAX_BYTES.to_string())
        .set("queue.buffering.max.kbytes", "65536")
        // Connected to every broker as soon as it is known, not at the first message for it:
        // a new process's first publish would otherwise wait for the connection.
        .set("enable.sparse.connections", "false")
        // Topics are the services' to create, with their settings (compaction, size limit);
        // one a broker made for a producer's first message would have the broker's defaults.
        .set("allow.auto.create.topics", "false");
    with_overrides(config, kafka)
}

/// A consumer that reads where it is assigned and commits nothing: `name` is only a group id
/// for the client's sake, never joined.
pub fn reader_config(kafka: &KafkaConfig, name: &str) -> ClientConfig {
    let mut config = client_config(kafka);
    config
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    config
}

/// A group consumer that stores offsets only when told (the at-least-once pattern), holding
/// each fetch at most `fetch_wait_ms` on the broker.
pub fn consumer_config(kafka: &KafkaConfig, group: &str, fetch_wait_ms: u32) -> ClientConfig {
    let mut config = bootstrap(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A member joining or leaving moves only the partitions that must move (incremental
        // assign and revoke): work in flight on the others, paid LLM calls and fits among
        // it, goes on. The feed already handles a revoke or assignment of any subset.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (kafka.session_timeout_ms / 4).max(500).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            kafka.max_poll_interval_ms.to_string(),
        )
        // Bounded prefetch keeps a worker's memory small whatever the backlog.
        .set("queued.max.messages.kbytes", "8192")
        // librdkafka waits this long (default 1 s) before fetching again once that prefetch is
        // full; a stage drains 8 MB in far less, so the default left it idle for most of a
        // second at a time under load (benchmark: 40k → 70k jobs/s).
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.max.bytes", "8388608")
        .set("max.partition.fetch.bytes", "1048576");
    with_overrides(config, kafka)
}

/// Why [`Publisher::publish`] gave up on an output.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PublishError {
    /// The broker will never accept it: too large, an invalid or unknown topic, not
    /// authorized. Retrying would hold the stage forever.
    #[error("undeliverable to {topic}: {code}")]
    Undeliverable {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl PublishError {
    /// Whether the message itself was refused (its size, or a record the broker finds invalid)
    /// rather than its topic (unknown, not authorized): the latter fails every message.
    pub fn refuses_the_message(&self) -> bool {
        matches!(self, Self::Undeliverable { code, .. }
            if is_too_large(*code) || *code == RDKafkaErrorCode::InvalidRecord)
    }

    /// Whether the message's size was the problem.
    pub fn too_large(&self) -> bool {
        matches!(self, Self::Undeliverable { code, .. } if is_too_large(*code))
    }
}

/// Whether a refusal is about the size of what was sent.
pub fn is_too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
    )
}

/// Whether a delivery error can never succeed on retry. librdkafka has already waited out
/// metadata propagation before it calls a topic unknown.
pub fn is_undeliverable(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    let code = error.rdkafka_error_code()?;
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord
    )
    .then_some(code)
}

/// Room left in a record batch for its header and each record's framing.
const BATCH_FRAMING_BYTES: usize = 128;

/// A producer whose `publish` returns once the broker acknowledged the message.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<AckingProducer>,
    /// Larger outputs are refused here, before anything of them is sent.
    max_message_bytes: usize,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig) -> Result<Self, PipelineError> {
        Ok(Self {
            producer: Arc::new(AckingProducer::new(&producer_config(kafka))?),
            max_message_bytes: MESSAGE_MAX_BYTES,
        })
    }

    /// A publisher whose messages reach each partition in the order they were sent, even when
    /// the client retries a request: one request in flight per broker connection. Its batches
    /// stay within `topic_max_bytes` (the `max.message.bytes` of the topic it writes), and a
    /// message that cannot fit one is refused before it is queued: a batch the broker refused
    /// after some of [`Publisher::publish_in_order`]'s outputs had landed would leave those
    /// there alone.
    pub fn ordered(kafka: &KafkaConfig, topic_max_bytes: usize) -> Result<Self, PipelineError> {
        let within = topic_max_bytes.saturating_sub(BATCH_FRAMING_BYTES);
        let mut config = producer_config(kafka);
        config
            .set("max.in.flight.requests.per.connection", "1")
            .set("batch.size", within.clamp(1, 1_000_000).to_string());
        Ok(Self {
            producer: Arc::new(AckingProducer::new(&config)?),
            max_message_bytes: within.min(MESSAGE_MAX_BYTES),
        })
    }

    fn refuses(&self, output: &Output) -> Option<KafkaError> {
        // librdkafka would refuse it too, but only after copying it into its queue.
        (output.size() > self.max_message_bytes).then_some(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge,
        ))
    }

    /// Publishes once; the error is the broker's or the client's.
    pub async fn try_publish(&self, output: &Output) -> Result<(i32, i64), KafkaError> {
        if let Some(refused) = self.refuses(output) {
            return Err(refused);
        }
        self.producer.send(output).await
    }

    /// Publishes `outputs` in their order: each is queued only once the one before it is, so
    /// with an [`ordered`](Self::ordered) publisher a partition receives them in this order.
    /// Waits for every acknowledgement, failed or not, and returns the first failure. Dropped
    /// before it completes (its task aborted), it purges what is still queued in the client, so
    /// nothing of it lands later.
    pub async fn publish_in_order(&self, outputs: &[Output]) -> Result<(), KafkaError> {
        let mut purge = PurgeUnlessDone {
            producer: &self.producer,
            done: false,
        };
        let mut acks = Vec::with_capacity(outputs.len());
        let mut failed = None;
        // Checked before any is queued, so that none of them lands when one cannot.
        if let Some(refused) = outputs.iter().find_map(|output| self.refuses(output)) {
            purge.done = true;
            return Err(refused);
        }
        for output in outputs {
            match self.producer.queue(output).await {
                Ok(ack) => acks.push(ack),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        for ack in join_all(acks).await {
            if let Err(error) = ack.unwrap_or(Err(KafkaError::Canceled)) {
                failed.get_or_insert(error);
            }
        }
        purge.done = true;
        failed.map_or(Ok(()), Err)
    }

    /// Publishes until the broker acknowledges, backing off while it is unreachable, so an
    /// output is never dropped. Gives up on an output the broker can never accept, and when
    /// `shutdown` fires.
    pub async fn publish(
        &self,
        output: &Output,
        shutdown: &CancellationToken,
    ) -> Result<(), PublishError> {
        let mut pause = Pause::starting_at(Duration::from_millis(100));
        loop {
            match self.try_publish(output).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    if let Some(code) = is_undeliverable(&e) {
                        return Err(PublishError::Undeliverable {
                            topic: output.topic.clone(),
                            code,
                        });
                    }
                    tracing::warn!(topic = %output.topic, error = %e, "publish failed, retrying");
                    if !pause.wait(shutdown).await {
                        return Err(PublishError::Interrupted);
                    }
                }
            }
        }
    }

    /// Starts looking `topic` up, so that the first publish to it does not wait for the
    /// client to learn its partitions (a new process's first message).
    pub fn look_up(&self, topic: &str) {
        self.producer.look_up(topic);
    }

    /// Waits for every message still queued in the client to be delivered.
    pub fn flush(&self, timeout: Duration) {
        self.producer.flush(timeout);
    }
}

/// Purges the client's queue when dropped before `done`: the publishing it guards was given up.
struct PurgeUnlessDone<'a> {
    producer: &'a AckingProducer,
    done: bool,
}

impl Drop for PurgeUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.purge_queued();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_cannot_pass_are_undeliverable() {
        let produce = KafkaError::MessageProduction;
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::MessageSizeTooLarge)).is_some());
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::TopicAuthorizationFailed)).is_some());
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::InvalidTopic)).is_some());
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::MessageTimedOut)).is_none());
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::BrokerTransportFailure)).is_none());
        assert!(is_undeliverable(&produce(RDKafkaErrorCode::NotEnoughReplicas)).is_none());
    }
}
