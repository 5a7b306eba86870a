//! Turns SIGTERM and SIGINT into a cancellation token that every part of a process watches,
//! and lets work in flight finish within a grace period once it fires.

use std::io::IsTerminal;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Hands each task of `tasks` that ends within `grace` to `finished`, then aborts the rest
/// (their work is abandoned: uncommitted, delivered again later) and waits for them to end.
/// Returns how many were abandoned.
pub async fn finish_within<T: 'static>(
    tasks: &mut JoinSet<T>,
    grace: Duration,
    mut finished: impl FnMut(Result<T, JoinError>),
) -> usize {
    let deadline = Instant::now() + grace;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(done) => finished(done),
                None => return 0,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let abandoned = tasks.len();
    tracing::warn!(
        abandoned,
        ?grace,
        "shutdown grace over: abandoning work in flight, uncommitted"
    );
    tasks.shutdown().await;
    abandoned
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        trigger.cancel();
    });
    token
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
