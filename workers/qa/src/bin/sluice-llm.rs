//! `sluice-llm`: one LLM worker process. Run as many as the provider's quota allows.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    sluice_qa::run_llm(sluice_core::shutdown::on_signal()).await
}
