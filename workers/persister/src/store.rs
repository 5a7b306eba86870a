//! Writing a batch to PostgreSQL: one transaction, one multi-row `UNNEST` statement per table,
//! and the persister's position in its input partitions stored in the same transaction.
//!
//! The stored position makes a redelivered message a no-op. The writes are idempotent as well,
//! a second line of defence: a job id is written once as done (`done` wins over `pending` and
//! `dead`), a part once per (job, part), a dead letter once per position in its source topic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rdkafka::error::KafkaError;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use sluice_core::{Job, TopicPartition};
use sluice_db::{notify, JOBS_CHANNEL};

use crate::kv::{self, Changelog};
use crate::records::{Batch, DeadLetterRow, PartRow, Record, ResultRow, WorkerRow};

/// Whether the data itself was refused: by the database ([`sluice_db::pool::refuses_data`]),
/// or by the broker, a KV change too large for the state topic (an operator may have created
/// it with a smaller `max.message.bytes` than the updates topic's). The same rows would be
/// refused again. Never a failed commit.
pub fn is_refused_data(error: &StoreError) -> bool {
    match error {
        StoreError::Database(e) => sluice_db::pool::refuses_data(e),
        StoreError::Changelog(e) => refuses_size(e),
        StoreError::Commit(_) => false,
    }
}

/// Whether the broker will never take any KV change, whatever the rows (the state topic
/// unknown, or this client not authorized to write it): retrying forever would hold every
/// update while heartbeats say live, so the stage stops with the reason.
pub fn stops_the_stage(error: &StoreError) -> bool {
    matches!(error, StoreError::Changelog(e)
        if sluice_core::kafka::is_undeliverable(e).is_some() && !refuses_size(e))
}

fn refuses_size(error: &KafkaError) -> bool {
    sluice_core::kafka::is_undeliverable(error).is_some_and(sluice_core::kafka::is_too_large)
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Every statement passed and the commit failed: that says nothing about the rows
    /// (sluice defers no constraint), e.g. a NOTIFY queue full because a listening session
    /// stopped reading (SQLSTATE 54000), a connection lost. Waited out.
    #[error("database, at commit: {0}")]
    Commit(sqlx::Error),
    /// The KV changes could not be published to the state topic; nothing was committed.
    #[error("publishing KV changes: {0}")]
    Changelog(#[from] KafkaError),
}

/// One consumed message and the row it becomes.
pub struct Consumed<'a> {
    pub job: &'a Job,
    pub record: Record,
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
    changelog: &Changelog,
) -> Result<usize, StoreError> {
    let mut next_offsets: BTreeMap<(&str, i32), Position> = BTreeMap::new();
    for item in items {
        let position = next_offsets
            .entry((item.job.topic.as_str(), item.job.partition))
            .or_default();
        if item.job.offset >= position.next {
            *position = Position {
                next: item.job.offset + 1,
                last_timestamp_ms: item.job.timestamp_ms,
            };
        }
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
    let batch: Batch = fresh.iter().map(|item| &item.record).collect();
    let (kv_outcomes, changes) = if batch.kv.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        kv::write(&mut tx, pool, &batch.kv, &changelog.worker).await?
    };
    write_rows(&mut tx, &batch, &kv_outcomes).await?;
    advance_positions(&mut tx, group, &next_offsets).await?;
    // Published once every row is written, so only the commit can still fail (and a batch
    // applied again makes the same changes), and before the commit, so that no committed
    // change is missing from the topic; still holding the positions, so no other replica
    // applies these keys meanwhile.
    changelog.publish(&changes).await?;
    tx.commit().await.map_err(StoreError::Commit)?;
    Ok(items.len() - fresh.len())
}

/// Locks the persister's position in each partition (creating it at 0 when new), so that a
/// replica taking a partition over waits for the transaction of the one that had it, and
/// returns where each stands, keyed like `partitions`. Sorted, so that replicas lock in one
/// order.
async fn claim_positions<'k>(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    partitions: &BTreeMap<(&'k str, i32), Position>,
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

/// Where the persister stands in a partition: the next offset to apply, and the timestamp of
/// the message before it, which tells on assignment whether the log is still the one applied.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    next: i64,
    last_timestamp_ms: Option<i64>,
}

