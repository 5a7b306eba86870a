//! The retry service: consumes the delay-tier retry topics and sends every message back to its
//! stage's returns topic once it is due.
//!
//! It never sleeps per message. Messages of a tier partition fall due in the order they were
//! published (see `sluice_core::retry`), so the service holds a partition's messages in memory
//! and pauses the partition while its head is not due; one timer, set to the earliest head
//! across all partitions, wakes it. Other partitions and tiers keep flowing meanwhile.
//!
//! Sending never stops the loop: a partition's due messages go out as one task, and the loop
//! keeps polling the consumer (and watching the timer, shutdown and the heartbeat) while the
//! task waits for the broker — however long a returns topic is unavailable, the member never
//! overstays `max.poll.interval.ms` and keeps its partitions. A partition with a send in flight
//! stays paused, so nothing more of it piles up in memory meanwhile.
//!
//! It reads through the core's [`Feed`], which hands rebalances out in order with messages: a
//! revoke drops exactly the messages held under the old assignment, never one received after
//! the partition came back, and a send begun under the old assignment stores nothing. A due
//! time is never later than the tier's delay after the message was received here, whatever
//! its header says, and a message only ever goes back to a returns topic. Offsets are stored
//! only after the broker acknowledged the re-published message (or its dead letter).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use futures::FutureExt;
use sluice_core::config::WorkerConfig;
use sluice_core::consumer::{Event, Feed, Subscription};
use sluice_core::headers::{header_i64, header_str, rewrite_headers};
use sluice_core::heartbeat::HeartbeatTask;
use sluice_core::retry::publish_dead_letter;
use sluice_core::shutdown::finish_within;
use sluice_core::{
    ErrorClass, HandlerError, Job, Output, PipelineError, PublishError, StageContext,
    TopicPartition,
};
use sluice_messages::header;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

pub const ROLE: &str = "retry";

/// Most messages taken from the client per wake-up.
const MAX_DRAIN: usize = 512;

/// A message waiting for its due time.
struct Held {
    job: Job,
    due_ms: i64,
}

/// A partition's send in flight: which one, and how many messages it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    serial: u64,
    messages: usize,
}

/// One partition's messages: those waiting here, in offset order, and the send in flight.
/// Everything waiting comes after everything in flight.
#[derive(Default)]
struct Lane {
    waiting: VecDeque<Held>,
    sending: Option<InFlight>,
}

/// Due messages of one partition, taken out to be sent as one task.
struct Batch {
    partition: TopicPartition,
    serial: u64,
    jobs: Vec<Job>,
}

/// Which partitions the feed must pause and which it may resume.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pauses {
    hold: Vec<TopicPartition>,
    release: Vec<TopicPartition>,
}

/// The bookkeeping of the service, apart from the consumer and the sending: what each
/// partition holds, which partitions have a send in flight, and which ownership a send was
/// begun under.
#[derive(Default)]
struct Schedule {
    lanes: HashMap<TopicPartition, Lane>,
    /// Numbers every send, so a result can be told from one of an earlier ownership.
    serials: u64,
}

impl Schedule {
    fn receive(&mut self, job: Job, due_ms: i64) {
        self.lanes
            .entry(job.topic_partition())
            .or_default()
            .waiting
            .push_back(Held { job, due_ms });
    }

    /// Forgets a revoked partition; returns its send in flight, whose result will no longer
    /// be taken.
    fn revoke(&mut self, partition: &TopicPartition) -> Option<InFlight> {
        self.lanes.remove(partition).and_then(|lane| lane.sending)
    }

    /// The earliest head among partitions free to send. A partition with a send in flight
    /// waits for that send, not for the clock.
    fn earliest_due(&self) -> Option<i64> {
        self.lanes
            .values()
            .filter(|lane| lane.sending.is_none())
            .filter_map(|lane| lane.waiting.front().map(|h| h.due_ms))
            .min()
    }

    /// Takes the messages due at `now` of every partition with no send in flight, one batch
    /// per partition, marking each partition as sending.
    fn take_due(&mut self, now: i64) -> Vec<Batch> {
        let mut batches = Vec::new();
        for (partition, lane) in &mut self.lanes {
            if lane.sending.is_some() {
                continue;
            }
            let due = lane.waiting.iter().take_while(|h| h.due_ms <= now).count();
            if due == 0 {
                continue;
            }
            self.serials += 1;
            lane.sending = Some(InFlight {
                serial: self.serials,
                messages: due,
            });
            batches.push(Batch {
                partition: partition.clone(),
                serial: self.serials,
                jobs: lane.waiting.drain(..due).map(|h| h.job).collect(),
            });
        }
        batches
    }

