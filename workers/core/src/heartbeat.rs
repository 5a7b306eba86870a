//! Liveness: a stage publishes a heartbeat every `HEARTBEAT_INTERVAL` (idle, busy or stalled),
//! and a last one, `stopped`, when it stops.

use std::sync::Arc;

use chrono::Utc;
use sluice_messages::heartbeat::{Heartbeat, WorkerState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::StageContext;
use crate::kafka::Output;
use crate::stats::ALARM_FADES_AFTER;

fn beat(ctx: &StageContext, role: &str, state: WorkerState) -> Heartbeat {
    Heartbeat {
        role: role.to_string(),
        instance: ctx.worker.instance_id.clone(),
        host: ctx.worker.host.clone(),
        state,
        in_flight: ctx.stats.in_flight(),
        processed: ctx.stats.processed(),
        dead_lettered: ctx.stats.dead_lettered(),
        alarm: ctx.stats.alarm(ALARM_FADES_AFTER),
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

/// The heartbeat of a running stage; `stop` sends the last one.
pub struct HeartbeatTask {
    stop: CancellationToken,
    /// `None` once `failed` has seen the task end: a finished `JoinHandle` must not be awaited
    /// again (tokio panics), and `stop` still runs after that.
    task: Option<JoinHandle<()>>,
}

impl HeartbeatTask {
    pub fn spawn(ctx: Arc<StageContext>, role: &str) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(ctx, role.to_string(), stop.clone()));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Resolves only if the task ended on its own, which it never should: the caller treats
    /// that as a failure of the process. Resolves once; after that it never does again.
    /// Cancel-safe, so it can be a `select!` branch polled over and over.
    pub async fn failed(&mut self) -> String {
        let Some(task) = &mut self.task else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.task = None;
        match ended {
            Err(e) if e.is_panic() => format!("heartbeat task panicked: {e}"),
            Err(e) => format!("heartbeat task ended: {e}"),
            Ok(()) => "heartbeat task ended".into(),
        }
    }

    /// Sends the last heartbeat and waits for it; nothing to wait for if the task has ended.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// Publishes heartbeats until `stop` fires, then a last one saying the stage stopped.
async fn run(ctx: Arc<StageContext>, role: String, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(ctx.worker.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {
                let state = ctx.stats.state(ctx.worker.stall_after);
                if state == WorkerState::Stalled {
                    tracing::warn!(role, stall_after = ?ctx.worker.stall_after,
                        "stalled: work is waiting and none has finished");
                }
                send(&ctx, &beat(&ctx, &role, state)).await;
            }
        }
    }
    send(&ctx, &beat(&ctx, &role, WorkerState::Stopped)).await;
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// A heartbeat whose task is `task` (spawning the real one needs a broker).
    fn with_task(task: JoinHandle<()>) -> HeartbeatTask {
        HeartbeatTask {
            stop: CancellationToken::new(),
            task: Some(task),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_after_failed_returns() {
        let mut ended = with_task(tokio::spawn(async {}));
        assert_eq!(ended.failed().await, "heartbeat task ended");
        // Reported once: polled again (the next turn of a select loop), it stays pending.
        assert!(ended.failed().now_or_never().is_none());
        ended.stop().await;

        let mut panicked = with_task(tokio::spawn(async { panic!("boom") }));
        let reason = panicked.failed().await;
        assert!(reason.starts_with("heartbeat task panicked"), "{reason}");
        panicked.stop().await;
    }
}
