//! The retry service: consumes the delay-tier retry topics and sends every message back to its
//! stage's returns topic once it is due.
//!
//! It never sleeps per message. Messages of a tier partition fall due in the order they were
//! published (see `sluice_core::retry`), so the service holds a partition's messages in memory
//! and pauses the partition while its head is not due; one timer, set to the earliest head
//! across all partitions, wakes it. Other partitions and tiers keep flowing meanwhile.
//!
//! It reads through the core's [`Feed`], which hands rebalances out in order with messages: a
//! revoke drops exactly the messages held under the old assignment, never one received after
//! the partition came back. A due time is never later than the tier's delay after the message
//! was received here, whatever its header says, and a message only ever goes back to a
//! returns topic. Offsets are stored only after the broker acknowledged the re-published
//! message (or its dead letter).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use futures::FutureExt;
use sluice_core::config::WorkerConfig;
use sluice_core::consumer::{Event, Feed};
use sluice_core::headers::{header_i64, header_str, rewrite_headers};
use sluice_core::heartbeat::HeartbeatTask;
use sluice_core::retry::publish_dead_letter;
use sluice_core::{
    ErrorClass, HandlerError, Job, Output, PipelineError, PublishError, StageContext,
    TopicPartition,
};
use sluice_messages::header;
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "retry";

/// Most messages taken from the client per wake-up.
const MAX_DRAIN: usize = 512;

/// A message waiting for its due time.
struct Held {
    job: Job,
    due_ms: i64,
}

struct RetryService {
    ctx: Arc<StageContext>,
    feed: Feed,
    /// Delay of each tier topic.
    tiers: HashMap<String, Duration>,
    /// Messages received but not yet due, per partition, in offset order.
    held: HashMap<TopicPartition, VecDeque<Held>>,
}

/// What happened to one due message.
enum Sent {
    Back,
    DeadLettered,
    Interrupted,
}

