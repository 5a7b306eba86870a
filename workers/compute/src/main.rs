//! `sluice-compute`: one compute worker process. Run as many as you like.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    sluice_compute::run(sluice_core::shutdown::on_signal()).await
}