async fn advance_positions(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    positions: &BTreeMap<(&str, i32), Position>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE consumer_offsets o
         SET next_offset = x.next, last_timestamp_ms = x.last_timestamp_ms, updated_at = now()
         FROM UNNEST($2::text[], $3::int[], $4::int8[], $5::int8[])
              AS x(topic, partition, next, last_timestamp_ms)
         WHERE o.consumer_group = $1 AND o.topic = x.topic AND o.partition = x.partition
           AND x.next > o.next_offset",
    )
    .bind(group)
    .bind(positions.keys().map(|(t, _)| *t).collect::<Vec<_>>())
    .bind(positions.keys().map(|(_, p)| *p).collect::<Vec<_>>())
    .bind(positions.values().map(|p| p.next).collect::<Vec<_>>())
    .bind(
        positions
            .values()
            .map(|p| p.last_timestamp_ms)
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the rows of a batch, one statement per table, with the outcomes of its KV updates
/// (applied already), and tells waiting callers which jobs changed (after the commit, as
/// PostgreSQL delivers notifications).
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
    batch: &Batch,
    kv_outcomes: &[ResultRow],
) -> Result<(), sqlx::Error> {
    let mut changed: Vec<Uuid> = Vec::new();
    if !kv_outcomes.is_empty() {
        changed.extend(upsert_results(tx, kv_outcomes).await?);
    }
    if !batch.results.is_empty() {
        changed.extend(upsert_results(tx, &batch.results).await?);
    }
    if !batch.parts.is_empty() {
        changed.extend(insert_parts_and_assemble(tx, &batch.parts).await?);
    }
    if !batch.dead_letters.is_empty() {
        changed.extend(insert_dead_letters(tx, &batch.dead_letters).await?);
    }
    if !batch.workers.is_empty() {
        upsert_workers(tx, &batch.workers).await?;
    }
    if !changed.is_empty() {
        notify_changed(tx, &changed).await?;
    }
    Ok(())
}

/// Names the changed jobs to their waiters, in as many notifications as
/// [`notify::payloads`] makes.
async fn notify_changed(
    tx: &mut Transaction<'_, Postgres>,
    job_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
        .bind(JOBS_CHANNEL)
        .bind(notify::payloads(job_ids))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Keeps the first row of every key: one statement may not touch a row twice.
fn first_per_key<T, K: std::hash::Hash + Eq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut seen = HashSet::new();
    rows.iter().filter(|row| seen.insert(key(row))).collect()
}

/// Returns the jobs it completed.
async fn upsert_results(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[ResultRow],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = first_per_key(rows, |r| r.job_id);
    sqlx::query_as::<_, (Uuid,)>(
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
         -- A recorded job is answered by its own kind only, not by whatever a producer
         -- published under its id.
         WHERE jobs.status <> 'done' AND (jobs.request IS NULL OR jobs.kind = EXCLUDED.kind)
         RETURNING job_id",
    )
    .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.result.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.worker.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempts).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.finished_at).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
    .map(ids)
}

fn ids(rows: Vec<(Uuid,)>) -> Vec<Uuid> {
    rows.into_iter().map(|(id,)| id).collect()
}

