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

/// Every stored key, deleted ones included.
pub async fn keys(tx: &mut Transaction<'_, Postgres>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key FROM kv_entries")
        .fetch_all(&mut **tx)
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

/// Most rows, and bytes of values, one statement writes: a statement carries its values as
/// one array, and PostgreSQL takes at most 1 GB in one message (values are up to 1 MiB each).
pub const STATEMENT_MAX_ROWS: usize = 10_000;
pub const STATEMENT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// `rows` cut into runs of at most [`STATEMENT_MAX_ROWS`] rows and, unless a single row is
/// larger, [`STATEMENT_MAX_BYTES`] bytes by `size`.
pub fn statements<T>(rows: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let row_bytes = size(row);
        if i > start && (i - start == STATEMENT_MAX_ROWS || bytes + row_bytes > STATEMENT_MAX_BYTES)
        {
            runs.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += row_bytes;
    }
    if start < rows.len() {
        runs.push(&rows[start..]);
    }
    runs
}

/// Empties the table and writes `entries` (value as JSON text, `None` for a deleted key).
pub async fn replace_entries(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[(String, Option<String>, i64)],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM kv_entries")
        .execute(&mut **tx)
        .await?;
    let size = |e: &(String, Option<String>, i64)| e.0.len() + e.1.as_ref().map_or(0, String::len);
    for chunk in statements(entries, size) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_by_rows_and_bytes() {
        let rows: Vec<usize> = vec![1; 25_000];
        let lengths: Vec<usize> = statements(&rows, |r| *r).iter().map(|s| s.len()).collect();
        assert_eq!(lengths, [10_000, 10_000, 5_000]);
        let big = STATEMENT_MAX_BYTES / 2;
        let rows = vec![big, big, big, STATEMENT_MAX_BYTES * 2, 1];
        let lengths: Vec<usize> = statements(&rows, |r| *r).iter().map(|s| s.len()).collect();
        assert_eq!(lengths, [2, 1, 1, 1]);
        assert!(statements(&Vec::<usize>::new(), |r| *r).is_empty());
    }
}
