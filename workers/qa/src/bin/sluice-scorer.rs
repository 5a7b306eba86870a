//! `sluice-scorer`: the scoring stage. Scales like any worker.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    sluice_qa::run_scorer(sluice_core::shutdown::on_signal()).await
}
