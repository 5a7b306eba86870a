//! The `sluice` command line: publish compute jobs and wait for their persisted answers,
//! inspect jobs, workers and dead letters, replay dead letters, use the key-value store, ask
//! questions and generate question traffic, train models and predict, and benchmark the
//! pipeline.

pub mod app;
pub mod commands;
pub mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use commands::{bench, calc, dlq, job, kv, ml, qa, traffic, workers};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Publish jobs to the sluice pipeline and read their results"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a calculation (add, sub, mul, div, sum_squares) and print its answer.
    Calc(calc::CalcArgs),
    /// Show a job's status and answer.
    Job { id: Uuid },
    /// List the live workers.
    Workers,
    /// Exit 0 when a worker on this host is live (a container health check).
    Health,
    /// Apply the database migrations not applied yet, then exit.
    Migrate,
    /// Inspect or replay dead letters.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The key-value store: get, list, put, del, watch, rebuild.
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Question answering: ask, results.
    Qa {
        #[command(subcommand)]
        command: qa::QaCommand,
    },
    /// Machine learning: train, predict, models.
    Ml {
        #[command(subcommand)]
        command: ml::MlCommand,
    },
    /// Publish questions from a dataset at a rate (Poisson, bursty or uniform arrivals).
    Traffic(traffic::TrafficArgs),
    /// Measure the running pipeline.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let app = app::App::connect().await?;
    match cli.command {
        Command::Calc(args) => calc::run(&app, args).await,
        Command::Job { id } => job::run(&app, id).await,
        Command::Workers => workers::run(&app).await,
        Command::Health => workers::health(&app).await,
        Command::Migrate => {
            sluice_db::pool::migrate(&app.pool).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => dlq::run(&app, command).await,
        Command::Kv { command } => kv::run(&app, command).await,
        Command::Qa { command } => qa::run(&app, command).await,
        Command::Ml { command } => ml::run(&app, command).await,
        Command::Traffic(args) => traffic::run(&app, args).await,
        Command::Bench { command } => bench::run(&app, command).await,
    }
}
