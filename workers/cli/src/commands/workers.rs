//! `sluice workers`: the live workers, from their latest heartbeats.

use std::process::ExitCode;

use chrono::Utc;
use sluice_db::queries;

use crate::app::App;

pub async fn run(app: &App) -> anyhow::Result<ExitCode> {
    let workers = queries::live_workers(&app.pool, None).await?;
    if workers.is_empty() {
        println!("no live workers");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{:<10} {:<40} {:<6} {:>9} {:>10} {:>9}  HOST",
        "ROLE", "INSTANCE", "STATE", "IN_FLIGHT", "PROCESSED", "SEEN"
    );
    for w in workers {
        let age = (Utc::now() - w.last_seen).num_milliseconds() as f64 / 1000.0;
        println!(
            "{:<10} {:<40} {:<6} {:>9} {:>10} {:>8.1}s  {} (v{})",
            w.role, w.instance_id, w.state, w.in_flight, w.processed, age, w.host, w.version
        );
    }
    Ok(ExitCode::SUCCESS)
}
