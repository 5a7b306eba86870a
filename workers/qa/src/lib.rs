//! Question answering (seeds 003 and 004): LLM workers ask a provider each question and publish
//! the answer; the scoring stage validates it against the expected answer, asks again, or
//! rejects it; the persister stores the outcome.
//!
//! ```text
//! qa.questions ──► llm ──► qa.answers ──► scorer ──► results ──► persister ──► qa_results
//!      ▲                                    │
//!      └──────────── low score: ask again ──┘
//! ```
//!
//! # Layout
//! - [`config`]: the LLM workers' and the scorer's settings.
//! - [`provider`]: the stub, OpenAI-compatible and Gemini providers, and what their failures
//!   mean for a question.
//! - [`similarity`]: the documented score of an answer against the expected one.
//! - [`llm`], [`scorer`]: the two stages' handlers.

pub mod config;
pub mod llm;
pub mod provider;
pub mod scorer;
pub mod similarity;

use serde::de::DeserializeOwned;
use sluice_core::config::WorkerConfig;
use sluice_core::{ErrorClass, Execution, HandlerError, Job, Stage, StageContext};
use sluice_db::DatabaseConfig;
use sluice_messages::qa::{LLM_ROLE, SCORER_ROLE};
use sluice_messages::Envelope;
use tokio_util::sync::CancellationToken;

use config::{LlmConfig, ScorerConfig};
use llm::LlmHandler;
use provider::Provider;
use scorer::ScorerHandler;

/// A message of kind `qa` carrying a `P` (`what` names it in the error), or the schema error
/// that dead-letters it.
fn decode<P: DeserializeOwned>(job: &Job, what: &str) -> Result<Envelope<P>, HandlerError> {
    let envelope: Envelope<P> = serde_json::from_slice(&job.payload)
        .map_err(|e| HandlerError::permanent(ErrorClass::Schema, format!("invalid {what}: {e}")))?;
    if envelope.kind != sluice_messages::qa::KIND {
        let shown: String = envelope.kind.chars().take(40).collect();
        return Err(HandlerError::permanent(
            ErrorClass::Schema,
            format!("kind is {shown:?}, not {:?}", sluice_messages::qa::KIND),
        ));
    }
    Ok(envelope)
}

/// Runs an LLM worker until `shutdown` fires: every question on its own, up to `LLM_IN_FLIGHT`
/// at once and `LLM_RATE_LIMIT` started a second, each given up after `LLM_TIMEOUT`.
pub async fn run_llm(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(LLM_ROLE)?;
    let config = LlmConfig::from_env()?;
    let execution = Execution::per_message_from_env(LLM_ROLE, 1024, 0.0, "30s")?;
    if let Execution::PerMessage { timeout: None, .. } = execution {
        // A call that never returns would hold its slot, and its partition, for good.
        anyhow::bail!("LLM_TIMEOUT must be above 0: a call to a provider needs a bound");
    }
    let provider = Provider::from_config(&config)?;
    let answers = if config.reuse_validated {
        let pool = sluice_db::pool::connect_lazy(&DatabaseConfig::from_env()?)?;
        // Connected before the first question, whose look-up has a budget a first connection
        // may not fit in.
        let warm = pool.clone();
        tokio::spawn(async move { drop(warm.acquire().await) });
        Some(pool)
    } else {
        None
    };
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    tracing::info!(provider = config.provider.as_str(), model = %config.model,
        reuse_validated = config.reuse_validated, "asking");
    let handler = LlmHandler::new(
        ctx.topics.clone(),
        ctx.worker.instance_id.clone(),
        provider,
        answers,
    );
    let inputs = vec![ctx.topics.qa_questions()];
    sluice_core::run_stage(
        ctx,
        Stage::new(LLM_ROLE, inputs, execution),
        handler,
        shutdown,
    )
    .await?;
    Ok(())
}

/// Runs the scoring stage until `shutdown` fires.
pub async fn run_scorer(shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = WorkerConfig::from_env(SCORER_ROLE)?;
    let config = ScorerConfig::from_env()?;
    let execution = Execution::batches_from_env(SCORER_ROLE, 256, "0ms", 4)?;
    let ctx = StageContext::from_env(worker, &shutdown).await?;
    let handler = ScorerHandler::new(ctx.topics.clone(), config);
    let inputs = vec![ctx.topics.qa_answers()];
    let stage = Stage::new(SCORER_ROLE, inputs, execution);
    sluice_core::run_stage(ctx, stage, handler, shutdown).await?;
    Ok(())
}
