//! The retry service: consumes the delay-tier retry topics and sends every message back to the
//! topic it failed on once it is due.
//!
//! It never sleeps per message. Messages of a tier partition fall due in the order they were
//! published (see `sluice_core::retry`), so the service holds the partition's head message in
//! memory and pauses the partition until that head is due; one timer, set to the earliest head
//! across all partitions, wakes it. Other partitions and tiers keep flowing meanwhile, so a
//! message due soon never waits behind one due later. Offsets are stored only after the broker
//! acknowledged the re-published message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::config::WorkerConfig;
use sluice_core::envelope::{header, header_i64, header_str, rewrite_headers};
use sluice_core::heartbeat::HeartbeatTask;
use sluice_core::pipeline::Job;
use sluice_core::{kafka, HandlerError, Output, StageContext};
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "retry";

const RETRY_FETCH_WAIT_MS: &str = "250";

/// Most messages taken from the client per wake-up.
const MAX_DRAIN: usize = 512;

type Partition = (String, i32);

/// Partitions assigned or revoked by rebalances, applied by the main loop between receives.
#[derive(Default)]
struct Rebalances {
    revoked: Vec<Partition>,
    assigned: Vec<Partition>,
}

struct RetryContext {
    rebalances: Arc<Mutex<Rebalances>>,
}

impl ClientContext for RetryContext {}

impl ConsumerContext for RetryContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut changes = self.rebalances.lock().expect("rebalance lock");
        match rebalance {
            Rebalance::Revoke(tpl) => changes.revoked.extend(partitions(tpl)),
            Rebalance::Assign(tpl) => changes.assigned.extend(partitions(tpl)),
            Rebalance::Error(_) => {}
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> impl Iterator<Item = Partition> + '_ {
    tpl.elements()
        .into_iter()
        .map(|e| (e.topic().to_string(), e.partition()))
}

fn due_ms(job: &Job) -> i64 {
    header_i64(job.headers.as_ref(), header::DUE_MS).unwrap_or(0)
}

fn single(partition: &Partition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&partition.0, partition.1);
    tpl
}

struct RetryService {
    ctx: Arc<StageContext>,
    consumer: StreamConsumer<RetryContext>,
    rebalances: Arc<Mutex<Rebalances>>,
    /// Messages received but not yet due, per partition, in offset order.
    held: HashMap<Partition, VecDeque<Job>>,
    paused: HashSet<Partition>,
}

impl RetryService {
    fn apply_rebalances(&mut self) {
        let changes = std::mem::take(&mut *self.rebalances.lock().expect("rebalance lock"));
        for partition in changes.revoked {
            // Not stored, so the partition's next owner receives these again.
            self.held.remove(&partition);
            self.paused.remove(&partition);
        }
        for partition in changes.assigned {
            let _ = self.consumer.resume(&single(&partition));
        }
    }

    fn earliest_due(&self) -> Option<i64> {
        self.held
            .values()
            .filter_map(|q| q.front().map(due_ms))
            .min()
    }

    fn hold(&mut self, job: Job) {
        let partition = (job.topic.clone(), job.partition);
        self.ctx.stats.started(1);
        self.held.entry(partition).or_default().push_back(job);
    }

    /// The way back for a held message: its original topic, or the dead letters when it lost
    /// track of it.
    fn way_back(&self, job: &Job) -> Output {
        match header_str(job.headers.as_ref(), header::ORIGINAL_TOPIC) {
            Some(topic) => Output {
                topic: topic.to_string(),
                key: job.key.clone(),
                payload: job.payload.clone(),
                headers: Some(rewrite_headers(
                    job.headers.as_ref(),
                    &[header::DUE_MS],
                    &[],
                )),
            },
            None => self.ctx.retry.route_failure(
                &self.ctx.topics,
                job,
                &HandlerError::permanent("retry", "retry message without an original topic"),
            ),
        }
    }

    /// Sends back every due message, pauses partitions whose head is not due, resumes those
    /// emptied. Returns false if shutdown interrupted it.
    async fn release_due(&mut self, shutdown: &CancellationToken) -> bool {
        let now = Utc::now().timestamp_millis();
        let partitions: Vec<Partition> = self.held.keys().cloned().collect();
        for partition in partitions {
            let Some(queue) = self.held.get(&partition) else {
                continue;
            };
            let due: Vec<Output> = queue
                .iter()
                .take_while(|job| due_ms(job) <= now)
                .map(|job| self.way_back(job))
                .collect();
            if !due.is_empty() {
                let sent =
                    join_all(due.iter().map(|o| self.ctx.publisher.publish(o, shutdown))).await;
                if sent.iter().any(Result::is_err) {
                    return false;
                }
                let queue = self.held.get_mut(&partition).expect("partition still held");
                let last = queue
                    .drain(..due.len())
                    .next_back()
                    .expect("at least one released");
                self.ctx.stats.finished(due.len(), due.len());
                let mut next = TopicPartitionList::new();
                let _ = next.add_partition_offset(
                    &partition.0,
                    partition.1,
                    Offset::Offset(last.offset + 1),
                );
                if let Err(e) = self.consumer.store_offsets(&next) {
                    tracing::debug!(error = %e, "could not store offset (partition revoked?)");
                }
            }
            let empty = self.held.get(&partition).is_none_or(VecDeque::is_empty);
            if empty {
                self.held.remove(&partition);
                if self.paused.remove(&partition) {
                    let _ = self.consumer.resume(&single(&partition));
                }
            } else if self.paused.insert(partition.clone()) {
                if let Err(e) = self.consumer.pause(&single(&partition)) {
                    tracing::warn!(error = %e, ?partition, "could not pause");
                    self.paused.remove(&partition);
                }
            }
        }
        true
    }

    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            self.apply_rebalances();
            let wait = self.earliest_due().map(|due| {
                let ms = (due - Utc::now().timestamp_millis()).max(0);
                Duration::from_millis(ms as u64)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        let job = Job::from_message(&message);
                        self.hold(job);
                        // Take what else is already here, so a backlog moves in batches.
                        for _ in 0..MAX_DRAIN {
                            match self.consumer.recv().now_or_never() {
                                Some(Ok(message)) => {
                                    let job = Job::from_message(&message);
                                    self.hold(job);
                                }
                                _ => break,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consume failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
            self.apply_rebalances();
            if !self.release_due(&shutdown).await {
                break;
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit had nothing to do or failed");
        }
    }
}

/// Runs the retry service until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE, 1, "0ms", 1)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let rebalances = Arc::new(Mutex::new(Rebalances::default()));
    let mut config = kafka::consumer_config(&ctx.kafka, &ctx.topics.group(ROLE));
    // Every message here waits a tier delay anyway; a longer fetch wait spares the broker
    // polls of many idle tier partitions.
    config.set("fetch.wait.max.ms", RETRY_FETCH_WAIT_MS);
    let consumer: StreamConsumer<RetryContext> = config.create_with_context(RetryContext {
        rebalances: rebalances.clone(),
    })?;
    let tiers: Vec<&str> = ctx
        .topics
        .retry_tiers
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    consumer.subscribe(&tiers)?;
    tracing::info!(instance = %ctx.worker.instance_id, ?tiers, "retry service started");

    let heartbeat = HeartbeatTask::spawn(ctx.clone(), ROLE);
    let service = RetryService {
        ctx: ctx.clone(),
        consumer,
        rebalances,
        held: HashMap::new(),
        paused: HashSet::new(),
    };
    service.run(shutdown).await;
    heartbeat.stop().await;
    ctx.publisher.flush(Duration::from_secs(5));
    tracing::info!("retry service stopped");
    Ok(())
}
