//! The persister: consumes results, sum_squares parts, dead letters and heartbeats and writes
//! them to PostgreSQL in batches (flushed at `PERSISTER_BATCH_MAX` rows or after
//! `PERSISTER_BATCH_WAIT`).
//!
//! Exactly-once into Postgres: every write is idempotent (see [`store`]) and offsets are stored
//! only after the transaction commits. A database outage is waited out with exponential
//! backoff; the batch is retried whole, nothing is skipped. A message that cannot be stored
//! (invalid, or refused by the database as data) becomes a dead letter.

pub mod queries;
pub mod records;
pub mod store;

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use sluice_core::config::{env_or, env_string, ConfigError, WorkerConfig};
use sluice_core::topics::Topics;
use sluice_core::{Handler, HandlerError, Job, Outcome, StageContext};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use records::{Batch, Record};

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
    topics: Topics,
    shutdown: CancellationToken,
}

/// Why a batch was not written.
enum WriteError {
    /// The database refused the data itself; retrying the same rows cannot help.
    Refused(sqlx::Error),
    Interrupted,
}

impl PersisterHandler {
    pub fn new(pool: PgPool, topics: Topics, shutdown: CancellationToken) -> Self {
        Self {
            pool,
            topics,
            shutdown,
        }
    }

    /// Writes `batch`, retrying transient failures with exponential backoff until it commits
    /// or shutdown comes.
    async fn write_durably(&self, batch: &Batch) -> Result<(), WriteError> {
        let mut backoff = ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        loop {
            match store::write(&self.pool, batch).await {
                Ok(()) => return Ok(()),
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

    /// After the database refused a batch: each record alone, so only the culprits fail.
    async fn write_one_by_one(&self, parsed: Vec<Result<Record, HandlerError>>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(parsed.len());
        for record in parsed {
            let outcome = match record {
                Err(e) => Err(e),
                Ok(record) => match self.write_durably(&Batch::from_iter([&record])).await {
                    Ok(()) => Ok(vec![]),
                    Err(WriteError::Interrupted) => Err(HandlerError::Interrupted),
                    Err(WriteError::Refused(e)) => refused(&record, e),
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}

/// The database refused one record: it becomes a dead letter, unless it already is one, which
/// would only come back here.
fn refused(record: &Record, error: sqlx::Error) -> Outcome {
    if let Record::DeadLetter(letter) = record {
        tracing::error!(%error, topic = %letter.source_topic, offset = letter.source_offset,
            "dead letter refused by the database; dropped");
        return Ok(vec![]);
    }
    Err(HandlerError::permanent("database_refused", error))
}

impl Handler for PersisterHandler {
    async fn handle(&self, job: &Job) -> Outcome {
        let mut outcomes = self.handle_batch(std::slice::from_ref(job)).await;
        outcomes.pop().unwrap_or(Err(HandlerError::Interrupted))
    }

    async fn handle_batch(&self, jobs: &[Job]) -> Vec<Outcome> {
        let parsed: Vec<Result<Record, HandlerError>> = jobs
            .iter()
            .map(|job| records::parse(&self.topics, job))
            .collect();
        let batch: Batch = parsed.iter().filter_map(|r| r.as_ref().ok()).collect();
        match self.write_durably(&batch).await {
            Ok(()) => parsed.into_iter().map(|r| r.map(|_| vec![])).collect(),
            Err(WriteError::Interrupted) => jobs
                .iter()
                .map(|_| Err(HandlerError::Interrupted))
                .collect(),
            Err(WriteError::Refused(e)) => {
                tracing::warn!(error = %e, rows = jobs.len(), "batch refused; writing rows one by one");
                self.write_one_by_one(parsed).await
            }
        }
    }
}

/// Runs the persister until `shutdown` fires.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(ROLE, 5_000, "5ms", 1)?;
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
    let handler = PersisterHandler::new(pool, topics.clone(), shutdown.clone());
    sluice_core::run_stage(ctx, ROLE, &inputs, handler, shutdown).await?;
    Ok(())
}