/// Stores parts, then completes every job of the batch that now has a complete split: one
/// split (n, parts) whose ranges, in order, start at 1, each begin right after the one before
/// and end at n, so they cover 1..n exactly once. Parts of another split of the same job (a
/// redelivered job split across a different number of live workers) are kept apart and never
/// mix into the answer; the first complete split decides it. When the compute job's request
/// was recorded (`sluice calc`), only a split of that request counts: a sum_squares of its `n`,
/// into its `parts` (at most n) if it named them, so that another request published under the
/// job's id cannot answer it; a job of another kind recorded under the id, none. Returns the jobs completed.
async fn insert_parts_and_assemble(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[PartRow],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = first_per_key(rows, |r| (r.job_id, r.n, r.parts, r.part));
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
        "INSERT INTO compute_parts (job_id, n, part, parts, a, b, result, worker, attempts,
                                    created_at, finished_at)
         SELECT p.job_id, p.n, p.part, p.parts, p.a, p.b, p.result::numeric, p.worker,
                p.attempts, p.created_at, p.finished_at
         FROM UNNEST($1::uuid[], $2::bigint[], $3::int[], $4::int[], $5::bigint[], $6::bigint[],
                     $7::text[], $8::text[], $9::int[], $10::timestamptz[], $11::timestamptz[])
              AS p(job_id, n, part, parts, a, b, result, worker, attempts, created_at,
                   finished_at)
         ON CONFLICT (job_id, n, parts, part) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.job_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.n).collect::<Vec<_>>())
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
    let assembled: Vec<(Uuid,)> = sqlx::query_as(
        "WITH ranges AS (
             SELECT *, lag(b) OVER (PARTITION BY job_id, n, parts ORDER BY a) AS previous_b
             FROM compute_parts
             WHERE job_id = ANY($1)),
         complete AS (
             SELECT DISTINCT ON (r.job_id) r.job_id, r.n, r.parts
             FROM ranges r LEFT JOIN jobs j ON j.job_id = r.job_id
             WHERE j.request IS NULL
                OR (j.kind = 'compute' AND j.request->>'op' = 'sum_squares'
                    AND j.request->'n' = to_jsonb(r.n)
                    -- A split has at most n ranges, however many were asked for.
                    AND CASE COALESCE(jsonb_typeof(j.request->'parts'), 'null')
                            WHEN 'null' THEN true
                            WHEN 'number' THEN LEAST((j.request->>'parts')::numeric, r.n) = r.parts
                            ELSE false
                        END)
             GROUP BY r.job_id, r.n, r.parts
             HAVING count(*) = r.parts AND min(r.a) = 1 AND max(r.b) = r.n
                AND bool_and(r.a = COALESCE(r.previous_b + 1, 1))
             ORDER BY r.job_id, r.parts, r.n)
         INSERT INTO jobs (job_id, kind, status, result, attempts, created_at, finished_at,
                           persisted_at)
         SELECT r.job_id, 'compute', 'done',
                jsonb_build_object(
                    'ok', true,
                    'result', sum(r.result),
                    'parts', jsonb_agg(jsonb_build_object('a', r.a, 'b', r.b,
                                                          'result', r.result)
                                       ORDER BY r.a)),
                max(r.attempts), min(r.created_at), max(r.finished_at), clock_timestamp()
         FROM ranges r JOIN complete c USING (job_id, n, parts)
         GROUP BY r.job_id
         ON CONFLICT (job_id) DO UPDATE
         SET status = 'done', result = EXCLUDED.result, error = NULL,
             attempts = EXCLUDED.attempts, finished_at = EXCLUDED.finished_at,
             persisted_at = EXCLUDED.persisted_at
         WHERE jobs.status <> 'done'
         RETURNING job_id",
    )
    .bind(&job_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids(assembled))
}

/// Stores dead letters and marks their jobs dead (unless already done). Returns the jobs
/// marked.
async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[DeadLetterRow],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = first_per_key(rows, |r| {
        (
            r.source_topic.clone(),
            r.source_partition,
            r.source_offset,
            r.source_timestamp_ms,
        )
    });
    sqlx::query(
        "INSERT INTO dead_letters (job_id, source_topic, source_partition, source_offset,
                                   source_timestamp_ms, original_topic, original_partition,
                                   original_offset, attempts, error_class, reason,
                                   first_failure_at, message_key, payload, headers,
                                   foreign_headers)
         SELECT d.job_id, d.source_topic, d.source_partition, d.source_offset,
                d.source_timestamp_ms, d.original_topic, d.original_partition, d.original_offset,
                d.attempts, d.error_class, d.reason, d.first_failure_at, d.message_key,
                d.payload, d.headers::jsonb, d.foreign_headers::jsonb
         FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[],
                     $7::bigint[], $8::int[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::bytea[], $13::bytea[], $14::text[], $15::bigint[], $16::text[])
              AS d(job_id, source_topic, source_partition, source_offset, original_topic,
                   original_partition, original_offset, attempts, error_class, reason,
                   first_failure_at, message_key, payload, headers, source_timestamp_ms,
                   foreign_headers)
         ON CONFLICT (source_topic, source_partition, source_offset, source_timestamp_ms)
         DO NOTHING",
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
    .bind(
        rows.iter()
            .map(|r| r.source_timestamp_ms)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.foreign_headers.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;

    let dead_jobs: HashMap<Uuid, &DeadLetterRow> = rows
        .iter()
        .filter_map(|r| r.job_id.map(|id| (id, *r)))
        .collect();
    if dead_jobs.is_empty() {
        return Ok(vec![]);
    }
    let marked: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO jobs (job_id, kind, status, request, error, attempts, created_at,
                           persisted_at)
         SELECT d.job_id, d.kind, 'dead', d.request::jsonb, d.reason, d.attempts, d.created_at,
                clock_timestamp()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[],
                     $6::text[])
              AS d(job_id, kind, reason, attempts, created_at, request)
         ON CONFLICT (job_id) DO UPDATE
         SET status = 'dead', error = EXCLUDED.error, attempts = EXCLUDED.attempts,
             request = CASE WHEN jobs.kind = EXCLUDED.kind
                            THEN COALESCE(jobs.request, EXCLUDED.request)
                            ELSE jobs.request END,
             persisted_at = EXCLUDED.persisted_at
         -- Nor is it killed by the dead letter of another kind's message under its id (but
         -- for a range of its own: a compute job dies with its parts).
         WHERE jobs.status <> 'done'
           AND (jobs.request IS NULL OR jobs.kind = EXCLUDED.kind
                OR (jobs.kind = 'compute' AND EXCLUDED.kind = 'compute.part'))
         RETURNING job_id",
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
    .bind(
        dead_jobs
            .values()
            .map(|r| r.job_request.as_deref())
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(ids(marked))
}

