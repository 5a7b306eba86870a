//! Machine learning over the pipeline (seeds 000 and 001): training jobs and prediction
//! requests published to Kafka, ML workers (any number of replicas) consuming them, models in
//! a registry in PostgreSQL, and predictions persisted with their job ids.
//!
//! ```text
//! ml.train ──► trainer ── fit (a child process) ──► ml_models ─┐
//!                 └──────────── answer ───────────► results ──► persister ──► jobs
//! ml.predict ─► predictor ◄── artifacts (cached) ──────────────┘     ▲
//!                 └──────────── predictions ────────────────────────┘
//! ```
//!
//! One `sluice-ml` process runs both stages, each with its own consumer group: a minute-long
//! fit never holds up a prediction. Any replica serves any model: a version trained on one is
//! read from the registry by another.
//!
//! # Layout
//! - [`learn`]: the algorithms, their preprocessing and artifacts (no Kafka, no database).
//! - [`config`]: the ML workers' settings.
//! - [`fit`]: a fit in a child process of its own, with a memory and a time limit.
//! - [`cache`]: deserialized models, bounded by their size.
//! - [`answer`]: a job's answer as the result message both stages publish.
//! - [`trainer`], [`predictor`]: the two stages' handlers.

pub mod answer;
pub mod cache;
pub mod config;
pub mod fit;
pub mod learn;
pub mod predictor;
pub mod trainer;

use std::future::Future;

use sluice_core::config::{env_or, WorkerConfig};
use sluice_core::{Execution, Stage, StageContext};
use sluice_db::DatabaseConfig;
use sluice_messages::ml::{PREDICTOR_ROLE, TRAINER_ROLE};
use tokio_util::sync::CancellationToken;

use config::MlConfig;
use predictor::PredictorHandler;
use trainer::TrainerHandler;

/// Runs an ML worker until `shutdown` fires: the training stage (`TRAINER_IN_FLIGHT` fits at
/// once, 1 by default) and the prediction stage (batches of `PREDICTOR_BATCH_MAX`).
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env("ml")?;
    let config = MlConfig::from_env()?;
    // A fit's bound is ML_TRAIN_TIME_LIMIT, which fails the job: a stage timeout would send it
    // through the retry tiers to be fitted, and time out, again.
    let fits_at_once = env_or("TRAINER_IN_FLIGHT", 1usize)?.max(1);
    let training = Execution::PerMessage {
        in_flight: fits_at_once,
        rate_per_sec: None,
        timeout: None,
    };
    let predicting = Execution::batches_from_env(PREDICTOR_ROLE, 1024, "0ms", 2)?;
    let pool = sluice_db::pool::connect_lazy(&DatabaseConfig::from_env()?)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let topics = &ctx.topics;
    tracing::info!(
        fits_at_once,
        memory_limit_mb = config.train_memory_bytes.map(|b| b / (1024 * 1024)),
        "serving models"
    );
    let trainer = TrainerHandler::new(
        topics.clone(),
        ctx.worker.instance_id.clone(),
        pool.clone(),
        config.clone(),
    );
    let predictor = PredictorHandler::new(
        topics.clone(),
        ctx.worker.instance_id.clone(),
        pool,
        &config,
    );
    let train_stage = Stage::new(TRAINER_ROLE, vec![topics.ml_train()], training);
    let predict_stage = Stage::new(PREDICTOR_ROLE, vec![topics.ml_predict()], predicting);
    // One stage failing stops the other: the process exits and its supervisor restarts it.
    let stop = shutdown.child_token();
    let predict_ctx = ctx.for_another_stage();
    let (trained, predicted) = tokio::join!(
        stopping_the_other(
            sluice_core::run_stage(ctx, train_stage, trainer, stop.clone()),
            &stop
        ),
        stopping_the_other(
            sluice_core::run_stage(predict_ctx, predict_stage, predictor, stop.clone()),
            &stop
        ),
    );
    trained?;
    predicted?;
    Ok(())
}

/// Runs `stage`, then cancels `stop` so that the process's other stage ends too.
async fn stopping_the_other<F: Future>(stage: F, stop: &CancellationToken) -> F::Output {
    let outcome = stage.await;
    stop.cancel();
    outcome
}
