//! The consume → handle → publish → commit loop, written once for every stage.
//!
//! A stage subscribes to its input topics, gathers messages into batches and hands each batch
//! to its [`Handler`], with a bounded number of batches in flight. For every message the handler
//! returns outputs (published anywhere), a transient error (sent to a retry tier) or a permanent
//! one (sent to the dead letters). A message's offset is stored only after every message it
//! caused has been acknowledged by the broker, and only once every earlier message of its
//! partition is done too, so work may finish out of order without ever skipping a message.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaConfig, RetryConfig, WorkerConfig};
use crate::envelope::{header, header_i64, Envelope};
use crate::error::{HandlerError, PipelineError};
use crate::heartbeat::{HeartbeatTask, WorkerStats};
use crate::kafka::{self, Output, Publisher};
use crate::offsets::OffsetTracker;
use crate::retry::RetryPolicy;
use crate::topics::{self, Topics};

/// One consumed message, owned, with its delivery attempt.
#[derive(Debug, Clone)]
pub struct Job {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    /// 1 on the first delivery, 2 after one failure went through the retry tiers, …
    pub attempt: u32,
}

impl Job {
    /// Copies what the handler needs out of the client's buffer, once.
    pub fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message.headers().map(BorrowedHeaders::detach);
        let failures = header_i64(headers.as_ref(), header::FAILURES).unwrap_or(0);
        Self {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            attempt: u32::try_from(failures).unwrap_or(0).saturating_add(1),
        }
    }

    /// Decodes the payload as JSON of type `T`; anything else is a permanent failure.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| HandlerError::permanent("decode", format!("undecodable message: {e}")))
    }

    pub fn envelope<P: DeserializeOwned>(&self) -> Result<Envelope<P>, HandlerError> {
        self.decode()
    }
}

/// What a handler makes of one message.
pub type Outcome = Result<Vec<Output>, HandlerError>;

/// A stage's domain logic. Implement `handle`; override `handle_batch` when a batch is cheaper
/// to handle as a whole (a multi-row insert, a batched prediction).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, job: &Job) -> impl Future<Output = Outcome> + Send;

    /// One outcome per job, in the same order.
    fn handle_batch(&self, jobs: &[Job]) -> impl Future<Output = Vec<Outcome>> + Send {
        join_all(jobs.iter().map(|job| self.handle(job)))
    }
}

/// Everything a worker process shares between its stages, built once at start-up.
pub struct StageContext {
    pub kafka: KafkaConfig,
    pub worker: WorkerConfig,
    pub topics: Topics,
    pub retry: RetryPolicy,
    pub publisher: Publisher,
    pub stats: Arc<WorkerStats>,
}

impl StageContext {
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

    /// Makes sure every topic exists, waiting for the broker while it is not reachable yet
    /// (containers start in any order).
    pub async fn new(
        kafka: KafkaConfig,
        retry: RetryConfig,
        worker: WorkerConfig,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>, PipelineError> {
        let topics = Topics::new(&kafka, &retry);
        let mut pause = Duration::from_millis(200);
        loop {
            match topics::ensure_topics(&kafka, &topics).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && !shutdown.is_cancelled() => {
                    tracing::warn!(error = %e, "broker not ready, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
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

/// Drops the bookkeeping of partitions taken away by a rebalance.
struct TrackingContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for TrackingContext {}

impl ConsumerContext for TrackingContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            let mut tracker = self.tracker.lock().expect("offset tracker lock");
            for p in partitions.elements() {
                tracker.forget(p.topic(), p.partition());
            }
        }
    }
}

type TrackedConsumer = StreamConsumer<TrackingContext>;

/// Runs `handler` over `inputs` as consumer group `role` until `shutdown` fires; then stops
/// taking messages, lets the batches in flight finish, commits and returns.
pub async fn run_stage<H: Handler>(
    ctx: Arc<StageContext>,
    role: &str,
    inputs: &[String],
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
    let consumer: Arc<TrackedConsumer> = Arc::new(
        kafka::consumer_config(&ctx.kafka, &ctx.topics.group(role)).create_with_context(
            TrackingContext {
                tracker: tracker.clone(),
            },
        )?,
    );
    let input_refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&input_refs)?;
    let heartbeat = HeartbeatTask::spawn(ctx.clone(), role);
    tracing::info!(role, instance = %ctx.worker.instance_id, ?inputs, "stage started");

    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(ctx.worker.batches_in_flight));
    let mut batches = JoinSet::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let jobs = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            jobs = next_batch(&consumer, &ctx.worker) => jobs,
        };
        {
            let mut tracker = tracker.lock().expect("offset tracker lock");
            for job in &jobs {
                tracker.begin(&job.topic, job.partition, job.offset);
            }
        }
        ctx.stats.started(jobs.len());
        batches.spawn(process_batch(
            ctx.clone(),
            handler.clone(),
            consumer.clone(),
            tracker.clone(),
            jobs,
            shutdown.clone(),
            permit,
        ));
        while let Some(done) = batches.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "batch task failed");
            }
        }
    }

    tracing::info!(
        role,
        in_flight = batches.len(),
        "shutting down: finishing batches in flight"
    );
    while batches.join_next().await.is_some() {}
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit had nothing to do or failed");
    }
    heartbeat.stop().await;
    ctx.publisher.flush(Duration::from_secs(5));
    tracing::info!(role, "stage stopped");
    Ok(())
}

