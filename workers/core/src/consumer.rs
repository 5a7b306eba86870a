//! The one way sluice consumes: a [`Feed`] of events — messages, and the partitions a rebalance
//! assigned or revoked — in the order they happened, over group consumers that store offsets
//! only when told.
//!
//! A feed reads its topics through one consumer per fetch wait ([`Subscription`]): topics on
//! a job's way to its answer with `KAFKA_FETCH_WAIT_MAX_MS`, topics nobody waits on (returns
//! from the retry tiers, dead letters, heartbeats) with `KAFKA_SLOW_FETCH_WAIT_MAX_MS`, each in
//! a consumer group of its own. Kafka answers a fetch as soon as data arrives, so the wait
//! costs no latency there, only how often an idle consumer asks again; the split was made for
//! a broker that polled its storage until the wait was over, and is kept so that existing
//! groups keep their committed offsets.
//!
//! librdkafka runs rebalance callbacks inside a poll, between messages. The callbacks only queue
//! an event; [`Feed::next`] hands queued events out before the message that poll returned, so a
//! stage never mistakes a message of a new assignment for one of the old. The feed also pauses
//! partitions: one at a time for a stage's own reasons (the retry service holding a message
//! that is not due), or all of them while the stage is saturated. Either way the stage keeps
//! polling, so it never overstays `max.poll.interval.ms` and is never thrown out of its group
//! for being busy.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::config::KafkaConfig;
use crate::error::PipelineError;
use crate::job::{Job, TopicPartition};
use crate::kafka;

/// What the feed hands out, in the order it happened.
#[derive(Debug)]
pub enum Event {
    Message(Job),
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

type Rebalances = Arc<Mutex<VecDeque<Event>>>;

pub struct FeedContext {
    rebalances: Rebalances,
    /// Wakes [`Feed::next`]: librdkafka serves rebalance callbacks inside a poll that then
    /// goes on waiting for a message, so without it a revoke would wait for the next message.
    wake: Arc<Notify>,
}

impl FeedContext {
    fn queue(&self, event: Event) {
        self.rebalances
            .lock()
            .expect("rebalance queue")
            .push_back(event);
        self.wake.notify_one();
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .into_iter()
        .map(|e| TopicPartition {
            topic: e.topic().to_string(),
            partition: e.partition(),
        })
        .collect()
}

impl ClientContext for FeedContext {}

impl ConsumerContext for FeedContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            tracing::info!(?revoked, "partitions revoked");
            self.queue(Event::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                tracing::info!(?assigned, "partitions assigned");
                self.queue(Event::Assigned(assigned));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn single(partition: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&partition.topic, partition.partition);
    tpl
}

/// Topics read with one fetch wait, by one consumer of a group of their own.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// How long the broker may hold a fetch with no data.
    pub fetch_wait_ms: u32,
    /// The consumer group, distinct per subscription so that each group's members share
    /// the same topics.
    pub group: String,
}

pub struct Feed {
    /// One per non-empty subscription.
    consumers: Vec<StreamConsumer<FeedContext>>,
    /// Which consumer reads each topic.
    reader: HashMap<String, usize>,
    rebalances: Rebalances,
    wake: Arc<Notify>,
    /// Which consumer is polled first next time, in turn, so that none starves the others.
    turn: usize,
    /// Public input topics: sluice's own headers are dropped from their messages.
    untrusted: HashSet<String>,
    assigned: BTreeSet<TopicPartition>,
    /// Paused by the stage, one partition at a time.
    held: HashSet<TopicPartition>,
    /// Every partition paused because the stage has all it can take.
    saturated: bool,
}

impl Feed {
    /// Joins each subscription's group on its topics. sluice's own headers are dropped from
    /// messages of the `untrusted` topics.
    pub fn subscribe(
        kafka: &KafkaConfig,
        subscriptions: &[Subscription],
        untrusted: &[String],
    ) -> Result<Self, PipelineError> {
        let rebalances = Rebalances::default();
        let wake = Arc::new(Notify::new());
        let mut consumers = Vec::new();
        let mut reader = HashMap::new();
        for subscription in subscriptions.iter().filter(|s| !s.topics.is_empty()) {
            let consumer: StreamConsumer<FeedContext> =
                kafka::consumer_config(kafka, &subscription.group, subscription.fetch_wait_ms)
                    .create_with_context(FeedContext {
                        rebalances: rebalances.clone(),
                        wake: wake.clone(),
                    })?;
            let names: Vec<&str> = subscription.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&names)?;
            for topic in &subscription.topics {
                reader.insert(topic.clone(), consumers.len());
            }
            consumers.push(consumer);
        }
        Ok(Self {
            consumers,
            reader,
            rebalances,
            wake,
            turn: 0,
            untrusted: untrusted.iter().cloned().collect(),
            assigned: BTreeSet::new(),
            held: HashSet::new(),
            saturated: false,
        })
    }

    /// The consumer that reads `topic`.
    fn consumer_of(&self, topic: &str) -> Option<&StreamConsumer<FeedContext>> {
        self.reader.get(topic).map(|&i| &self.consumers[i])
    }

