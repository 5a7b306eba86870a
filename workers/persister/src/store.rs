//! Writing a batch to PostgreSQL: one transaction, one multi-row `UNNEST` statement per table,
//! and the persister's position in its input partitions stored in the same transaction.
//!
//! The stored position makes a redelivered message a no-op. The writes are idempotent as well,
//! a second line of defence: a job id is written once as done (`done` wins over `pending` and
//! `dead`), a part once per (job, part), a dead letter once per position in its source topic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use sluice_core::Job;

use crate::records::{Batch, DeadLetterRow, PartRow, Record, ResultRow, WorkerRow};
use crate::DatabaseConfig;

/// Channel notified, once per transaction, whenever job rows changed.
pub const JOBS_CHANNEL: &str = "sluice_jobs";

pub async fn connect(db: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&db.url)
        .await
}

/// Connects (waiting for the database while it is unreachable) and applies the migrations.
pub async fn connect_and_migrate(
    db: &DatabaseConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let mut pause = Duration::from_millis(200);
    let pool = loop {
        match connect(db).await {
            Ok(pool) => break pool,
            Err(e) if is_transient(&e) && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, "database not reachable, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    sqlx::migrate!("../../migrations").run(&pool).await?;
    Ok(pool)
}

/// A failure that goes away by itself: the connection, the server's state, a deadlock.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// One consumed message and the row it becomes; `None` when it becomes nothing (a dead letter
/// the database refused) and only its offset is recorded.
pub struct Consumed<'a> {
    pub job: &'a Job,
    pub record: Option<Record>,
}

/// Writes the messages in one transaction together with the persister's position in their
/// partitions. Messages below the recorded position were applied by an earlier transaction
/// and are skipped, so a message changes the database at most once whatever Kafka redelivers.
/// `items` must be in consumption order and the only batch in flight for its partitions.
/// Returns how many were skipped as already applied.
pub async fn write(
    pool: &PgPool,
    group: &str,
    items: &[Consumed<'_>],
) -> Result<usize, sqlx::Error> {
    let mut next_offsets: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for item in items {
        let next = next_offsets
            .entry((item.job.topic.as_str(), item.job.partition))
            .or_default();
        *next = (*next).max(item.job.offset + 1);
    }
    let mut tx = pool.begin().await?;
    let applied = claim_positions(&mut tx, group, &next_offsets).await?;
    let fresh: Vec<&Consumed> = items
        .iter()
        .filter(|item| {
            let position = (item.job.topic.as_str(), item.job.partition);
            item.job.offset >= applied.get(&position).copied().unwrap_or(0)
        })
        .collect();
    let batch: Batch = fresh
        .iter()
        .filter_map(|item| item.record.as_ref())
        .collect();
    write_rows(&mut tx, &batch).await?;
    advance_positions(&mut tx, group, &next_offsets).await?;
    tx.commit().await?;
    Ok(items.len() - fresh.len())
}

/// Locks the persister's position in each partition (creating it at 0 when new), so that a
/// replica taking a partition over waits for the transaction of the one that had it, and
/// returns where each stands, keyed like `partitions`. Sorted, so that replicas lock in one
/// order.
async fn claim_positions<'k>(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    partitions: &BTreeMap<(&'k str, i32), i64>,
) -> Result<BTreeMap<(&'k str, i32), i64>, sqlx::Error> {
    let topics: Vec<&str> = partitions.keys().map(|(t, _)| *t).collect();
    let numbers: Vec<i32> = partitions.keys().map(|(_, p)| *p).collect();
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
         SELECT $1, t, p, 0 FROM UNNEST($2::text[], $3::int[]) AS x(t, p) ORDER BY t, p
         ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(&topics)
    .bind(&numbers)
    .execute(&mut **tx)
    .await?;
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT topic, partition, next_offset FROM consumer_offsets
         WHERE consumer_group = $1
           AND (topic, partition) IN (SELECT * FROM UNNEST($2::text[], $3::int[]))
         ORDER BY topic, partition
         FOR UPDATE",
    )
    .bind(group)
    .bind(&topics)
    .bind(&numbers)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(topic, partition, next)| {
            // A batch spans a few partitions; a scan finds the borrowed key.
            let key = partitions
                .keys()
                .find(|(t, p)| *t == topic && *p == partition)?;
            Some((*key, next))
        })
        .collect())
}

