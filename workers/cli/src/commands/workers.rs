//! `sluice workers`: the live workers, from their latest heartbeats; `sluice health`: whether
//! this host runs a live one (a container's health check).

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
        "{:<10} {:<40} {:<7} {:>9} {:>10} {:>6} {:>9}  HOST",
        "ROLE", "INSTANCE", "STATE", "IN_FLIGHT", "PROCESSED", "DEAD", "SEEN"
    );
    for w in workers {
        let age = (Utc::now() - w.last_seen).num_milliseconds() as f64 / 1000.0;
        println!(
            "{:<10} {:<40} {:<7} {:>9} {:>10} {:>6} {:>8.1}s  {} (v{})",
            w.role,
            w.instance_id,
            w.state,
            w.in_flight,
            w.processed,
            w.dead_lettered,
            age,
            w.host,
            w.version
        );
        if let Some(alarm) = &w.alarm {
            println!("  alarm: {alarm}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Success when a worker on this host (a container: its own services) sent a heartbeat that
/// is still live (its stages poll, publish and reach the broker and the database) and none
/// of them raises the dead-letter alarm.
pub async fn health(app: &App) -> anyhow::Result<ExitCode> {
    let host = hostname::get()?.to_string_lossy().into_owned();
    let live = queries::live_workers(&app.pool, None).await?;
    let here: Vec<_> = live.iter().filter(|w| w.host == host).collect();
    if here.is_empty() {
        println!("no live worker on {host}");
        return Ok(ExitCode::FAILURE);
    }
    let roles: Vec<&str> = here.iter().map(|w| w.role.as_str()).collect();
    println!("live on {host}: {}", roles.join(", "));
    let mut healthy = true;
    for w in here {
        if let Some(alarm) = &w.alarm {
            println!("unhealthy: {} ({}): {alarm}", w.role, w.instance_id);
            healthy = false;
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