    /// The next event. Cancel-safe: nothing is taken from a client unless it is returned.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.pop_rebalance() {
                return event;
            }
            if self.consumers.is_empty() {
                return std::future::pending().await;
            }
            let count = self.consumers.len();
            let first = self.turn % count;
            self.turn = self.turn.wrapping_add(1);
            let received = {
                let receives =
                    (0..count).map(|i| Box::pin(self.consumers[(first + i) % count].recv()));
                tokio::select! {
                    biased;
                    _ = self.wake.notified() => None,
                    (received, _, _) = futures::future::select_all(receives) => Some(
                        received.map(|message| {
                            let trusted = !self.untrusted.contains(message.topic());
                            Job::from_message(&message, trusted)
                        }),
                    ),
                }
            };
            // A rebalance came: hand it out first.
            let Some(received) = received else {
                continue;
            };
            match received {
                Ok(job) => {
                    // A rebalance served during this poll came before the message.
                    if let Some(event) = self.pop_rebalance() {
                        self.rebalances
                            .lock()
                            .expect("rebalance queue")
                            .push_back(Event::Message(job));
                        return event;
                    }
                    return Event::Message(job);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Takes the oldest queued event, keeping the feed's view of the assignment current and
    /// applying the pauses in force to newly assigned partitions.
    fn pop_rebalance(&mut self) -> Option<Event> {
        let event = self
            .rebalances
            .lock()
            .expect("rebalance queue")
            .pop_front()?;
        match &event {
            Event::Revoked(revoked) => {
                for partition in revoked {
                    self.assigned.remove(partition);
                    self.held.remove(partition);
                }
            }
            Event::Assigned(assigned) => {
                for partition in assigned {
                    self.assigned.insert(partition.clone());
                    // Set either way: librdkafka may keep a pause from an earlier ownership.
                    self.set_paused(partition, self.saturated);
                }
            }
            Event::Message(_) => {}
        }
        Some(event)
    }

    fn set_paused(&self, partition: &TopicPartition, paused: bool) {
        let Some(consumer) = self.consumer_of(&partition.topic) else {
            return;
        };
        let tpl = single(partition);
        let done = if paused {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, ?partition, paused, "could not pause or resume");
        }
    }

    /// Stops fetching `partition` until [`Feed::release`]; what was fetched already is
    /// dropped by the client and fetched again on release, from after the last message
    /// handed out.
    pub fn hold(&mut self, partition: &TopicPartition) {
        if self.assigned.contains(partition)
            && self.held.insert(partition.clone())
            && !self.saturated
        {
            self.set_paused(partition, true);
        }
    }

    pub fn release(&mut self, partition: &TopicPartition) {
        if self.held.remove(partition) && !self.saturated && self.assigned.contains(partition) {
            self.set_paused(partition, false);
        }
    }

    /// Pauses every assigned partition while `saturated`, resumes them (but the held ones)
    /// after.
    pub fn set_saturated(&mut self, saturated: bool) {
        if self.saturated == saturated {
            return;
        }
        self.saturated = saturated;
        tracing::debug!(saturated, "backpressure");
        for partition in &self.assigned {
            if !self.held.contains(partition) {
                self.set_paused(partition, saturated);
            }
        }
    }

    /// Reads those of the partitions still assigned from the offsets given (what the client
    /// had fetched from the old position is discarded by it; an offset the log no longer
    /// holds reads from its start). Returns those it could not move yet: librdkafka refuses a
    /// seek before the partition's fetch started.
    pub fn seek(&mut self, positions: &[(TopicPartition, i64)]) -> Vec<TopicPartition> {
        let mut failed = Vec::new();
        for (partition, offset) in positions.iter().filter(|(p, _)| self.assigned.contains(p)) {
            let Some(consumer) = self.consumer_of(&partition.topic) else {
                continue;
            };
            if let Err(e) = consumer.seek(
                &partition.topic,
                partition.partition,
                Offset::Offset(*offset),
                Duration::from_secs(5),
            ) {
                tracing::debug!(error = %e, ?partition, offset, "could not move a partition yet");
                failed.push(partition.clone());
            }
        }
        failed
    }

    /// Stores commit points (the next offset to consume) for the next automatic commit.
    pub fn store<'a>(&self, points: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut lists: Vec<TopicPartitionList> = self
            .consumers
            .iter()
            .map(|_| TopicPartitionList::new())
            .collect();
        for (topic, partition, next) in points {
            if let Some(&i) = self.reader.get(topic) {
                let _ = lists[i].add_partition_offset(topic, partition, Offset::Offset(next));
            }
        }
        for (consumer, tpl) in self.consumers.iter().zip(&lists) {
            if tpl.count() > 0 {
                if let Err(e) = consumer.store_offsets(tpl) {
                    tracing::debug!(error = %e, "could not store offsets (partition revoked?)");
                }
            }
        }
    }

    /// Commits what was stored, now.
    pub fn commit(&self) {
        for consumer in &self.consumers {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "final commit had nothing to do or failed");
            }
        }
    }
}
