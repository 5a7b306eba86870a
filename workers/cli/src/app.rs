//! What every command needs: the configuration, the database and a publisher, found the same
//! way the pipeline finds them (environment, `.env`, then the defaults `scripts/run` uses).
//! Topics are the services' to create; commands that only read need no broker at all.

use anyhow::Context;
use sluice_core::config::{KafkaConfig, RetryConfig};
use sluice_core::topics::Topics;
use sluice_core::Publisher;
use sluice_persister::{store, DatabaseConfig};
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
        let topics = Topics::new(&kafka, &RetryConfig::from_env()?);
        let database = DatabaseConfig::from_env()?;
        let pool = store::connect(&database)
            .await
            .with_context(|| format!("cannot reach the database at {}", redact(&database.url)))?;
        let publisher = Publisher::new(&kafka)?;
        Ok(Self {
            kafka,
            topics,
            pool,
            publisher,
        })
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
