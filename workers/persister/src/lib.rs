//! The persister: consumes results, sum_squares parts, dead letters, heartbeats and KV updates
//! and writes them to PostgreSQL in batches (flushed at `PERSISTER_BATCH_MAX` rows or after
//! `PERSISTER_BATCH_WAIT`). It is also the KV store's applier ([`kv`]): the store's table is
//! one more view written exactly once from a topic.
//!
//! Exactly-once into Postgres: the persister's position in each input partition is stored in
//! the same transaction as the rows (see [`store`]), so a redelivered message is skipped; the
//! writes are idempotent too, and Kafka offsets are committed only after the transaction. A
//! database outage is waited out with exponential backoff; the batch is retried whole, nothing
//! is skipped. A message that cannot be stored (invalid, or refused by the database as data)
//! becomes a dead letter row in the same transaction. Only data errors (SQLSTATE classes 22
//! and 23, and 54, a limit such as an index row's size) count as refused data; every other
//! database error is waited out.
//!
//! When partitions are assigned, the persister checks that each stored position still belongs
//! to the partition's log: beyond the log's end, or with another message than the one applied
//! just below it, the log was replaced (a broker that lost its data, a topic deleted and
//! created again, another cluster). The position is then set back, with a warning, so nothing
//! the log now holds is skipped.

pub mod kv;
pub mod logs;
pub mod records;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::WorkerConfig;
use sluice_core::pause::Pause;
use sluice_core::{
    Cx, ErrorClass, Execution, Handler, HandlerError, Job, Outcome, ReadFrom, Stage, StageContext,
    TopicPartition,
};
use sluice_db::pool::connect_and_migrate;
use sluice_db::DatabaseConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use kv::Changelog;
use logs::LogProbe;
use records::Record;
use store::{Consumed, StoreError, StoredPosition};

pub const ROLE: &str = "persister";
/// The persister's stage that applies KV updates.
pub use sluice_messages::kv::APPLIER_ROLE as KV_APPLIER_ROLE;

pub struct PersisterHandler {
    pool: PgPool,
    ctx: Arc<StageContext>,
    /// The consumer group, which names the positions stored with the rows.
    group: String,
    /// Asks the broker what partitions' logs hold now.
    logs: LogProbe,
    /// Where applied KV changes go.
    changelog: Changelog,
    shutdown: CancellationToken,
}

/// Why a batch was not written.
enum WriteError {
    /// The database or the broker refused the data itself; retrying the same rows cannot help.
    Refused(StoreError),
    /// Nothing can be written until an operator acts ([`store::stops_the_stage`]).
    Fatal(StoreError),
    Interrupted,
}