    /// Takes back the result of send `serial` of `partition`: its messages if it is the
    /// partition's current send, `None` if the partition was revoked since it began (even if
    /// it came straight back).
    fn finish(&mut self, partition: &TopicPartition, serial: u64) -> Option<InFlight> {
        let lane = self.lanes.get_mut(partition)?;
        match lane.sending {
            Some(sending) if sending.serial == serial => lane.sending.take(),
            _ => None,
        }
    }

    /// Partitions with anything waiting or in flight stay paused; those emptied are forgotten
    /// and resumed.
    fn pauses(&mut self) -> Pauses {
        let mut pauses = Pauses::default();
        self.lanes.retain(|partition, lane| {
            let busy = lane.sending.is_some() || !lane.waiting.is_empty();
            if busy {
                pauses.hold.push(partition.clone());
            } else {
                pauses.release.push(partition.clone());
            }
            busy
        });
        pauses
    }

    /// Ends every send in flight (shutdown or a fatal error); returns them.
    fn abandon_all(&mut self) -> Vec<InFlight> {
        self.lanes
            .values_mut()
            .filter_map(|lane| lane.sending.take())
            .collect()
    }
}

/// What happened to one due message.
enum Sent {
    Back,
    DeadLettered,
    Interrupted,
}

/// How a batch's send ended.
struct Report {
    partition: TopicPartition,
    serial: u64,
    /// The last offset of the batch: the commit point is the one after.
    last_offset: i64,
    /// Whether every message went back or to the dead letters (not interrupted).
    outcome: Result<bool, PipelineError>,
}

/// The way back for a held message: its stage's returns topic, or the dead letters when it
/// names none (or names a topic that is not a returns topic).
fn way_back(ctx: &StageContext, job: &Job) -> Result<Output, Output> {
    let topics = &ctx.topics;
    if let Some(error) = job.header_error() {
        return Err(dead_letter(ctx, job, &error));
    }
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
            Err(dead_letter(ctx, job, &error))
        }
    }
}

fn dead_letter(ctx: &StageContext, job: &Job, error: &HandlerError) -> Output {
    ctx.retry.route_failure(&ctx.topics, None, job, error)
}

/// Sends one due message back (or to the dead letters if it cannot go back).
async fn send(
    ctx: &StageContext,
    job: &Job,
    shutdown: &CancellationToken,
) -> Result<Sent, PipelineError> {
    let letter = match way_back(ctx, job) {
        Ok(back) => match ctx.publisher.publish(&back, shutdown).await {
            Ok(()) => return Ok(Sent::Back),
            Err(PublishError::Interrupted) => return Ok(Sent::Interrupted),
            Err(refused) => {
                tracing::warn!(topic = %job.topic, offset = job.offset, error = %refused,
                    "a retried message can never go back; dead-lettering it");
                let error = HandlerError::permanent(ErrorClass::Undeliverable, refused);
                dead_letter(ctx, job, &error)
            }
        },
        Err(letter) => letter,
    };
    Ok(
        if publish_dead_letter(&ctx.publisher, &letter, shutdown).await? {
            Sent::DeadLettered
        } else {
            Sent::Interrupted
        },
    )
}

