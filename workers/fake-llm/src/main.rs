//! `sluice-fake-llm`: a fake LLM provider for tests and benchmarks. Prints
//! `listening on http://<addr>` on stdout once ready; logs go to stderr (`RUST_LOG`, default info).
//!
//! There is no signal handling on purpose: SIGINT and SIGTERM end the process at once, which is
//! what a fake should do, whereas a graceful shutdown would wait on hanging requests.

use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = sluice_fake_llm::Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    sluice_fake_llm::serve(config, listener).await
}
