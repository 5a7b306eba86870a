//! What every command needs: the configuration, the database and a publisher, found the same
//! way the pipeline finds them (environment, `.env`, then the defaults `scripts/run` uses).
//! Topics are the services' to create; commands that only read need no broker at all.

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
    pub publisher: Publisher,
}

impl App {
    pub async fn connect() -> anyhow::Result<Self> {
        let kafka = KafkaConfig::from_env()?;
        let topics = Topics::new(&kafka.topic_prefix, &RetryConfig::from_env()?.tiers);
        let database = DatabaseConfig::from_env()?;
        let pool = sluice_db::pool::connect(&database)
            .await
            .with_context(|| format!("cannot reach the database at {}", database.redacted_url()))?;
        let publisher = Publisher::new(&kafka)?;
        Ok(Self {
            kafka,
            topics,
            pool,
            publisher,
        })
    }
}
