//! What every command needs: the configuration, the database and a publisher, found the same
//! way the pipeline finds them (environment, `.env`, then the defaults `scripts/run` uses).
//! Topics are the services' to create; commands that only read need no broker at all, and
//! start no Kafka client (`sluice health` runs every few seconds in each container).

use std::sync::OnceLock;

use anyhow::Context;
use sluice_core::config::{KafkaConfig, RetryConfig};
use sluice_core::Publisher;
use sluice_db::DatabaseConfig;
use sluice_messages::Topics;
use sqlx::PgPool;

pub struct App {
    pub kafka: KafkaConfig,
    pub topics: Topics,
    pub pool: PgPool,
    publisher: OnceLock<Publisher>,
}

impl App {
    pub async fn connect() -> anyhow::Result<Self> {
        let kafka = KafkaConfig::from_env()?;
        let topics = Topics::new(&kafka.topic_prefix, &RetryConfig::from_env()?.tiers);
        let database = DatabaseConfig::from_env()?;
        let pool = sluice_db::pool::connect(&database)
            .await
            .with_context(|| format!("cannot reach the database at {}", database.redacted_url()))?;
        Ok(Self {
            kafka,
            topics,
            pool,
            publisher: OnceLock::new(),
        })
    }

    /// The producer, made on first use.
    pub fn publisher(&self) -> anyhow::Result<&Publisher> {
        if let Some(publisher) = self.publisher.get() {
            return Ok(publisher);
        }
        let made = Publisher::new(&self.kafka)?;
        Ok(self.publisher.get_or_init(|| made))
    }
}