impl RetryService {
    /// When `job` may go back: its header's due time, but never later than the tier's delay
    /// after now (a producer's clock or a forged header cannot park a message for longer).
    fn due_ms(&self, job: &Job) -> i64 {
        let now = Utc::now().timestamp_millis();
        let latest = now
            + self
                .tiers
                .get(&job.topic)
                .map_or(0, |d| d.as_millis() as i64);
        header_i64(job.headers.as_ref(), header::DUE_MS)
            .unwrap_or(now)
            .min(latest)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(job) => {
                let due_ms = self.due_ms(&job);
                self.held
                    .entry(job.topic_partition())
                    .or_default()
                    .push_back(Held { job, due_ms });
            }
            Event::Revoked(partitions) => {
                for partition in partitions {
                    // Not stored, so the partition's next owner receives these again.
                    self.held.remove(&partition);
                }
            }
            Event::Assigned(_) => {}
        }
    }

    fn earliest_due(&self) -> Option<i64> {
        self.held
            .values()
            .filter_map(|q| q.front().map(|h| h.due_ms))
            .min()
    }

    /// The way back for a held message: its stage's returns topic, or the dead letters when it
    /// names none (or names a topic that is not a returns topic).
    fn way_back(&self, job: &Job) -> Result<Output, Output> {
        let topics = &self.ctx.topics;
        match header_str(job.headers.as_ref(), header::RETURN_TOPIC) {
            Some(topic) if topics.is_returns(topic) => Ok(Output {
                topic: topic.to_string(),
                key: job.key.clone(),
                payload: job.payload.clone(),
                headers: Some(rewrite_headers(
                    job.headers.as_ref(),
                    &[header::DUE_MS, header::RETURN_TOPIC],
                    &[],
                )),
            }),
            other => {
                let shown: String = other.unwrap_or("none").chars().take(200).collect();
                let error = HandlerError::permanent(
                    ErrorClass::Misrouted,
                    format!("retried message with no way back (return topic: {shown})"),
                );
                Err(self.dead_letter(job, &error))
            }
        }
    }

    fn dead_letter(&self, job: &Job, error: &HandlerError) -> Output {
        // Permanent errors always route to the dead letters; the return topic is not used.
        self.ctx
            .retry
            .route_failure(&self.ctx.topics, "", job, error)
    }

    /// Sends one due message back (or to the dead letters if it cannot go back).
    async fn send(&self, job: &Job, shutdown: &CancellationToken) -> Result<Sent, PipelineError> {
        let letter = match self.way_back(job) {
            Ok(back) => match self.ctx.publisher.publish(&back, shutdown).await {
                Ok(()) => return Ok(Sent::Back),
                Err(PublishError::Interrupted) => return Ok(Sent::Interrupted),
                Err(refused) => {
                    tracing::warn!(topic = %job.topic, offset = job.offset, error = %refused,
                        "a retried message can never go back; dead-lettering it");
                    let error = HandlerError::permanent(ErrorClass::Undeliverable, refused);
                    self.dead_letter(job, &error)
                }
            },
            Err(letter) => letter,
        };
        Ok(
            if publish_dead_letter(&self.ctx.publisher, &letter, shutdown).await? {
                Sent::DeadLettered
            } else {
                Sent::Interrupted
            },
        )
    }

    /// Sends back every due message, holds partitions whose head is not due, releases those
    /// emptied. Returns false if shutdown interrupted it.
    async fn release_due(&mut self, shutdown: &CancellationToken) -> Result<bool, PipelineError> {
        let now = Utc::now().timestamp_millis();
        let partitions: Vec<TopicPartition> = self.held.keys().cloned().collect();
        for partition in partitions {
            let due = self.held[&partition]
                .iter()
                .take_while(|h| h.due_ms <= now)
                .count();
            if due > 0 {
                // Only sending counts as work in flight: a message waiting for its due time
                // is not work the service is stuck on.
                self.ctx.stats.started(due);
                let queue = &self.held[&partition];
                let sent =
                    join_all(queue.iter().take(due).map(|h| self.send(&h.job, shutdown))).await;
                let mut interrupted = false;
                for outcome in sent {
                    if matches!(outcome?, Sent::Interrupted) {
                        interrupted = true;
                    }
                }
                if interrupted {
                    self.ctx.stats.finished(due, 0);
                    return Ok(false);
                }
                let queue = self.held.get_mut(&partition).expect("partition still held");
                let last = queue
                    .drain(..due)
                    .next_back()
                    .expect("at least one released");
                self.ctx.stats.finished(due, due);
                self.feed.store([(
                    partition.topic.as_str(),
                    partition.partition,
                    last.job.offset + 1,
                )]);
            }
            if self.held[&partition].is_empty() {
                self.held.remove(&partition);
                self.feed.release(&partition);
            } else {
                self.feed.hold(&partition);
            }
        }
        Ok(true)
    }

    async fn run(
        &mut self,
        heartbeat: &mut HeartbeatTask,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        loop {
            let wait = self.earliest_due().map(|due| {
                let ms = (due - Utc::now().timestamp_millis()).max(0);
                Duration::from_millis(ms as u64)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                reason = heartbeat.failed() => return Err(PipelineError::Panicked(reason)),
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
                event = self.feed.next() => {
                    self.on_event(event);
                    // Take what else is already here, so a backlog moves in batches.
                    for _ in 0..MAX_DRAIN {
                        match self.feed.next().now_or_never() {
                            Some(event) => self.on_event(event),
                            None => break,
                        }
                    }
                }
            }
            if !self.release_due(shutdown).await? {
                return Ok(());
            }
        }
    }
}

/// Runs the retry service until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let tiers: HashMap<String, Duration> = ctx.topics.retry_tiers.iter().cloned().collect();
    let names: Vec<String> = tiers.keys().cloned().collect();
    // Every message here waits a tier delay anyway: a long fetch wait spares the broker
    // reads of idle tier partitions. Tier topics are sluice's own, so their headers are
    // trusted.
    let feed = Feed::subscribe(
        &ctx.kafka,
        &ctx.topics.group(ROLE),
        &names,
        &[],
        ctx.kafka.slow_fetch_wait_max_ms,
    )?;
    tracing::info!(instance = %ctx.worker.instance_id, tiers = ?names, "retry service started");
    let mut heartbeat = HeartbeatTask::spawn(ctx.clone(), ROLE);
    let mut service = RetryService {
        ctx: ctx.clone(),
        feed,
        tiers,
        held: HashMap::new(),
    };
    let outcome = service.run(&mut heartbeat, &shutdown).await;
    if let Err(e) = &outcome {
        tracing::error!(error = %e, "retry service stopping");
    }
    service.feed.commit();
    heartbeat.stop().await;
    ctx.publisher.flush(Duration::from_secs(5));
    tracing::info!("retry service stopped");
    Ok(outcome?)
}
