//! What a worker process shares between its stages, built once at start-up.

use std::sync::Arc;
use std::time::Duration;

use sluice_messages::Topics;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, RetryConfig, WorkerConfig};
use crate::error::PipelineError;
use crate::kafka::Publisher;
use crate::pause::Pause;
use crate::retry::RetryPolicy;
use crate::stats::WorkerStats;
use crate::topics;

pub struct StageContext {
    pub kafka: KafkaConfig,
    pub worker: WorkerConfig,
    pub topics: Topics,
    pub retry: RetryPolicy,
    pub publisher: Publisher,
    pub stats: Arc<WorkerStats>,
}

impl StageContext {
    /// The same context with counters of its own, for another stage of the same process: each
    /// stage's heartbeat reports its own work in flight, progress and stalls.
    pub fn for_another_stage(&self) -> Arc<Self> {
        Arc::new(Self {
            kafka: self.kafka.clone(),
            worker: self.worker.clone(),
            topics: self.topics.clone(),
            retry: self.retry.clone(),
            publisher: self.publisher.clone(),
            stats: Arc::new(WorkerStats::default()),
        })
    }

    /// Reads the configuration from the environment, then as [`StageContext::new`].
    pub async fn from_env(
        worker: WorkerConfig,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, PipelineError> {
        Self::new(
            KafkaConfig::from_env()?,
            RetryConfig::from_env()?,
            worker,
            shutdown,
        )
        .await
    }

    /// Makes sure every shared topic exists, waiting for the broker while it is not reachable
    /// yet (containers start in any order).
    pub async fn new(
        kafka: KafkaConfig,
        retry: RetryConfig,
        worker: WorkerConfig,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, PipelineError> {
        worker.validate()?;
        let topics = Topics::new(&kafka.topic_prefix, &retry.tiers);
        let mut pause = Pause::starting_at(Duration::from_millis(200));
        loop {
            match topics::ensure_shared_topics(&kafka, &topics).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, "broker not ready, retrying");
                    pause.wait(shutdown).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Arc::new(Self {
            publisher: Publisher::new(&kafka)?,
            retry: RetryPolicy::new(retry),
            stats: Arc::new(WorkerStats::default()),
            kafka,
            worker,
            topics,
        }))
    }
}
