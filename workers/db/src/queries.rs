//! Reads and small writes for the `sluice` program: claiming a job id, job status, live
//! workers. Dead letters have [`crate::dead_letters`].

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::FromRow;
use uuid::Uuid;

use sluice_messages::heartbeat::LIVE_WITHIN_SECS;

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
    pub dead_lettered: i64,
    /// Why the stage's dead letters are over their share, while they are.
    pub alarm: Option<String>,
    pub version: String,
    pub last_seen: DateTime<Utc>,
}

/// What [`claim_job`] found under a job id.
#[derive(Debug, Clone)]
pub enum JobClaim {
    /// No such job: a pending row was inserted, which [`release_job_claim`] deletes.
    Created,
    /// The same request is pending: publishing it again is harmless, results are written once.
    SameRequestPending,
    /// The same request is answered: here is the answer; nothing to publish.
    SameRequestDone(JobRow),
    /// The same request had died: it is pending again, and [`release_job_claim`] puts back
    /// the error it died of.
    SameRequestDead { error: Option<String> },
    /// The id belongs to another kind or request, or to a job whose request was not recorded
    /// (published by another producer): nothing was changed.
    DifferentRequest,
}

/// Claims `job_id` for `request`, or tells what it already belongs to (see [`JobClaim`]).
/// Requests are compared as `jsonb`, so key order and number spelling do not matter.
pub async fn claim_job(
    pool: &PgPool,
    job_id: Uuid,
    kind: &str,
    request: &serde_json::Value,
    created_at: DateTime<Utc>,
) -> Result<JobClaim, sqlx::Error> {
    #[derive(FromRow)]
    struct Existing {
        #[sqlx(flatten)]
        row: JobRow,
        same_request: bool,
    }
    let mut tx = pool.begin().await?;
    // A row deleted between the conflict and the lock (a failed publish of another `sluice`
    // releasing its claim) is simply inserted on the next round.
    let existing = loop {
        let inserted = sqlx::query(
            "INSERT INTO jobs (job_id, kind, status, request, created_at)
             VALUES ($1, $2, 'pending', $3, $4)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job_id)
        .bind(kind)
        .bind(request)
        .bind(created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(JobClaim::Created);
        }
        let existing: Option<Existing> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, (kind = $2 AND request = $3::jsonb) IS TRUE AS same_request
             FROM jobs WHERE job_id = $1 FOR UPDATE"
        ))
        .bind(job_id)
        .bind(kind)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            break existing;
        }
    };
    if !existing.same_request {
        return Ok(JobClaim::DifferentRequest);
    }
    let claim = match existing.row.status.as_str() {
        "done" => JobClaim::SameRequestDone(existing.row),
        "dead" => {
            sqlx::query("UPDATE jobs SET status = 'pending', error = NULL WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            JobClaim::SameRequestDead {
                error: existing.row.error,
            }
        }
        _ => JobClaim::SameRequestPending,
    };
    tx.commit().await?;
    Ok(claim)
}

/// Undoes what [`claim_job`] changed, for a job that could not be published: deletes the row it
/// created, or makes the job it revived dead again; only while the job is still pending.
pub async fn release_job_claim(
    pool: &PgPool,
    job_id: Uuid,
    claim: &JobClaim,
) -> Result<(), sqlx::Error> {
    match claim {
        JobClaim::Created => {
            sqlx::query("DELETE FROM jobs WHERE job_id = $1 AND status = 'pending'")
                .bind(job_id)
                .execute(pool)
                .await?;
        }
        JobClaim::SameRequestDead { error } => {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', error = $2
                 WHERE job_id = $1 AND status = 'pending'",
            )
            .bind(job_id)
            .bind(error)
            .execute(pool)
            .await?;
        }
        JobClaim::SameRequestPending
        | JobClaim::SameRequestDone(_)
        | JobClaim::DifferentRequest => {}
    }
    Ok(())
}

const JOB_COLUMNS: &str =
    "job_id, kind, status, result, error, worker, attempts, created_at, persisted_at";

pub async fn job(pool: &PgPool, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"))
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

/// Those of `job_ids` that are no longer pending.
pub async fn finished_among(pool: &PgPool, job_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT job_id FROM jobs WHERE job_id = ANY($1) AND status <> 'pending'")
        .bind(job_ids)
        .fetch_all(pool)
        .await
}

/// Workers whose last heartbeat is recent and did not say they stopped; `role` narrows it.
pub async fn live_workers(
    pool: &PgPool,
    role: Option<&str>,
) -> Result<Vec<LiveWorker>, sqlx::Error> {
    sqlx::query_as(
        "SELECT instance_id, role, host, state, in_flight, processed, dead_lettered, alarm,
                version, last_seen
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