impl PersisterHandler {
    /// The handler of the stage `role` ([`ROLE`] or the KV applier's), whose consumer group
    /// names the positions it stores.
    pub fn new(
        role: &str,
        pool: PgPool,
        ctx: Arc<StageContext>,
        changelog: Changelog,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            group: ctx.topics.group(role),
            logs: LogProbe::new(&ctx.kafka),
            changelog,
            ctx,
            shutdown,
        }
    }

    /// The row `job` becomes; its dead letter when it is not a valid message (headers that
    /// could not be read included), written in the same transaction as the position that marks
    /// it done (published instead, it could be lost between the commit and the broker's
    /// acknowledgement).
    fn record_for(&self, job: &Job) -> Record {
        if let Some(error) = job.header_error() {
            return self.rejected(job, &error);
        }
        records::parse(&self.ctx.topics, job).unwrap_or_else(|error| self.rejected(job, &error))
    }

    /// `job` as the dead letter the pipeline would have published for `error`.
    fn rejected(&self, job: &Job, error: &HandlerError) -> Record {
        let letter = self
            .ctx
            .retry
            .route_failure(&self.ctx.topics, None, job, error);
        Record::DeadLetter(records::parse_dead_letter(&Job {
            headers: letter.headers,
            ..job.clone()
        }))
    }

    /// Writes `items`, waiting out every failure but refused data and a broker that will take
    /// no KV change, with exponential backoff until they commit or shutdown comes.
    async fn write_durably(&self, items: &[Consumed<'_>]) -> Result<(), WriteError> {
        let mut pause = Pause::starting_at(Duration::from_millis(100));
        loop {
            match store::write(&self.pool, &self.group, items, &self.changelog).await {
                Ok(skipped) => {
                    if skipped > 0 {
                        tracing::info!(skipped, "skipped redelivered messages already applied");
                    }
                    self.count_own_dead_letters(items);
                    return Ok(());
                }
                Err(e) if store::stops_the_stage(&e) => return Err(WriteError::Fatal(e)),
                Err(e) if !store::is_refused_data(&e) => {
                    tracing::warn!(error = %e, pause = ?pause.next(), "write failed, retrying");
                    if !pause.wait(&self.shutdown).await {
                        return Err(WriteError::Interrupted);
                    }
                }
                Err(e) => return Err(WriteError::Refused(e)),
            }
        }
    }

    /// Counts the messages written as dead letters instead of their rows, as the loop counts
    /// those it publishes (the `DEAD` of `sluice workers`); the dead letters this stage reads
    /// from their topic are other stages'.
    fn count_own_dead_letters(&self, items: &[Consumed<'_>]) {
        let dead_letters = self.ctx.topics.dead_letters();
        for item in items {
            if matches!(item.record, Record::DeadLetter(_)) && item.job.topic != dead_letters {
                self.ctx.stats.dead_lettered_one();
            }
        }
    }

    /// After the database refused a batch: each message alone, in order, so only the culprits
    /// fail. A message the database refuses becomes a dead letter; a dead letter it refuses
    /// stops the stage.
    /// Stops at the first message not written (shutdown): a later one committing would move
    /// the stored position past it, and it would never be applied.
    async fn write_one_by_one(&self, items: Vec<Consumed<'_>>) -> Vec<Outcome> {
        let count = items.len();
        let mut outcomes = Vec::with_capacity(count);
        for mut item in items {
            let outcome = loop {
                match self.write_durably(std::slice::from_ref(&item)).await {
                    Ok(()) => break Ok(vec![]),
                    Err(WriteError::Interrupted) => break Err(HandlerError::Interrupted),
                    Err(WriteError::Fatal(e)) => break Err(unwritable(e)),
                    Err(WriteError::Refused(e)) => match self.instead_of_refused(&item, e) {
                        Ok(letter) => item.record = letter,
                        Err(stop) => break Err(stop),
                    },
                }
            };
            let stopped = outcome.is_err();
            outcomes.push(outcome);
            if stopped {
                break;
            }
        }
        // The rest stay unwritten and uncommitted: delivered again after the restart.
        outcomes.resize_with(count, || Err(HandlerError::Interrupted));
        outcomes
    }

    /// What to write when the database refused `item`'s record: its dead letter. A dead letter
    /// the database refuses stops the stage, saying why: dropping it would lose the message for
    /// good, and it is delivered again once the cause is fixed.
    fn instead_of_refused(
        &self,
        item: &Consumed<'_>,
        error: StoreError,
    ) -> Result<Record, HandlerError> {
        match item.record {
            Record::DeadLetter(_) => Err(HandlerError::fatal(
                ErrorClass::DatabaseRefused,
                format!(
                    "the database refused the dead letter at {}/{} offset {}: {error}",
                    item.job.topic, item.job.partition, item.job.offset
                ),
            )),
            _ => {
                let class = match error {
                    StoreError::Changelog(_) => ErrorClass::Undeliverable,
                    _ => ErrorClass::DatabaseRefused,
                };
                Ok(self.rejected(item.job, &HandlerError::permanent(class, error)))
            }
        }
    }

    /// Sets `stale` back to the start of its partition, saying why.
    async fn restart(&self, stale: &StoredPosition, why: &str) -> Result<(), HandlerError> {
        tracing::warn!(topic = %stale.partition.topic, partition = stale.partition.partition,
            stored_position = stale.next_offset, why,
            "the stored position belongs to a log that is gone (a broker that lost its data, a \
             topic created again, another cluster); going on with what the log holds, skipping \
             none of it");
        let restarted = store::restart_position(&self.pool, &self.group, stale)
            .await
            .map_err(database_unavailable)?;
        if restarted {
            Ok(())
        } else {
            // A batch of the partition's previous owner committed meanwhile: look again.
            Err(HandlerError::transient(
                ErrorClass::Unavailable,
                "a stored position moved while it was being checked",
            ))
        }
    }
}

fn database_unavailable(error: sqlx::Error) -> HandlerError {
    HandlerError::transient(ErrorClass::Unavailable, error)
}

fn broker_unavailable(error: rdkafka::error::KafkaError) -> HandlerError {
    HandlerError::transient(ErrorClass::Unavailable, error)
}

impl Handler for PersisterHandler {
    async fn handle(&self, job: &Job, cx: &Cx) -> Outcome {
        let mut outcomes = self.handle_batch(std::slice::from_ref(job), cx).await;
        outcomes.pop().unwrap_or(Err(HandlerError::Interrupted))
    }

    /// Every assigned partition is read from the position stored with the rows, not from the
    /// group's committed offset: after a database restore or failover the two differ, and the
    /// messages between them would never be applied. A partition with no stored position is
    /// read from its start (nothing of it was applied). A stored position taken in a log that
    /// is gone would skip the new log's messages up to it: one beyond the log's end, or whose
    /// last applied message is not the one there now; such a partition is also read from its
    /// start, its position set back.
    async fn on_assigned(&self, partitions: &[TopicPartition]) -> Result<ReadFrom, HandlerError> {
        let stored = store::positions(&self.pool, &self.group, partitions)
            .await
            .map_err(database_unavailable)?;
        let mut from: HashMap<TopicPartition, i64> =
            partitions.iter().map(|p| (p.clone(), 0)).collect();
        // Set back to 0 by an earlier check (maybe another replica's) whose seek may not have
        // happened: reading from the start skips nothing, and applies nothing twice.
        let applied: Vec<StoredPosition> =
            stored.into_iter().filter(|p| p.next_offset > 0).collect();
        let ends = self
            .logs
            .ends(applied.iter().map(|p| p.partition.clone()).collect())
            .await
            .map_err(broker_unavailable)?;
        let mut to_compare = Vec::new();
        for position in applied {
            let log_end = ends[&position.partition];
            if position.next_offset > log_end {
                self.restart(&position, &format!("beyond the log's end, {log_end}"))
                    .await?;
            } else {
                from.insert(position.partition.clone(), position.next_offset);
                if position.last_timestamp_ms.is_some() {
                    to_compare.push(position);
                }
            }
        }
        if to_compare.is_empty() {
            return Ok(from.into_iter().collect());
        }
        let last_applied = to_compare
            .iter()
            .map(|p| (p.partition.clone(), p.next_offset - 1))
            .collect();
        let found = self
            .logs
            .timestamps(last_applied)
            .await
            .map_err(broker_unavailable)?;
        for position in &to_compare {
            if let Some(Some(timestamp)) = found.get(&position.partition) {
                if Some(*timestamp) != position.last_timestamp_ms {
                    let why = format!(
                        "the message at offset {} has timestamp {timestamp}, not {} as applied",
                        position.next_offset - 1,
                        position.last_timestamp_ms.unwrap_or_default()
                    );
                    self.restart(position, &why).await?;
                    from.insert(position.partition.clone(), 0);
                }
            }
        }
        Ok(from.into_iter().collect())
    }

    async fn handle_batch(&self, jobs: &[Job], _cx: &Cx) -> Vec<Outcome> {
        let items: Vec<Consumed> = jobs
            .iter()
            .map(|job| Consumed {
                job,
                record: self.record_for(job),
            })
            .collect();
        match self.write_durably(&items).await {
            Ok(()) => jobs.iter().map(|_| Ok(vec![])).collect(),
            Err(WriteError::Interrupted) => jobs
                .iter()
                .map(|_| Err(HandlerError::Interrupted))
                .collect(),
            Err(WriteError::Fatal(e)) => {
                let stop = unwritable(e);
                jobs.iter().map(|_| Err(stop.clone())).collect()
            }
            Err(WriteError::Refused(e)) => {
                tracing::warn!(error = %e, rows = jobs.len(), "batch refused; writing rows one by one");
                self.write_one_by_one(items).await
            }
        }
    }
}

/// Why the stage stops when the broker takes no KV change ([`store::stops_the_stage`]).
fn unwritable(error: StoreError) -> HandlerError {
    HandlerError::fatal(
        ErrorClass::Undeliverable,
        format!("the KV state topic takes no change ({error}): nothing is applied until it does"),
    )
}

/// Runs the persister until `shutdown` fires: two stages in one process, each with its own
/// consumer group and batches, so that neither waits on the other: one for results, dead
/// letters and heartbeats, one applying KV updates (whose batches also publish to the KV state
/// topic, and which `sluice kv rebuild` holds up while it runs).
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE)?;
    let results_execution = one_batch_in_flight(ROLE, 5_000)?;
    let kv_execution = one_batch_in_flight(KV_APPLIER_ROLE, 5_000)?;
    let db = DatabaseConfig::from_env()?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let pool = connect_and_migrate(&db, &shutdown).await?;
    let topics = &ctx.topics;
    let changelog = Changelog::connect(
        &ctx.kafka,
        topics.kv_state(),
        &ctx.worker.instance_id,
        &shutdown,
    )
    .await?;
    // One stage failing stops the other: the process exits and its supervisor restarts it.
    let stop = shutdown.child_token();
    // Nothing comes back to the persister through the retry topics: a database outage is
    // waited out where it happens.
    let results = Stage::new(ROLE, vec![topics.results()], results_execution)
        .with_slow_inputs(vec![topics.dead_letters(), topics.heartbeats()])
        .retrying_in_place()
        .writing_its_own_dead_letters();
    let kv = Stage::new(KV_APPLIER_ROLE, vec![topics.kv_updates()], kv_execution)
        .retrying_in_place()
        .writing_its_own_dead_letters();
    let run = |stage: Stage, ctx: Arc<StageContext>| {
        let role = stage.role.clone();
        let handler = PersisterHandler::new(
            &role,
            pool.clone(),
            ctx.clone(),
            changelog.clone(),
            stop.clone(),
        );
        let stop = stop.clone();
        async move {
            let outcome = sluice_core::run_stage(ctx, stage, handler, stop.clone()).await;
            stop.cancel();
            outcome
        }
    };
    let (results, kv) = tokio::join!(run(results, ctx.clone()), run(kv, ctx.for_another_stage()));
    results?;
    kv?;
    Ok(())
}

/// `<ROLE>_BATCH_MAX` and `_BATCH_WAIT` from the environment, one batch in flight: the
/// positions stored with the rows advance in consumption order, and a second batch of the same
/// partition committing first would mark the first one's messages as applied.
fn one_batch_in_flight(role: &str, max: usize) -> anyhow::Result<Execution> {
    let mut execution = Execution::batches_from_env(role, max, "0ms", 1)?;
    if let Execution::Batches { in_flight, .. } = &mut execution {
        if *in_flight != 1 {
            tracing::warn!(
                "{}_BATCHES_IN_FLIGHT is ignored: the stage has one batch in flight",
                role.to_ascii_uppercase()
            );
            *in_flight = 1;
        }
    }
    Ok(execution)
}
