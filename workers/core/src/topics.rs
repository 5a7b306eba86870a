//! Creating topics at start-up (their names are in [`sluice_messages::Topics`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use sluice_messages::Topics;

use crate::config::KafkaConfig;
use crate::error::PipelineError;
use crate::kafka;

/// Creates every topic that does not exist yet; existing ones are left as they are.
pub async fn ensure_topics(kafka: &KafkaConfig, names: &[String]) -> Result<(), PipelineError> {
    create(kafka, names, |_| vec![]).await
}

/// Creates the topics every service shares ([`Topics::all`]), each with its
/// [`Topics::settings`].
pub async fn ensure_shared_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
) -> Result<(), PipelineError> {
    create(kafka, &topics.all(), |name| topics.settings(name)).await
}

async fn create(
    kafka: &KafkaConfig,
    names: &[String],
    settings: impl Fn(&str) -> Vec<(&'static str, &'static str)>,
) -> Result<(), PipelineError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka).create()?;
    let max_message_bytes = kafka::BATCH_MAX_BYTES.to_string();
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            )
            // A broker's default (1 MiB) is below a KV value's limit plus its envelope.
            .set("max.message.bytes", &max_message_bytes);
            settings(name)
                .into_iter()
                .fold(topic, |topic, (setting, value)| topic.set(setting, value))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for outcome in admin.create_topics(&new_topics, &options).await? {
        match outcome {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(PipelineError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
