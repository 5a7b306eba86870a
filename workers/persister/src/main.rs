//! `sluice-persister`: writes results, parts, dead letters and heartbeats to PostgreSQL.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    sluice_persister::run(sluice_core::shutdown::on_signal()).await
}
