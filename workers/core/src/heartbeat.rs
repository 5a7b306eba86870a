//! Liveness: every worker publishes a heartbeat every `HEARTBEAT_INTERVAL`; the persister keeps
//! the latest per instance, and a worker counts as live while that one is young enough.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kafka::Output;
use crate::pipeline::StageContext;

/// A worker is live while its last heartbeat is younger than this.
pub const LIVE_WITHIN_SECS: i64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Idle,
    Busy,
    /// Sent once on a clean shutdown, so the worker stops counting as live at once.
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub role: String,
    pub instance: String,
    pub host: String,
    pub state: WorkerState,
    pub in_flight: u64,
    pub processed: u64,
    pub version: String,
    pub at: DateTime<Utc>,
}

/// Counters a stage updates as it works, read by the heartbeat.
#[derive(Debug, Default)]
pub struct WorkerStats {
    in_flight: AtomicU64,
    processed: AtomicU64,
}

impl WorkerStats {
    pub fn started(&self, messages: usize) {
        self.in_flight.fetch_add(messages as u64, Ordering::Relaxed);
    }

    /// `messages` left flight; `durable` of them were fully handled.
    pub fn finished(&self, messages: usize, durable: usize) {
        self.in_flight.fetch_sub(messages as u64, Ordering::Relaxed);
        self.processed.fetch_add(durable as u64, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }
}

fn beat(ctx: &StageContext, role: &str, state: WorkerState) -> Heartbeat {
    Heartbeat {
        role: role.to_string(),
        instance: ctx.worker.instance_id.clone(),
        host: ctx.worker.host.clone(),
        state,
        in_flight: ctx.stats.in_flight(),
        processed: ctx.stats.processed(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        at: Utc::now(),
    }
}

async fn send(ctx: &StageContext, heartbeat: &Heartbeat) {
    let output = match Output::json(
        ctx.topics.heartbeats(),
        heartbeat.instance.clone(),
        heartbeat,
    ) {
        Ok(output) => output,
        Err(e) => return tracing::error!(error = %e, "heartbeat not serializable"),
    };
    if let Err(e) = ctx.publisher.try_publish(&output).await {
        tracing::warn!(error = %e, "heartbeat not published");
    }
}

/// The heartbeat of a running service; `stop` sends the last one.
pub struct HeartbeatTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HeartbeatTask {
    pub fn spawn(ctx: Arc<StageContext>, role: &str) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(ctx, role.to_string(), stop.clone()));
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Publishes heartbeats until `stop` fires, then a last one saying the worker stopped.
async fn run(ctx: Arc<StageContext>, role: String, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(ctx.worker.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {
                let state = if ctx.stats.in_flight() > 0 { WorkerState::Busy } else { WorkerState::Idle };
                send(&ctx, &beat(&ctx, &role, state)).await;
            }
        }
    }
    send(&ctx, &beat(&ctx, &role, WorkerState::Stopped)).await;
}
