//! `sluice job <id>`: a job's status and, once done, its answer.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sluice_db::queries;
use uuid::Uuid;

use crate::app::App;
use crate::render::to_line;

#[derive(Serialize)]
struct JobView {
    id: Uuid,
    status: String,
    kind: String,
    attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<String>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persisted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(app: &App, id: Uuid) -> anyhow::Result<ExitCode> {
    let Some(row) = queries::job(&app.pool, id).await? else {
        println!(
            "{}",
            to_line(&json!({"id": id, "status": "unknown", "error": "no such job"}))
        );
        return Ok(ExitCode::FAILURE);
    };
    let view = JobView {
        id: row.job_id,
        persisted_at: (row.status != "pending").then_some(row.persisted_at),
        status: row.status,
        kind: row.kind,
        attempts: row.attempts,
        worker: row.worker,
        created_at: row.created_at,
        result: row.result,
        error: row.error,
    };
    println!("{}", to_line(&view));
    Ok(ExitCode::SUCCESS)
}
