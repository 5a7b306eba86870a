//! The one way sluice consumes: a [`Feed`] of events — messages, and the partitions a rebalance
//! assigned or revoked — in the order they happened, over a group consumer that stores offsets
//! only when told.
//!
//! librdkafka runs rebalance callbacks inside a poll, between messages. The callbacks only queue
//! an event; [`Feed::next`] hands queued events out before the message that poll returned, so a
//! stage never mistakes a message of a new assignment for one of the old. The feed also pauses
//! partitions: one at a time for a stage's own reasons (the retry service holding a message
//! that is not due), or all of them while the stage is saturated. Either way the stage keeps
//! polling, so it never overstays `max.poll.interval.ms` and is never thrown out of its group
//! for being busy.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

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
            self.rebalances
                .lock()
                .expect("rebalance queue")
                .push_back(Event::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                tracing::info!(?assigned, "partitions assigned");
                self.rebalances
                    .lock()
                    .expect("rebalance queue")
                    .push_back(Event::Assigned(assigned));
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

pub struct Feed {
    consumer: StreamConsumer<FeedContext>,
    rebalances: Rebalances,
    /// Public input topics: sluice's own headers are dropped from their messages.
    untrusted: HashSet<String>,
    assigned: BTreeSet<TopicPartition>,
    /// Paused by the stage, one partition at a time.
    held: HashSet<TopicPartition>,
    /// Every partition paused because the stage has all it can take.
    saturated: bool,
}

impl Feed {
    /// Joins consumer group `group` on `topics`, holding each fetch at most `fetch_wait_ms` on
    /// the broker.
    pub fn subscribe(
        kafka: &KafkaConfig,
        group: &str,
        topics: &[String],
        untrusted: &[String],
        fetch_wait_ms: u32,
    ) -> Result<Self, PipelineError> {
        let rebalances = Rebalances::default();
        let consumer: StreamConsumer<FeedContext> =
            kafka::consumer_config(kafka, group, fetch_wait_ms).create_with_context(
                FeedContext {
                    rebalances: rebalances.clone(),
                },
            )?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(Self {
            consumer,
            rebalances,
            untrusted: untrusted.iter().cloned().collect(),
            assigned: BTreeSet::new(),
            held: HashSet::new(),
            saturated: false,
        })
    }

    /// The next event. Cancel-safe: nothing is taken from the client unless it is returned.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.pop_rebalance() {
                return event;
            }
            match self.consumer.recv().await {
                Ok(message) => {
                    let trusted = !self.untrusted.contains(message.topic());
                    let job = Job::from_message(&message, trusted);
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
        let tpl = single(partition);
        let done = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
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

    /// Stores commit points (the next offset to consume) for the next automatic commit.
    pub fn store<'a>(&self, points: impl IntoIterator<Item = (&'a str, i32, i64)>) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in points {
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(next));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "could not store offsets (partition revoked?)");
            }
        }
    }

    /// Commits what was stored, now.
    pub fn commit(&self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit had nothing to do or failed");
        }
    }
}
