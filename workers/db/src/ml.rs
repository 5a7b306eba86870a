//! The model registry (`ml_models`): storing a trained version exactly once per training job,
//! finding the latest version of names, loading an artifact, listing models.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// A trained model on its way into the registry.
#[derive(Debug, Clone)]
pub struct NewModel<'a> {
    pub name: &'a str,
    pub job_id: Uuid,
    pub algorithm: &'a str,
    pub task: &'a str,
    pub features: &'a serde_json::Value,
    pub params: &'a serde_json::Value,
    pub metric: serde_json::Value,
    pub leaderboard: Option<&'a serde_json::Value>,
    pub rows: i64,
    pub training_ms: i64,
    pub artifact: &'a [u8],
    pub worker: &'a str,
}

/// A stored version, without its artifact.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct ModelRow {
    pub name: String,
    pub version: i32,
    pub job_id: Uuid,
    pub algorithm: String,
    pub task: String,
    pub features: serde_json::Value,
    pub params: serde_json::Value,
    pub metric: serde_json::Value,
    pub leaderboard: Option<serde_json::Value>,
    pub rows: i64,
    pub training_ms: i64,
    pub worker: String,
    pub created_at: DateTime<Utc>,
}

const MODEL_COLUMNS: &str = "name, version, job_id, algorithm, task, features, params, metric, \
                             leaderboard, rows, training_ms, worker, created_at";

/// The version training job `job_id` stored, if it stored one.
pub async fn model_of_job(pool: &PgPool, job_id: Uuid) -> Result<Option<ModelRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM ml_models WHERE job_id = $1"
    ))
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

/// Stores `model` as the next version of its name, unless its training job stored one
/// already: either way, the version that job has. Versions of one name are numbered under an
/// advisory lock on the name, so replicas training the same name at once never collide.
pub async fn register(pool: &PgPool, model: &NewModel<'_>) -> Result<ModelRow, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('sluice.ml_models.' || $1, 0))")
        .bind(model.name)
        .execute(&mut *tx)
        .await?;
    let stored: Option<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM ml_models WHERE job_id = $1"
    ))
    .bind(model.job_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(stored) = stored {
        tx.commit().await?;
        return Ok(stored);
    }
    let row: ModelRow = sqlx::query_as(&format!(
        "INSERT INTO ml_models (name, version, job_id, algorithm, task, features, params, metric,
                                leaderboard, rows, training_ms, artifact, worker)
         SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
         FROM ml_models WHERE name = $1
         RETURNING {MODEL_COLUMNS}"
    ))
    .bind(model.name)
    .bind(model.job_id)
    .bind(model.algorithm)
    .bind(model.task)
    .bind(model.features)
    .bind(model.params)
    .bind(&model.metric)
    .bind(model.leaderboard)
    .bind(model.rows)
    .bind(model.training_ms)
    .bind(model.artifact)
    .bind(model.worker)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// The latest version of each of `names` that has one.
pub async fn latest_versions(
    pool: &PgPool,
    names: &[String],
) -> Result<HashMap<String, i32>, sqlx::Error> {
    let found: Vec<(String, i32)> = sqlx::query_as(
        "SELECT name, MAX(version) FROM ml_models WHERE name = ANY($1) GROUP BY name",
    )
    .bind(names)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// The artifact of `name` at `version`, if that version exists.
pub async fn artifact(
    pool: &PgPool,
    name: &str,
    version: i32,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let found: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT artifact FROM ml_models WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(pool)
            .await?;
    Ok(found.map(|(artifact,)| artifact))
}

/// Every stored version, by name then newest first; only the latest of each name unless
/// `all_versions`.
pub async fn models(pool: &PgPool, all_versions: bool) -> Result<Vec<ModelRow>, sqlx::Error> {
    let latest_only = if all_versions {
        ""
    } else {
        "WHERE (name, version) IN (SELECT name, MAX(version) FROM ml_models GROUP BY name)"
    };
    sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM ml_models {latest_only} ORDER BY name, version DESC"
    ))
    .fetch_all(pool)
    .await
}
