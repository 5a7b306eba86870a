//! The training stage's handler: a training job in, a model version in the registry and the
//! job's answer out. A job delivered again after its model was stored gets the same version
//! without a second fit.

use std::time::Duration;

use sluice_core::pause::Pause;
use sluice_core::{Cx, ErrorClass, Handler, HandlerError, Job, Outcome};
use sluice_db::ml::{ModelRow, NewModel};
use sluice_messages::ml::{self, Failed, Metric, TrainOutput};
use sluice_messages::{Envelope, Topics};
use sqlx::PgPool;

use crate::answer::Answerer;
use crate::config::MlConfig;
use crate::fit::{self, FitError, Fitted};

pub struct TrainerHandler {
    answerer: Answerer,
    pool: PgPool,
    config: MlConfig,
}

impl TrainerHandler {
    pub fn new(topics: Topics, instance: String, pool: PgPool, config: MlConfig) -> Self {
        Self {
            answerer: Answerer {
                topics,
                instance,
                kind: ml::KIND_TRAIN,
            },
            pool,
            config,
        }
    }

    /// The model stored for the job, fitting it first unless an earlier delivery did. `Err`
    /// with a reason is the job's failure.
    async fn train(
        &self,
        envelope: &Envelope,
        cx: &Cx,
    ) -> Result<Result<ModelRow, String>, HandlerError> {
        let payload = envelope.payload.get();
        let request = match fit::parse_request(payload.as_bytes()) {
            Ok((request, _, _)) => request,
            Err(reason) => return Ok(Err(reason)),
        };
        let name = request.model_name().to_string();
        if let Err(reason) = ml::check_model_name(&name) {
            return Ok(Err(reason));
        }
        // PostgreSQL's jsonb has no NUL: a column, category or label holding one could be
        // fitted but never stored (its feature schema) or answered (its predictions).
        if request.data.get().contains("\\u0000") {
            return Ok(Err(
                "the data holds a NUL character (\\u0000), which cannot be stored".into(),
            ));
        }
        let data_bytes = request.data.get().len();
        if data_bytes > self.config.max_data_bytes {
            return Ok(Err(format!(
                "the data is {data_bytes} bytes, over ML_MAX_DATA_BYTES ({})",
                self.config.max_data_bytes
            )));
        }
        let stored = self
            .until_written(cx, || sluice_db::ml::model_of_job(&self.pool, envelope.id))
            .await?
            .map_err(|e| HandlerError::transient(ErrorClass::Unavailable, e))?;
        if let Some(stored) = stored {
            return Ok(Ok(stored));
        }
        let fitted = match fit::fit(payload.as_bytes(), &self.config).await {
            Ok(fitted) => fitted,
            Err(FitError::Spawn(e)) => {
                return Err(HandlerError::transient(
                    ErrorClass::Unavailable,
                    format!("cannot start a fit: {e}"),
                ))
            }
            Err(failed) => {
                tracing::info!(job = %envelope.id, model = %name, reason = %failed, "training failed");
                return Ok(Err(failed.to_string()));
            }
        };
        let model = self.new_model(&name, envelope, &fitted);
        let stored = match self
            .until_written(cx, || sluice_db::ml::register(&self.pool, &model))
            .await?
        {
            Ok(stored) => stored,
            Err(refused) => return Ok(Err(format!("the registry refused the model: {refused}"))),
        };
        tracing::info!(model = %stored.name, version = stored.version, algorithm = %stored.algorithm,
            rows = stored.rows, training_ms = stored.training_ms, "model stored");
        Ok(Ok(stored))
    }

    fn new_model<'a>(
        &'a self,
        name: &'a str,
        envelope: &Envelope,
        fitted: &'a Fitted,
    ) -> NewModel<'a> {
        let report = &fitted.report;
        NewModel {
            name,
            job_id: envelope.id,
            algorithm: &report.algorithm,
            task: &report.task,
            features: &report.features,
            params: &report.params,
            metric: serde_json::json!({
                "name": report.metric.name,
                "value": report.metric.value,
                "on": report.metric.on,
            }),
            leaderboard: report.leaderboard.as_ref(),
            rows: i64::try_from(report.rows).unwrap_or(i64::MAX),
            training_ms: i64::try_from(report.fit_ms).unwrap_or(i64::MAX),
            artifact: &fitted.artifact,
            worker: &self.answerer.instance,
        }
    }

    /// Runs a registry query until the database answers: a fit is too dear to throw away
    /// because of an outage, so the job waits here (backing off) rather than in a retry tier.
    /// The inner error is the database refusing the data itself, which no wait mends.
    async fn until_written<T, F, Fut>(
        &self,
        cx: &Cx,
        mut query: F,
    ) -> Result<Result<T, sqlx::Error>, HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut pause = Pause::starting_at(Duration::from_millis(200));
        loop {
            match query().await {
                Ok(value) => return Ok(Ok(value)),
                Err(e) if sluice_db::pool::refuses_data(&e) => return Ok(Err(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "model registry unavailable, retrying");
                    if !pause.wait(cx.shutdown()).await {
                        return Err(HandlerError::Interrupted);
                    }
                }
            }
        }
    }
}

/// The job's answer for a stored version.
fn trained(row: &ModelRow) -> Result<TrainOutput, String> {
    let metric: Metric = serde_json::from_value(row.metric.clone())
        .map_err(|e| format!("stored metric unreadable: {e}"))?;
    Ok(TrainOutput {
        ok: true,
        status: "trained".into(),
        model: row.name.clone(),
        version: row.version,
        algorithm: row.algorithm.clone(),
        task: row.task.clone(),
        rows: u64::try_from(row.rows).unwrap_or(0),
        training_ms: u64::try_from(row.training_ms).unwrap_or(0),
        metric,
        leaderboard: row.leaderboard.clone(),
    })
}

impl Handler for TrainerHandler {
    async fn handle(&self, job: &Job, cx: &Cx) -> Outcome {
        let envelope: Envelope = job.envelope()?;
        if envelope.kind != ml::KIND_TRAIN {
            let shown: String = envelope.kind.chars().take(40).collect();
            return Err(HandlerError::permanent(
                ErrorClass::Schema,
                format!("kind is {shown:?}, not {:?}", ml::KIND_TRAIN),
            ));
        }
        let answer = match self
            .train(&envelope, cx)
            .await?
            .and_then(|row| trained(&row))
        {
            Ok(output) => serde_json::value::to_raw_value(&output),
            Err(reason) => serde_json::value::to_raw_value(&Failed::new(reason)),
        }
        .map_err(|e| HandlerError::permanent(ErrorClass::Serialize, e))?;
        self.answerer
            .publish(job, envelope.id, envelope.created_at, answer)
    }
}
