//! Questions and their outcomes (the `qa_results` view over the job rows of kind `qa`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_messages::qa::Reply;
use sqlx::PgPool;
use uuid::Uuid;

/// The reply of a validated answer to `question` (the same text), if there is one.
pub async fn validated_reply(pool: &PgPool, question: &str) -> Result<Option<Reply>, sqlx::Error> {
    let found: Option<(serde_json::Value,)> = sqlx::query_as(
        "SELECT result->'reply' FROM jobs
         WHERE kind = 'qa' AND result->>'status' = 'validated'
           AND md5(result->>'question') = md5($1) AND result->>'question' = $1
         LIMIT 1",
    )
    .bind(question)
    .fetch_optional(pool)
    .await?;
    // A row another writer shaped differently is no reply to reuse.
    Ok(found.and_then(|(reply,)| serde_json::from_value(reply).ok()))
}

/// Which of `questions` have a validated answer already.
pub async fn answered_among(
    pool: &PgPool,
    questions: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let found: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT q FROM UNNEST($1::text[]) AS q
         WHERE EXISTS (SELECT 1 FROM jobs
                       WHERE kind = 'qa' AND result->>'status' = 'validated'
                         AND md5(result->>'question') = md5(q) AND result->>'question' = q)",
    )
    .bind(questions)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().map(|(q,)| q).collect())
}

/// One row of `qa_results`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct QaRow {
    pub question_id: Uuid,
    pub status: String,
    pub question: Option<String>,
    pub answer: Option<String>,
    pub expected: Option<String>,
    pub score: Option<f64>,
    pub asks: Option<i32>,
    pub attempts: i32,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub latency_ms: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub answer_tokens: Option<i64>,
    pub reused: Option<bool>,
    pub worker: Option<String>,
    pub run_id: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "question_id, status, question, answer, expected, score, asks, attempts, \
    provider, model, latency_ms, prompt_tokens, answer_tokens, reused, worker, run_id, error, \
    created_at, finished_at";

/// Question `id`'s row, whatever its status.
pub async fn outcome(pool: &PgPool, id: Uuid) -> Result<Option<QaRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM qa_results WHERE question_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The latest `limit` outcomes, of one run or of all, newest last.
pub async fn results(
    pool: &PgPool,
    run_id: Option<&str>,
    limit: i64,
) -> Result<Vec<QaRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM (
             SELECT * FROM qa_results
             WHERE status <> 'pending' AND ($1::text IS NULL OR run_id = $1)
             ORDER BY persisted_at DESC, question_id
             LIMIT $2) latest
         ORDER BY persisted_at, question_id"
    ))
    .bind(run_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
