//! The persister: consumes results, sum_squares parts, dead letters and heartbeats and writes
//! them to PostgreSQL in batches (flushed at `PERSISTER_BATCH_MAX` rows or after
//! `PERSISTER_BATCH_WAIT`).
//!
//! Exactly-once into Postgres: the persister's position in each input partition is stored in
//! the same transaction as the rows (see [`store`]), so a redelivered message is skipped; the
//! writes are idempotent too, and Kafka offsets are committed only after the transaction. A
//! database outage is waited out with exponential backoff; the batch is retried whole, nothing
//! is skipped. A message that cannot be stored (invalid, or refused by the database as data)
//! becomes a dead letter row in the same transaction.

pub mod queries;
pub mod records;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use sluice_core::config::{env_or, env_string, ConfigError, WorkerConfig};
use sluice_core::{Handler, HandlerError, Job, Outcome, StageContext};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use records::Record;
use store::Consumed;

pub const ROLE: &str = "persister";

/// Where the results live.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: env_string(
                "DATABASE_URL",
                "postgres://sluice:sluice@127.0.0.1:5432/sluice",
            ),
            max_connections: env_or("DATABASE_MAX_CONNECTIONS", 4)?,
        })
    }
}

pub struct PersisterHandler {
    pool: PgPool,
    ctx: Arc<StageContext>,
    /// The consumer group, which names the positions stored with the rows.
    group: String,
    shutdown: CancellationToken,
}

/// Why a batch was not written.
enum WriteError {
    /// The database refused the data itself; retrying the same rows cannot help.
    Refused(sqlx::Error),
    Interrupted,
}

impl PersisterHandler {
    pub fn new(pool: PgPool, ctx: Arc<StageContext>, shutdown: CancellationToken) -> Self {
        Self {
            pool,
            group: ctx.topics.group(ROLE),
            ctx,
            shutdown,
        }
    }

    /// The row a message becomes: its own, or, when it is invalid, a dead letter written in the
    /// same transaction as the position that marks it done (published instead, it could be
    /// lost between the commit and the broker's acknowledgement).
    fn record_for(&self, job: &Job) -> Record {
        records::parse(&self.ctx.topics, job).unwrap_or_else(|error| self.rejected(job, &error))
    }

    /// `job` as the dead letter the pipeline would have published for `error`.
    fn rejected(&self, job: &Job, error: &HandlerError) -> Record {
        let letter = self.ctx.retry.route_failure(&self.ctx.topics, job, error);
        Record::DeadLetter(records::parse_dead_letter(&Job {
            headers: letter.headers,
            ..job.clone()
        }))
    }

    /// Writes `items`, retrying transient failures with exponential backoff until they commit
    /// or shutdown comes.
    async fn write_durably(&self, items: &[Consumed<'_>]) -> Result<(), WriteError> {
        let mut backoff = ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        loop {
            match store::write(&self.pool, &self.group, items).await {
                Ok(0) => return Ok(()),
                Ok(skipped) => {
                    tracing::info!(skipped, "skipped redelivered messages already applied");
                    return Ok(());
                }
                Err(e) if store::is_transient(&e) => {
                    let pause = backoff.next_backoff().unwrap_or(backoff.max_interval);
                    tracing::warn!(error = %e, ?pause, "database write failed, retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(WriteError::Interrupted),
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(e) => return Err(WriteError::Refused(e)),
            }
        }
    }

    /// After the database refused a batch: each message alone, in order, so only the culprits
    /// fail. A message the database refuses becomes a dead letter; a dead letter it refuses is
    /// dropped, loudly, since it would only come back here (its position is still recorded).
    async fn write_one_by_one(&self, items: Vec<Consumed<'_>>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        for mut item in items {
            let outcome = loop {
                match self.write_durably(std::slice::from_ref(&item)).await {
                    Ok(()) => break Ok(vec![]),
                    Err(WriteError::Interrupted) => break Err(HandlerError::Interrupted),
                    Err(WriteError::Refused(e)) => item.record = self.instead_of_refused(&item, e),
                }
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// What to write when the database refused `item`'s record.
    fn instead_of_refused(&self, item: &Consumed<'_>, error: sqlx::Error) -> Option<Record> {
        match item.record {
            Some(Record::DeadLetter(_)) | None => {
                tracing::error!(%error, topic = %item.job.topic, offset = item.job.offset,
                    "dead letter refused by the database; dropped");
                None
            }
            Some(_) => Some(self.rejected(
                item.job,
                &HandlerError::permanent("database_refused", error),
            )),
        }
    }
}

impl Handler for PersisterHandler {
    async fn handle(&self, job: &Job) -> Outcome {
        let mut outcomes = self.handle_batch(std::slice::from_ref(job)).await;
        outcomes.pop().unwrap_or(Err(HandlerError::Interrupted))
    }

    async fn handle_batch(&self, jobs: &[Job]) -> Vec<Outcome> {
        let items: Vec<Consumed> = jobs
            .iter()
            .map(|job| Consumed {
                job,
                record: Some(self.record_for(job)),
            })
            .collect();
        match self.write_durably(&items).await {
            Ok(()) => jobs.iter().map(|_| Ok(vec![])).collect(),
            Err(WriteError::Interrupted) => jobs
                .iter()
                .map(|_| Err(HandlerError::Interrupted))
                .collect(),
            Err(WriteError::Refused(e)) => {
                tracing::warn!(error = %e, rows = jobs.len(), "batch refused; writing rows one by one");
                self.write_one_by_one(items).await
            }
        }
    }
}

/// Runs the persister until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut worker = WorkerConfig::from_env(ROLE, 5_000, "5ms", 1)?;
    // The positions stored with the rows advance in consumption order: a second batch of the
    // same partition committing first would mark the first one's messages as applied.
    if worker.batches_in_flight != 1 {
        tracing::warn!(
            "PERSISTER_BATCHES_IN_FLIGHT is ignored: the persister has one batch in flight"
        );
        worker.batches_in_flight = 1;
    }
    let db = DatabaseConfig::from_env()?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let pool = store::connect_and_migrate(&db, &shutdown).await?;
    let topics = ctx.topics.clone();
    let inputs = [
        topics.results(),
        topics.part_results(),
        topics.dead_letters(),
        topics.heartbeats(),
    ];
    let handler = PersisterHandler::new(pool, ctx.clone(), shutdown.clone());
    sluice_core::run_stage(ctx, ROLE, &inputs, handler, shutdown).await?;
    Ok(())
}
