//! Every topic name in one place, and their creation at start-up.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::{KafkaConfig, RetryConfig};
use crate::error::PipelineError;
use crate::kafka;

/// The names of sluice's topics, all under one prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
    /// Retry topics, in ascending delay order, with their delay.
    pub retry_tiers: Vec<(String, Duration)>,
}

impl Topics {
    pub fn new(kafka: &KafkaConfig, retry: &RetryConfig) -> Self {
        let prefix = kafka.topic_prefix.clone();
        let retry_tiers = retry
            .tiers
            .iter()
            .map(|(label, delay)| (format!("{prefix}.retry.{label}"), *delay))
            .collect();
        Self {
            prefix,
            retry_tiers,
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Compute jobs: add, sub, mul, div, sum_squares.
    pub fn compute_jobs(&self) -> String {
        self.name("compute.jobs")
    }

    /// One message per range of a split sum_squares job.
    pub fn compute_parts(&self) -> String {
        self.name("compute.parts")
    }

    /// Finished jobs, for the persister.
    pub fn results(&self) -> String {
        self.name("results")
    }

    /// Finished sum_squares parts, for the persister, which assembles the job.
    pub fn part_results(&self) -> String {
        self.name("compute.part-results")
    }

    pub fn dead_letters(&self) -> String {
        self.name("dead-letters")
    }

    pub fn heartbeats(&self) -> String {
        self.name("heartbeats")
    }

    /// The consumer group of a service, under the same prefix as the topics.
    pub fn group(&self, role: &str) -> String {
        self.name(&format!("group.{role}"))
    }

    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.compute_jobs(),
            self.compute_parts(),
            self.results(),
            self.part_results(),
            self.dead_letters(),
            self.heartbeats(),
        ];
        all.extend(self.retry_tiers.iter().map(|(name, _)| name.clone()));
        all
    }
}

/// Creates every topic that does not exist yet; existing ones are left as they are.
pub async fn ensure_topics(kafka: &KafkaConfig, topics: &Topics) -> Result<(), PipelineError> {
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka).create()?;
    let names = topics.all();
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