/// Sends a partition's due messages, all at once; the task the loop runs for a batch.
async fn send_batch(ctx: Arc<StageContext>, batch: Batch, shutdown: CancellationToken) -> Report {
    let last_offset = batch.jobs.last().map_or(-1, |job| job.offset);
    let sent = join_all(batch.jobs.iter().map(|job| send(&ctx, job, &shutdown))).await;
    let mut complete = true;
    let mut outcome = Ok(true);
    for result in sent {
        match result {
            Ok(Sent::Back | Sent::DeadLettered) => {}
            Ok(Sent::Interrupted) => complete = false,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    Report {
        partition: batch.partition,
        serial: batch.serial,
        last_offset,
        outcome: outcome.map(|_| complete),
    }
}

struct RetryService {
    ctx: Arc<StageContext>,
    feed: Feed,
    /// Delay of each tier topic.
    tiers: HashMap<String, Duration>,
    schedule: Schedule,
    /// One task per partition with a send in flight.
    sends: JoinSet<Report>,
    /// To stop a send whose partition was revoked, by serial.
    aborts: HashMap<u64, AbortHandle>,
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
                self.schedule.receive(job, due_ms);
            }
            Event::Revoked(partitions) => {
                for partition in partitions {
                    // Not stored, so the partition's next owner receives these again. A send
                    // in flight is stopped and its result, should it still come, is dropped
                    // (`Schedule::finish`): storing an offset for an ownership that ended is
                    // never needed — not storing is always safe, the next owner sends again.
                    if let Some(sending) = self.schedule.revoke(&partition) {
                        self.abandon(sending);
                    }
                }
            }
            Event::Assigned(_) => {}
        }
    }

    /// Stops a send whose result will not be taken.
    fn abandon(&mut self, sending: InFlight) {
        if let Some(abort) = self.aborts.remove(&sending.serial) {
            abort.abort();
        }
        self.ctx.stats.finished(sending.messages, 0);
    }

    /// Starts sending the due messages of every partition with no send in flight, then pauses
    /// the partitions holding anything and resumes those emptied.
    fn start_due(&mut self, shutdown: &CancellationToken) {
        let now = Utc::now().timestamp_millis();
        for batch in self.schedule.take_due(now) {
            // Only sending counts as work in flight: a message waiting for its due time is
            // not work the service is stuck on.
            self.ctx.stats.started(batch.jobs.len());
            let serial = batch.serial;
            let abort = self
                .sends
                .spawn(send_batch(self.ctx.clone(), batch, shutdown.clone()));
            self.aborts.insert(serial, abort);
        }
        let pauses = self.schedule.pauses();
        for partition in &pauses.hold {
            self.feed.hold(partition);
        }
        for partition in &pauses.release {
            self.feed.release(partition);
        }
    }

    /// Takes a finished send back: stores the commit point after it if every message of it
    /// went out under the partition's current ownership.
    fn sent(&mut self, done: Result<Report, JoinError>) -> Result<(), PipelineError> {
        let report = match done {
            Ok(report) => report,
            Err(e) if e.is_panic() => return Err(PipelineError::Panicked(e.to_string())),
            // Stopped because its partition was revoked (or the service is stopping):
            // accounted for when it was stopped, nothing to store.
            Err(_) => return Ok(()),
        };
        self.aborts.remove(&report.serial);
        let Some(sending) = self.schedule.finish(&report.partition, report.serial) else {
            // Begun under an ownership that ended: not stored, the next owner sends again.
            return Ok(());
        };
        match report.outcome {
            Ok(true) => {
                self.ctx.stats.finished(sending.messages, sending.messages);
                self.feed.store([(
                    report.partition.topic.as_str(),
                    report.partition.partition,
                    report.last_offset + 1,
                )]);
                Ok(())
            }
            // Interrupted by shutdown: not stored, whoever owns the partition next sends
            // these again.
            Ok(false) => {
                self.ctx.stats.finished(sending.messages, 0);
                Ok(())
            }
            Err(e) => {
                self.ctx.stats.finished(sending.messages, 0);
                Err(e)
            }
        }
    }

    async fn run(
        &mut self,
        heartbeat: &mut HeartbeatTask,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.start_due(shutdown);
            let wait = self.schedule.earliest_due().map(|due| {
                let ms = (due - Utc::now().timestamp_millis()).max(0);
                Duration::from_millis(ms as u64)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                reason = heartbeat.failed() => return Err(PipelineError::Panicked(reason)),
                Some(done) = self.sends.join_next(), if !self.sends.is_empty() => self.sent(done)?,
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
                _ = tokio::time::sleep(wait.unwrap_or(Duration::MAX)), if wait.is_some() => {}
            }
        }
    }

    /// After the loop: nothing new starts; sends in flight have `grace` to finish (those that
    /// do store their offsets), then they are abandoned uncommitted; what was stored is
    /// committed.
    async fn wind_down(&mut self, grace: Duration) {
        let mut sends = std::mem::take(&mut self.sends);
        finish_within(&mut sends, grace, |done| {
            if let Err(e) = self.sent(done) {
                tracing::error!(error = %e, "while shutting down");
            }
        })
        .await;
        for sending in self.schedule.abandon_all() {
            self.abandon(sending);
        }
        self.feed.commit();
    }
}