async fn advance_positions(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    next_offsets: &BTreeMap<(&str, i32), i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE consumer_offsets o
         SET next_offset = GREATEST(o.next_offset, x.next), updated_at = now()
         FROM UNNEST($2::text[], $3::int[], $4::int8[]) AS x(topic, partition, next)
         WHERE o.consumer_group = $1 AND o.topic = x.topic AND o.partition = x.partition",
    )
    .bind(group)
    .bind(next_offsets.keys().map(|(t, _)| *t).collect::<Vec<_>>())
    .bind(next_offsets.keys().map(|(_, p)| *p).collect::<Vec<_>>())
    .bind(next_offsets.values().copied().collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the rows of a batch, one statement per table.
async fn write_rows(tx: &mut Transaction<'_, Postgres>, batch: &Batch) -> Result<(), sqlx::Error> {
    let mut jobs_changed = false;
    if !batch.results.is_empty() {
        upsert_results(tx, &batch.results).await?;
        jobs_changed = true;
    }
    if !batch.parts.is_empty() {
        jobs_changed |= insert_parts_and_assemble(tx, &batch.parts).await?;
    }
    if !batch.dead_letters.is_empty() {
        jobs_changed |= insert_dead_letters(tx, &batch.dead_letters).await?;
    }
    if !batch.workers.is_empty() {
        upsert_workers(tx, &batch.workers).await?;
    }
    if jobs_changed {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(JOBS_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Keeps the first row of every key: one statement may not touch a row twice.
fn first_per_key<T, K: std::hash::Hash + Eq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut seen = HashSet::new();
    rows.iter().filter(|row| seen.insert(key(row))).collect()
}

async fn upsert_results(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[ResultRow],
) -> Result<(), sqlx::Error> {
    let rows = first_per_key(rows, |r| r.job_id);
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, result, error, worker, attempts, created_at,
                           finished_at, persisted_at)
         SELECT r.job_id, r.kind, 'done', r.result::jsonb, r.error, r.worker, r.attempts,
                r.created_at, r.finished_at, clock_timestamp()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                     $7::timestamptz[], $8::timestamptz[])
              AS r(job_id, kind, result, error, worker, attempts, created_at, finished_at)
         ON CONFLICT (job_id) DO UPDATE
         SET status = 'done', result = EXCLUDED.result, error = EXCLUDED.error,
             worker = EXCLUDED.worker, attempts = EXCLUDED.attempts,
             finished_at = EXCLUDED.finished_at, persisted_at = EXCLUDED.persisted_at
         WHERE jobs.status <> 'done'",
    )
    .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.worker.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Stores parts, then completes every job of the batch whose parts are now all stored.
/// Returns whether a job was completed.
async fn insert_parts_and_assemble(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[PartRow],
) -> Result<bool, sqlx::Error> {
    let rows = first_per_key(rows, |r| (r.job_id, r.part));
    // Serializes the assembly of a job across persister replicas: without it, two transactions
    // each holding the other's last part would both see the job incomplete. Sorted, so that
    // replicas take the locks in one order and cannot deadlock.
    let job_ids: Vec<Uuid> = rows
        .iter()
        .map(|r| r.job_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(id::text, 0)) FROM UNNEST($1::uuid[]) AS id ORDER BY id")
        .bind(&job_ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO compute_parts (job_id, part, parts, a, b, result, worker, attempts,
                                    created_at, finished_at)
         SELECT p.job_id, p.part, p.parts, p.a, p.b, p.result::numeric, p.worker, p.attempts,
                p.created_at, p.finished_at
         FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::bigint[], $5::bigint[], $6::text[],
                     $7::text[], $8::int[], $9::timestamptz[], $10::timestamptz[])
              AS p(job_id, part, parts, a, b, result, worker, attempts, created_at, finished_at)
         ON CONFLICT (job_id, part) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.part).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.parts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.a).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.b).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.worker.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    let assembled = sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, result, attempts, created_at, finished_at,
                           persisted_at)
         SELECT job_id, 'compute', 'done',
                jsonb_build_object(
                    'ok', true,
                    'result', sum(result),
                    'parts', jsonb_agg(jsonb_build_object('a', a, 'b', b, 'result', result)
                                       ORDER BY part)),
                max(attempts), min(created_at), max(finished_at), clock_timestamp()
         FROM compute_parts
         WHERE job_id = ANY($1)
         GROUP BY job_id
         HAVING count(*) = max(parts)
         ON CONFLICT (job_id) DO UPDATE
         SET status = 'done', result = EXCLUDED.result, error = NULL,
             attempts = EXCLUDED.attempts, finished_at = EXCLUDED.finished_at,
             persisted_at = EXCLUDED.persisted_at
         WHERE jobs.status <> 'done'",
    )
    .bind(&job_ids)
    .execute(&mut **tx)
    .await?;
    Ok(assembled.rows_affected() > 0)
}

