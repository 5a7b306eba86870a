//! Reads and small writes for the `sluice` program: job status, live workers, dead letters.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::FromRow;
use uuid::Uuid;

use sluice_core::heartbeat::LIVE_WITHIN_SECS;

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub job_id: Uuid,
    pub kind: String,
    pub status: String,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub persisted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct LiveWorker {
    pub instance_id: String,
    pub role: String,
    pub host: String,
    pub state: String,
    pub in_flight: i64,
    pub processed: i64,
    pub version: String,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub original_topic: Option<String>,
    pub attempts: i32,
    pub error_class: String,
    pub reason: String,
    pub message_key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub dead_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Records a job published through `sluice`, so that its status reads "pending" until done.
pub async fn insert_pending(
    pool: &PgPool,
    job_id: Uuid,
    kind: &str,
    request: &serde_json::Value,
    created_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, request, created_at)
         VALUES ($1, $2, 'pending', $3, $4)
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(kind)
    .bind(request)
    .bind(created_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn job(pool: &PgPool, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, kind, status, result, error, worker, attempts, created_at, persisted_at
         FROM jobs WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// Workers whose last heartbeat is recent and did not say they stopped; `role` narrows it.
pub async fn live_workers(
    pool: &PgPool,
    role: Option<&str>,
) -> Result<Vec<LiveWorker>, sqlx::Error> {
    sqlx::query_as(
        "SELECT instance_id, role, host, state, in_flight, processed, version, last_seen
         FROM workers
         WHERE last_seen > now() - make_interval(secs => $1)
           AND state <> 'stopped'
           AND ($2::text IS NULL OR role = $2)
         ORDER BY role, instance_id",
    )
    .bind(LIVE_WITHIN_SECS as f64)
    .bind(role)
    .fetch_all(pool)
    .await
}

const DEAD_LETTER_COLUMNS: &str = "id, job_id, original_topic, attempts, error_class, reason, \
     message_key, payload, dead_at, replayed_at";

/// Dead letters not replayed yet, oldest first.
pub async fn dead_letters(pool: &PgPool, limit: i64) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE replayed_at IS NULL ORDER BY id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn dead_letter(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Marks a dead letter replayed and its job pending again (unless it finished meanwhile).
pub async fn mark_replayed(pool: &PgPool, letter: &DeadLetter) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
        .bind(letter.id)
        .execute(&mut *tx)
        .await?;
    if let Some(job_id) = letter.job_id {
        sqlx::query("UPDATE jobs SET status = 'pending', error = NULL WHERE job_id = $1 AND status = 'dead'")
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Waits until job `job_id` is no longer pending, or `timeout` passes. Wakes on the
/// persister's notification and re-reads, so it costs nothing while nothing changes.
pub async fn wait_until_finished(
    pool: &PgPool,
    job_id: Uuid,
    timeout: std::time::Duration,
) -> Result<Option<JobRow>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.listen(crate::store::JOBS_CHANNEL).await?;
    loop {
        let row = job(pool, job_id).await?;
        if row.as_ref().is_some_and(|r| r.status != "pending") {
            return Ok(row);
        }
        // A second's nap at most: a lost notification only delays the answer.
        let nap = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(std::time::Duration::from_secs(1));
        if nap.is_zero() {
            return Ok(row);
        }
        let _ = tokio::time::timeout(nap, listener.recv()).await;
    }
}
