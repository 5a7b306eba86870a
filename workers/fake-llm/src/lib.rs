//! A fake LLM provider over real HTTP, standing in for Gemini and OpenAI-compatible servers in
//! integration tests and benchmarks.
//!
//! It answers from a question → answer file (or with `Answer to: <question>`), and can be told to
//! misbehave on a share of requests: rate limits with `Retry-After`, server errors, requests that
//! hang past any client timeout, bodies of the wrong shape and wrong answers; and to refuse
//! given questions with a 4xx status, as a proxy refusing a prompt would. `GET /calls` lists
//! every request it has seen, so a test can check what its client actually did.
//!
//! # Layout
//!
//! - [`config`]: the command line (every flag also read from `FAKE_LLM_<NAME>`) and its checks.
//! - [`answers`]: the `--answers` file, loaded once into memory.
//! - [`api`]: the request and response shapes of the two APIs.
//! - [`server`]: the router, the shared state, and the choice of each request's outcome.
//! - `main.rs`: parses the command line, binds, and calls [`serve`].

pub mod answers;
pub mod api;
pub mod config;
pub mod server;

use anyhow::Context;
use std::io::Write;
use tokio::net::TcpListener;

pub use config::Config;

/// Serves `config` on `listener` until the process ends.
///
/// Once the configuration is checked and the answers are loaded, it prints exactly one line,
/// `listening on http://<addr>`, to stdout: callers bind port 0 and read the real port there.
pub async fn serve(config: Config, listener: TcpListener) -> anyhow::Result<()> {
    let app = server::router(config)?;
    let addr = listener
        .local_addr()
        .context("the listener has no local address")?;
    println!("listening on http://{addr}");
    // A parent reading our stdout through a pipe would otherwise wait on a block buffer.
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    tracing::info!(%addr, "fake LLM ready");
    axum::serve(listener, app)
        .await
        .context("the HTTP server stopped")
}