/// Stores dead letters and marks their jobs dead (unless already done). Returns whether a job
/// row changed.
async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[DeadLetterRow],
) -> Result<bool, sqlx::Error> {
    let rows = first_per_key(rows, |r| {
        (r.source_topic.clone(), r.source_partition, r.source_offset)
    });
    sqlx::query(
        "INSERT INTO dead_letters (job_id, source_topic, source_partition, source_offset,
                                   original_topic, original_partition, original_offset, attempts,
                                   error_class, reason, first_failure_at, message_key, payload,
                                   headers)
         SELECT d.job_id, d.source_topic, d.source_partition, d.source_offset, d.original_topic,
                d.original_partition, d.original_offset, d.attempts, d.error_class, d.reason,
                d.first_failure_at, d.message_key, d.payload, d.headers::jsonb
         FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[],
                     $7::bigint[], $8::int[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::bytea[], $13::bytea[], $14::text[])
              AS d(job_id, source_topic, source_partition, source_offset, original_topic,
                   original_partition, original_offset, attempts, error_class, reason,
                   first_failure_at, message_key, payload, headers)
         ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.source_topic.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.source_partition).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.source_offset).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.original_topic.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.original_partition)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.original_offset).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.error_class.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.first_failure_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.key.as_deref()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.payload.as_slice())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.headers.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;

    let dead_jobs: HashMap<Uuid, &DeadLetterRow> = rows
        .iter()
        .filter_map(|r| r.job_id.map(|id| (id, *r)))
        .collect();
    if dead_jobs.is_empty() {
        return Ok(false);
    }
    let marked = sqlx::query(
        "INSERT INTO jobs (job_id, kind, status, error, attempts, created_at, persisted_at)
         SELECT d.job_id, d.kind, 'dead', d.reason, d.attempts, d.created_at, clock_timestamp()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[])
              AS d(job_id, kind, reason, attempts, created_at)
         ON CONFLICT (job_id) DO UPDATE
         SET status = 'dead', error = EXCLUDED.error, attempts = EXCLUDED.attempts,
             persisted_at = EXCLUDED.persisted_at
         WHERE jobs.status <> 'done'",
    )
    .bind(dead_jobs.keys().copied().collect::<Vec<_>>())
    .bind(
        dead_jobs
            .values()
            .map(|r| r.job_kind.as_deref().unwrap_or("unknown"))
            .collect::<Vec<_>>(),
    )
    .bind(
        dead_jobs
            .values()
            .map(|r| format!("{}: {}", r.error_class, r.reason))
            .collect::<Vec<_>>(),
    )
    .bind(dead_jobs.values().map(|r| r.attempts).collect::<Vec<_>>())
    .bind(
        dead_jobs
            .values()
            .map(|r| r.job_created_at.unwrap_or_else(chrono::Utc::now))
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(marked.rows_affected() > 0)
}

async fn upsert_workers(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[WorkerRow],
) -> Result<(), sqlx::Error> {
    // The newest heartbeat of each instance in the batch is the only one that matters.
    let mut latest: HashMap<&str, &WorkerRow> = HashMap::new();
    for row in rows {
        let slot = latest.entry(row.instance.as_str()).or_insert(row);
        if row.last_seen > slot.last_seen {
            *slot = row;
        }
    }
    let rows: Vec<&WorkerRow> = latest.into_values().collect();
    sqlx::query(
        "INSERT INTO workers (instance_id, role, host, state, in_flight, processed, version,
                              last_seen)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::bigint[], $7::text[], $8::timestamptz[])
         ON CONFLICT (instance_id) DO UPDATE
         SET role = EXCLUDED.role, host = EXCLUDED.host, state = EXCLUDED.state,
             in_flight = EXCLUDED.in_flight, processed = EXCLUDED.processed,
             version = EXCLUDED.version, last_seen = EXCLUDED.last_seen
         WHERE workers.last_seen <= EXCLUDED.last_seen",
    )
    .bind(rows.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.role.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.host.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.in_flight).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.processed).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_seen).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
