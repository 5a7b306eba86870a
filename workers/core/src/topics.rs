//! Creating topics at start-up (their names are in [`sluice_messages::Topics`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::PipelineError;
use crate::kafka;

/// Creates every topic that does not exist yet; existing ones are left as they are.
pub async fn ensure_topics(kafka: &KafkaConfig, names: &[String]) -> Result<(), PipelineError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka).create()?;
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            )
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
