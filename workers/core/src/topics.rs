//! Creating topics at start-up (their names are in [`sluice_messages::Topics`]).

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use sluice_messages::Topics;

use crate::config::KafkaConfig;
use crate::error::PipelineError;
use crate::kafka;

/// Creates every topic that does not exist yet; existing ones are left as they are.
pub async fn ensure_topics(kafka: &KafkaConfig, names: &[String]) -> Result<(), PipelineError> {
    create(&admin_client(kafka)?, kafka, names, |_| vec![]).await
}

/// Creates the topics every service shares ([`Topics::all`]), each with its
/// [`Topics::settings`], and gives an existing one the [`Topics::required_settings`] it must
/// have (an older sluice made `kv.updates` compacted, which loses commands, and dated
/// heartbeats by their sender's clock).
pub async fn ensure_shared_topics(
    kafka: &KafkaConfig,
    topics: &Topics,
) -> Result<(), PipelineError> {
    let admin = admin_client(kafka)?;
    let names = topics.all();
    create(&admin, kafka, &names, |name| topics.settings(name)).await?;
    enforce_required_settings(&admin, topics, &names).await
}

/// The `max.message.bytes` `topic` has now: what the broker takes in one record batch. An
/// operator may have created it smaller than sluice would.
pub async fn max_message_bytes(kafka: &KafkaConfig, topic: &str) -> Result<usize, PipelineError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let described = admin_client(kafka)?
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await?
        .pop()
        .ok_or(PipelineError::Kafka(KafkaError::AdminOp(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        )))?
        .map_err(|code| not_described(topic, code))?;
    Ok(described
        .get("max.message.bytes")
        .and_then(|entry| entry.value.as_deref()?.parse().ok())
        .unwrap_or(kafka::BATCH_MAX_BYTES))
}

/// Why `topic`'s configuration could not be described: retried when the topic was created a
/// moment ago and the broker that answered has not heard yet.
fn not_described(topic: &str, code: RDKafkaErrorCode) -> PipelineError {
    match code {
        RDKafkaErrorCode::UnknownTopicOrPartition => {
            PipelineError::Kafka(KafkaError::AdminOp(code))
        }
        _ => PipelineError::TopicConfig {
            topic: topic.to_string(),
            code,
        },
    }
}

fn admin_client(kafka: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, PipelineError> {
    Ok(kafka::client_config(kafka).create()?)
}

/// Changes those of `names` that lack one of their required settings, giving them their
/// [`Topics::settings`] too and keeping every other setting the topic was given. Kafka's
/// AlterConfigs replaces a topic's whole configuration, so the topic's own settings are sent
/// again with it.
async fn enforce_required_settings(
    admin: &AdminClient<DefaultClientContext>,
    topics: &Topics,
    names: &[String],
) -> Result<(), PipelineError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let specifiers: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .map(|name| ResourceSpecifier::Topic(name))
        .collect();
    let mut changes: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for (name, described) in names
        .iter()
        .zip(admin.describe_configs(&specifiers, &options).await?)
    {
        let resource = described.map_err(|code| not_described(name, code))?;
        let current = |setting: &str| {
            resource
                .get(setting)
                .and_then(|entry| entry.value.clone())
                .unwrap_or_default()
        };
        let missing: Vec<(&str, &str)> = topics
            .required_settings(name)
            .into_iter()
            .filter(|(setting, value)| current(setting) != *value)
            .collect();
        if missing.is_empty() {
            continue;
        }
        for (setting, value) in &missing {
            tracing::warn!(topic = %name, setting, from = %current(setting), to = value,
                "changing the topic's configuration (README, \"Upgrading\")");
        }
        let ours: Vec<(&str, &str)> = topics.settings(name).into_iter().chain(missing).collect();
        let mut settings: Vec<(String, String)> = resource
            .entries
            .iter()
            .filter(|entry| entry.source == ConfigSource::DynamicTopic)
            .filter(|entry| !ours.iter().any(|(setting, _)| *setting == entry.name))
            .filter_map(|entry| Some((entry.name.clone(), entry.value.clone()?)))
            .collect();
        settings.extend(ours.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        changes.push((name.clone(), settings));
    }
    if changes.is_empty() {
        return Ok(());
    }
    let alters: Vec<AlterConfig<'_>> = changes
        .iter()
        .map(|(name, settings)| {
            settings.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(name)),
                |alter, (setting, value)| alter.set(setting, value),
            )
        })
        .collect();
    for outcome in admin.alter_configs(&alters, &options).await? {
        if let Err((specifier, code)) = outcome {
            return Err(PipelineError::TopicConfig {
                topic: format!("{specifier:?}"),
                code,
            });
        }
    }
    Ok(())
}

async fn create(
    admin: &AdminClient<DefaultClientContext>,
    kafka: &KafkaConfig,
    names: &[String],
    settings: impl Fn(&str) -> Vec<(&'static str, &'static str)>,
) -> Result<(), PipelineError> {
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
