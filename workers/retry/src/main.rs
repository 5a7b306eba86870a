//! `sluice-retry`: sends retried messages back to their topic when they are due.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    sluice_retry::run(sluice_core::shutdown::on_signal()).await
}