/// Runs the retry service until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let tiers: HashMap<String, Duration> = ctx.topics.retry_tiers.iter().cloned().collect();
    let names: Vec<String> = tiers.keys().cloned().collect();
    // The fetch wait of topics on a job's way, not the slow one: a partition resumed after
    // its held message was released waits for the fetch under way before its next message
    // arrives, so the wait is how late a tier may release. Tier topics are sluice's own, so
    // their headers are trusted.
    let tier_topics = Subscription {
        topics: names.clone(),
        fetch_wait_ms: ctx.kafka.fetch_wait_max_ms,
        group: ctx.topics.group(ROLE),
    };
    let feed = Feed::subscribe(&ctx.kafka, &[tier_topics], &[])?;
    tracing::info!(instance = %ctx.worker.instance_id, tiers = ?names, "retry service started");
    let mut heartbeat = HeartbeatTask::spawn(ctx.clone(), ROLE);
    let mut service = RetryService {
        ctx: ctx.clone(),
        feed,
        tiers,
        schedule: Schedule::default(),
        sends: JoinSet::new(),
        aborts: HashMap::new(),
    };
    let outcome = service.run(&mut heartbeat, &shutdown).await;
    let grace = match &outcome {
        Ok(()) => ctx.worker.shutdown_grace,
        Err(e) => {
            tracing::error!(error = %e, "retry service stopping");
            // Nothing waits for the sends of a service that cannot go on.
            Duration::ZERO
        }
    };
    service.wind_down(grace).await;
    heartbeat.stop().await;
    ctx.publisher.flush(Duration::from_secs(5));
    tracing::info!("retry service stopped");
    Ok(outcome?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(partition: i32, offset: i64) -> Job {
        Job {
            topic: "tier".into(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            headers: None,
            timestamp_ms: None,
            attempt: 2,
            unreadable_headers: None,
        }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "tier".into(),
            partition,
        }
    }

    fn offsets(batch: &Batch) -> Vec<i64> {
        batch.jobs.iter().map(|j| j.offset).collect()
    }

    /// While a partition's send is in flight it stays paused, offers nothing more to send and
    /// does not drive the timer; what arrives meanwhile goes out after the send finished.
    #[test]
    fn a_partition_sending_stays_paused_and_out_of_the_timer() {
        let mut schedule = Schedule::default();
        schedule.receive(job(0, 10), 100);
        schedule.receive(job(0, 11), 100);
        schedule.receive(job(0, 12), 500);
        schedule.receive(job(1, 3), 300);
        let batches = schedule.take_due(200);
        assert_eq!(batches.len(), 1);
        let first = &batches[0];
        assert_eq!(
            (first.partition.clone(), offsets(first)),
            (tp(0), vec![10, 11])
        );
        // Partition 0 waits for its send; the timer follows partition 1 only.
        assert_eq!(schedule.earliest_due(), Some(300));
        schedule.receive(job(0, 13), 100);
        assert!(schedule
            .take_due(1_000)
            .iter()
            .all(|b| b.partition != tp(0)));
        assert_eq!(schedule.earliest_due(), None, "partition 1 is sending too");
        let mut pauses = schedule.pauses();
        pauses.hold.sort();
        assert_eq!(pauses.hold, vec![tp(0), tp(1)]);
        assert!(pauses.release.is_empty());

        let done = schedule.finish(&tp(0), first.serial);
        assert_eq!(done.map(|d| d.messages), Some(2));
        assert_eq!(schedule.finish(&tp(0), first.serial), None, "taken once");
        let next = schedule.take_due(1_000);
        assert_eq!(next.len(), 1);
        assert_eq!(offsets(&next[0]), vec![12, 13]);
    }

    /// A partition emptied by a finished send is resumed and forgotten.
    #[test]
    fn an_emptied_partition_is_released() {
        let mut schedule = Schedule::default();
        schedule.receive(job(0, 1), 0);
        let batch = schedule.take_due(0).pop().expect("due");
        assert_eq!(schedule.pauses().hold, vec![tp(0)]);
        schedule.finish(&tp(0), batch.serial).expect("current");
        let pauses = schedule.pauses();
        assert_eq!((pauses.hold, pauses.release), (vec![], vec![tp(0)]));
        assert!(schedule.lanes.is_empty());
    }

    /// The result of a send begun before its partition was revoked is never taken, even when
    /// the partition came straight back and a new send of the same messages began.
    #[test]
    fn a_send_of_a_revoked_ownership_stores_nothing() {
        let mut schedule = Schedule::default();
        schedule.receive(job(0, 5), 0);
        schedule.receive(job(0, 6), 9_999);
        let old = schedule.take_due(0).pop().expect("due");
        let revoked = schedule.revoke(&tp(0));
        assert_eq!(
            revoked,
            Some(InFlight {
                serial: old.serial,
                messages: 1
            })
        );
        assert_eq!(schedule.earliest_due(), None, "what was held is dropped");
        // Assigned again: the same offsets arrive anew.
        schedule.receive(job(0, 5), 0);
        let new = schedule.take_due(0).pop().expect("due");
        assert_ne!(new.serial, old.serial);
        assert_eq!(schedule.finish(&tp(0), old.serial), None);
        assert!(schedule.finish(&tp(0), new.serial).is_some());
    }

    #[test]
    fn abandoning_ends_every_send_in_flight() {
        let mut schedule = Schedule::default();
        schedule.receive(job(0, 1), 0);
        schedule.receive(job(1, 1), 0);
        schedule.receive(job(1, 2), 0);
        let batches = schedule.take_due(0);
        let mut abandoned: Vec<usize> = schedule.abandon_all().iter().map(|s| s.messages).collect();
        abandoned.sort();
        assert_eq!(abandoned, vec![1, 2]);
        for batch in batches {
            assert_eq!(schedule.finish(&batch.partition, batch.serial), None);
        }
    }
}