async fn upsert_workers(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[WorkerRow],
) -> Result<(), sqlx::Error> {
    // The newest heartbeat of each stage of each instance in the batch is the only one that
    // matters.
    let mut latest: HashMap<(&str, &str), &WorkerRow> = HashMap::new();
    for row in rows {
        let slot = latest
            .entry((row.instance.as_str(), row.role.as_str()))
            .or_insert(row);
        if row.last_seen > slot.last_seen {
            *slot = row;
        }
    }
    let rows: Vec<&WorkerRow> = latest.into_values().collect();
    sqlx::query(
        "INSERT INTO workers (instance_id, role, host, state, in_flight, processed, dead_lettered,
                              alarm, version, last_seen)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::bigint[], $7::bigint[], $8::text[], $9::text[],
                              $10::timestamptz[])
         ON CONFLICT (instance_id, role) DO UPDATE
         SET host = EXCLUDED.host, state = EXCLUDED.state,
             in_flight = EXCLUDED.in_flight, processed = EXCLUDED.processed,
             dead_lettered = EXCLUDED.dead_lettered, alarm = EXCLUDED.alarm,
             version = EXCLUDED.version, last_seen = EXCLUDED.last_seen
         WHERE workers.last_seen <= EXCLUDED.last_seen",
    )
    .bind(rows.iter().map(|r| r.instance.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.role.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.host.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.in_flight).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.processed).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.dead_lettered).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.alarm.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.last_seen).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored position: the next offset to apply in a partition, and the timestamp of the last
/// message applied there, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPosition {
    pub partition: TopicPartition,
    pub next_offset: i64,
    pub last_timestamp_ms: Option<i64>,
}

/// The stored positions of `group` in those of `partitions` it has one for.
pub async fn positions(
    pool: &PgPool,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<Vec<StoredPosition>, sqlx::Error> {
    let rows: Vec<(String, i32, i64, Option<i64>)> = sqlx::query_as(
        "SELECT topic, partition, next_offset, last_timestamp_ms FROM consumer_offsets
         WHERE consumer_group = $1
           AND (topic, partition) IN (SELECT * FROM UNNEST($2::text[], $3::int[]))",
    )
    .bind(group)
    .bind(
        partitions
            .iter()
            .map(|p| p.topic.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(partitions.iter().map(|p| p.partition).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(topic, partition, next_offset, last_timestamp_ms)| StoredPosition {
                partition: TopicPartition { topic, partition },
                next_offset,
                last_timestamp_ms,
            },
        )
        .collect())
}

/// Sets a stored position back to 0, so that nothing the partition's log holds now is skipped,
/// if it is still `stale` (another replica may have moved it meanwhile).
pub async fn restart_position(
    pool: &PgPool,
    group: &str,
    stale: &StoredPosition,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE consumer_offsets SET next_offset = 0, last_timestamp_ms = NULL, updated_at = now()
         WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND next_offset = $4",
    )
    .bind(group)
    .bind(&stale.partition.topic)
    .bind(stale.partition.partition)
    .bind(stale.next_offset)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn a_state_topic_that_refuses_a_change_is_refused_data_and_one_that_refuses_all_stops() {
        let changelog = |code| StoreError::Changelog(KafkaError::MessageProduction(code));
        let too_large = changelog(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(is_refused_data(&too_large) && !stops_the_stage(&too_large));
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            let refused = changelog(code);
            assert!(
                stops_the_stage(&refused) && !is_refused_data(&refused),
                "{code:?}"
            );
        }
        let down = changelog(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(
            !stops_the_stage(&down) && !is_refused_data(&down),
            "waited out"
        );
    }
}
