//! Dead letters: listing them, and replaying each one once however many `sluice dlq replay`
//! run at the same time.
//!
//! A replay *claims* a letter before publishing it (sets `replayed_at` where it is still
//! NULL), so of two runs only one publishes; with it, it claims the other unreplayed letters of
//! the same message (one dead-lettered twice), which are never published. If the publish fails,
//! [`release`] gives all of it back.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::FromRow;
use uuid::Uuid;

#[derive(Debug, Clone, FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub job_id: Option<Uuid>,
    pub original_topic: Option<String>,
    pub original_partition: Option<i32>,
    pub original_offset: Option<i64>,
    pub attempts: i32,
    pub error_class: String,
    pub reason: String,
    pub message_key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub dead_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, job_id, original_topic, original_partition, original_offset, attempts, \
     error_class, reason, message_key, payload, dead_at, replayed_at";

/// Up to `limit` dead letters not replayed yet with ids above `after`, oldest first: pages of
/// a walk through all of them that never holds more than one page of payloads.
pub async fn unreplayed(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters
         WHERE replayed_at IS NULL AND id > $1
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A letter claimed for replay, with what the claim changed.
#[derive(Debug, Clone)]
pub struct ReplayClaim {
    pub id: i64,
    /// Unreplayed letters of the same message, marked replayed with it.
    pub duplicates: Vec<i64>,
    /// The job made pending again, and the error it had died of.
    revived_job: Option<(Uuid, Option<String>)>,
}

/// Claims `letter` for replay: `None` when it is replayed already (another run claimed it, or
/// it was a duplicate of one replayed). In the same transaction, marks its duplicates replayed
/// and makes its job pending again if it is dead.
///
/// Duplicates are the unreplayed letters of the same original position (topic, partition,
/// offset). Without a complete position, those of the same job id, topic and key that have
/// none either (the key matters: every part of a split job carries the job's id); without a job
/// id there is no telling, and a letter is its own.
pub async fn claim_replay(
    pool: &PgPool,
    letter: &DeadLetter,
) -> Result<Option<ReplayClaim>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Locks the whole group in id order before changing any of it, so two runs claiming
    // letters of one group queue up instead of deadlocking; the one that waited then finds the
    // group replayed.
    let group: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM dead_letters
         WHERE replayed_at IS NULL
           AND (id = $1
                OR ($2::text IS NOT NULL AND $3::int IS NOT NULL AND $4::bigint IS NOT NULL
                    AND (original_topic, original_partition, original_offset) = ($2, $3, $4))
                OR (($2::text IS NULL OR $3::int IS NULL OR $4::bigint IS NULL)
                    AND $5::uuid IS NOT NULL AND job_id = $5
                    AND original_topic IS NOT DISTINCT FROM $2
                    AND message_key IS NOT DISTINCT FROM $6
                    AND (original_topic IS NULL OR original_partition IS NULL
                         OR original_offset IS NULL)))
         ORDER BY id
         FOR UPDATE",
    )
    .bind(letter.id)
    .bind(&letter.original_topic)
    .bind(letter.original_partition)
    .bind(letter.original_offset)
    .bind(letter.job_id)
    .bind(&letter.message_key)
    .fetch_all(&mut *tx)
    .await?;
    if !group.contains(&letter.id) {
        return Ok(None);
    }
    sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = ANY($1)")
        .bind(&group)
        .execute(&mut *tx)
        .await?;
    let mut revived_job = None;
    if let Some(job_id) = letter.job_id {
        let job: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, error FROM jobs WHERE job_id = $1 FOR UPDATE")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(("dead", error)) = job.as_ref().map(|(s, e)| (s.as_str(), e)) {
            sqlx::query("UPDATE jobs SET status = 'pending', error = NULL WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            revived_job = Some((job_id, error.clone()));
        }
    }
    tx.commit().await?;
    Ok(Some(ReplayClaim {
        id: letter.id,
        duplicates: group.into_iter().filter(|id| *id != letter.id).collect(),
        revived_job,
    }))
}

/// Gives a claim back after its publish failed: the letters are unreplayed again, and the job
/// dead again with its error if nothing else changed it meanwhile.
pub async fn release(pool: &PgPool, claim: &ReplayClaim) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = std::iter::once(claim.id)
        .chain(claim.duplicates.iter().copied())
        .collect();
    sqlx::query("UPDATE dead_letters SET replayed_at = NULL WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    if let Some((job_id, error)) = &claim.revived_job {
        sqlx::query(
            "UPDATE jobs SET status = 'dead', error = $2 WHERE job_id = $1 AND status = 'pending'",
        )
        .bind(job_id)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
