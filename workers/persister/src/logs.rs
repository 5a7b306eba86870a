//! What the broker holds in a partition now: where its log ends, and the timestamp of the
//! message at an offset. The persister asks on assignment, to tell whether the log its stored
//! positions were taken in is still the one there.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::config::KafkaConfig;
use sluice_core::{kafka, TopicPartition};

/// How long the broker may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks with a client of its own per question: questions come only with assignments, and an
/// idle client would cost threads and wake-ups all the time in between.
pub struct LogProbe {
    kafka: KafkaConfig,
}

impl LogProbe {
    pub fn new(kafka: &KafkaConfig) -> Self {
        Self {
            kafka: kafka.clone(),
        }
    }

    /// The offset each partition's next message will get.
    pub async fn ends(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Result<HashMap<TopicPartition, i64>, KafkaError> {
        let client: BaseConsumer = kafka::client_config(&self.kafka).create()?;
        tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .map(|p| {
                    let (_, high) = client.fetch_watermarks(&p.topic, p.partition, ASK_TIMEOUT)?;
                    Ok((p, high))
                })
                .collect()
        })
        .await
        .expect("a watermark look-up does not panic")
    }

    /// The timestamp of the message at each (partition, offset), read with a consumer of no
    /// group. `None` where it cannot be told: no message at that offset any more (retention),
    /// no timestamp, or no answer in time.
    pub async fn timestamps(
        &self,
        at: Vec<(TopicPartition, i64)>,
    ) -> Result<HashMap<TopicPartition, Option<i64>>, KafkaError> {
        let consumer: BaseConsumer = kafka::reader_config(&self.kafka, "sluice-log-probe")
            .set("auto.offset.reset", "latest")
            .create()?;
        tokio::task::spawn_blocking(move || {
            let mut assignment = TopicPartitionList::new();
            for (partition, offset) in &at {
                assignment.add_partition_offset(
                    &partition.topic,
                    partition.partition,
                    Offset::Offset(*offset),
                )?;
            }
            consumer.assign(&assignment)?;
            let mut wanted: HashMap<TopicPartition, i64> = at.into_iter().collect();
            let mut found = HashMap::new();
            let deadline = Instant::now() + ASK_TIMEOUT;
            while !wanted.is_empty() && Instant::now() < deadline {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let partition = TopicPartition {
                    topic: message.topic().to_string(),
                    partition: message.partition(),
                };
                if let Some(offset) = wanted.remove(&partition) {
                    let timestamp = message.timestamp().to_millis();
                    found.insert(partition, timestamp.filter(|_| message.offset() == offset));
                }
            }
            found.extend(wanted.into_keys().map(|partition| (partition, None)));
            Ok(found)
        })
        .await
        .expect("reading a message does not panic")
    }
}
