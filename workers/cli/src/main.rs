//! `sluice`: the user's entry point to the pipeline.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    sluice_core::config::load_dotenv();
    let cli = sluice::Cli::parse();
    match sluice::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