/// Waits for one message, then takes what else arrives within the batch window.
async fn next_batch(consumer: &TrackedConsumer, worker: &WorkerConfig) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(worker.batch_max.min(1024));
    loop {
        match consumer.recv().await {
            Ok(message) => {
                jobs.push(Job::from_message(&message));
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "consume failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let window = tokio::time::sleep(worker.batch_wait);
    tokio::pin!(window);
    while jobs.len() < worker.batch_max {
        tokio::select! {
            biased;
            received = consumer.recv() => match received {
                Ok(message) => jobs.push(Job::from_message(&message)),
                Err(e) => {
                    tracing::warn!(error = %e, "consume failed");
                    break;
                }
            },
            _ = &mut window => break,
        }
    }
    jobs
}

async fn process_batch<H: Handler>(
    ctx: Arc<StageContext>,
    handler: Arc<H>,
    consumer: Arc<TrackedConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    jobs: Vec<Job>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let outcomes = handler.handle_batch(&jobs).await;
    debug_assert_eq!(outcomes.len(), jobs.len(), "one outcome per job");
    let finished = join_all(
        jobs.iter()
            .zip(outcomes)
            .map(|(job, outcome)| deliver(&ctx, job, outcome, &shutdown)),
    )
    .await;

    // Commit points only grow, so the last one reported per partition is the one to store.
    let mut points = BTreeMap::new();
    {
        let mut tracker = tracker.lock().expect("offset tracker lock");
        for (job, durable) in jobs.iter().zip(&finished) {
            if *durable {
                if let Some(next) = tracker.complete(&job.topic, job.partition, job.offset) {
                    points.insert((job.topic.as_str(), job.partition), next);
                }
            }
        }
    }
    if !points.is_empty() {
        let mut commits = TopicPartitionList::new();
        for ((topic, partition), next) in points {
            let _ = commits.add_partition_offset(topic, partition, Offset::Offset(next));
        }
        if let Err(e) = consumer.store_offsets(&commits) {
            tracing::debug!(error = %e, "could not store offsets (partition revoked?)");
        }
    }
    ctx.stats
        .finished(jobs.len(), finished.iter().filter(|d| **d).count());
}

/// Publishes what one job produced, or where its failure goes. True once all of it is durable.
async fn deliver(
    ctx: &StageContext,
    job: &Job,
    outcome: Outcome,
    shutdown: &CancellationToken,
) -> bool {
    let outputs = match outcome {
        Ok(outputs) => outputs,
        Err(HandlerError::Interrupted) => return false,
        Err(error) => {
            let next = ctx.retry.route_failure(&ctx.topics, job, &error);
            tracing::warn!(
                topic = %job.topic, partition = job.partition, offset = job.offset,
                attempt = job.attempt, to = %next.topic, %error, "message failed"
            );
            vec![next]
        }
    };
    join_all(outputs.iter().map(|o| ctx.publisher.publish(o, shutdown)))
        .await
        .iter()
        .all(Result::is_ok)
}
