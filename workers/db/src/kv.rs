//! The key-value store's table as `sluice kv` reads it, and the rebuild's writes.

use sqlx::postgres::PgPool;
use sqlx::{FromRow, Postgres, Transaction};

/// A key that exists.
#[derive(Debug, Clone, FromRow)]
pub struct KvRow {
    pub key: String,
    pub value: serde_json::Value,
    pub version: i64,
}

/// A key's row as the applier keeps it: `value` is `None` for a deleted key, which keeps its
/// version.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct KvEntry {
    pub key: String,
    pub value: Option<serde_json::Value>,
    pub version: i64,
}

pub async fn get(pool: &PgPool, key: &str) -> Result<Option<KvRow>, sqlx::Error> {
    sqlx::query_as("SELECT key, value, version FROM kv WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// The keys starting with `prefix`, in key order, at most `limit` after `after`.
pub async fn list(
    pool: &PgPool,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<KvRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key, value, version FROM kv
         WHERE starts_with(key, $1) AND ($2::text IS NULL OR key > $2)
         ORDER BY key LIMIT $3",
    )
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Every row, deleted keys included, in key order: what a rebuild must reproduce.
pub async fn entries(pool: &PgPool) -> Result<Vec<KvEntry>, sqlx::Error> {
    sqlx::query_as("SELECT key, value, version FROM kv_entries ORDER BY key")
        .fetch_all(pool)
        .await
}

/// The rows of `keys`, as [`replace_entries`] takes them.
pub async fn entries_of(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[&str],
) -> Result<Vec<(String, Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT key, value::text, version FROM kv_entries WHERE key = ANY($1)")
        .bind(keys)
        .fetch_all(&mut **tx)
        .await
}

/// Locks the applier's stored positions in the `partitions` of `topic` until `tx` ends, so that
/// it applies no update meanwhile (a position it never stored is created at 0, locked too), and
/// returns them as (partition, next offset to apply).
pub async fn lock_positions(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i32, i64)>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
         SELECT $1, $2, p, 0 FROM generate_series(0, $3 - 1) AS p
         ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .execute(&mut **tx)
    .await?;
    sqlx::query_as(
        "SELECT partition, next_offset FROM consumer_offsets
         WHERE consumer_group = $1 AND topic = $2
         ORDER BY topic, partition
         FOR UPDATE",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(&mut **tx)
    .await
}

/// Empties the table and writes `entries` (value as JSON text, `None` for a deleted key).
pub async fn replace_entries(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[(String, Option<String>, i64)],
) -> Result<(), sqlx::Error> {
    /// Rows per statement: bounds the statement's size whatever the table's.
    const CHUNK: usize = 10_000;
    sqlx::query("DELETE FROM kv_entries")
        .execute(&mut **tx)
        .await?;
    for chunk in entries.chunks(CHUNK) {
        sqlx::query(
            "INSERT INTO kv_entries (key, value, version)
             SELECT e.key, e.value::jsonb, e.version
             FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS e(key, value, version)",
        )
        .bind(chunk.iter().map(|e| e.0.as_str()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.1.as_deref()).collect::<Vec<_>>())
        .bind(chunk.iter().map(|e| e.2).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
