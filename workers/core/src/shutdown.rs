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

/// How long a process may take to close its clients once the grace for work in flight is
/// over. librdkafka's consumer close waits, without a bound of its own, for the group
/// coordinator to answer: with the broker gone (stopped first, or crashed) a process that had
/// finished every stage never exited.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// A token cancelled on the first SIGTERM or SIGINT. From then on the process has its
/// `SHUTDOWN_GRACE` plus [`CLOSE_TIMEOUT`] to end; past that it exits with status 1, saying so.
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
        exit_if_still_running_after(shutdown_grace() + CLOSE_TIMEOUT);
    });
    token
}

/// `SHUTDOWN_GRACE` as the worker configuration reads it (its default when unset or invalid:
/// a bad value already stopped the process at start).
fn shutdown_grace() -> Duration {
    std::env::var("SHUTDOWN_GRACE")
        .ok()
        .and_then(|value| crate::config::parse_duration(&value).ok())
        .unwrap_or_else(|| {
            crate::config::parse_duration(crate::config::DEFAULT_SHUTDOWN_GRACE)
                .expect("the default grace parses")
        })
}

/// On a thread of its own, so that a runtime blocked in a client's close cannot hold it up.
fn exit_if_still_running_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            ?limit,
            "still stopping after the shutdown grace and the time to close the Kafka clients \
             (is the broker down?): exiting; uncommitted work is delivered again"
        );
        std::process::exit(1);
    });
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
